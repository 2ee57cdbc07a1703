package tang_test

import (
	"bytes"
	"context"
	"crypto/elliptic"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"math/big"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sealproxy/sealproxy/unlock/tang"
)

// fuzzTang is a Tang server over a fresh key directory, with its two
// keys read back from their files (private halves included).
type fuzzTang struct {
	srv          *tang.Server
	sign, derive *tang.JWK
	adv          *tang.Advertisement
	request      []byte // a client's /rec body for derive
	blind        *tang.Blind
	z            []byte // what blind recovers
	answer       []byte // the server's answer to request
	signThp, kid string
}

func newFuzzTang(f *testing.F) *fuzzTang {
	dir := f.TempDir()
	if _, err := tang.Keygen(dir); err != nil {
		f.Fatal(err)
	}
	keys, err := tang.LoadKeys(dir)
	if err != nil {
		f.Fatal(err)
	}
	ft := &fuzzTang{srv: tang.NewServer(keys, nil)}
	files, _ := filepath.Glob(filepath.Join(dir, "*.jwk"))
	for _, p := range files {
		data, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		k, err := tang.ParseJWK(data)
		if err != nil {
			f.Fatal(err)
		}
		if k.IsExchange() {
			ft.derive = k
		} else {
			ft.sign = k
		}
	}
	if ft.sign == nil || ft.derive == nil {
		f.Fatalf("key directory %s: want a signing and an exchange key file", dir)
	}
	ft.signThp, ft.kid = ft.sign.Thumbprint(), ft.derive.Thumbprint()
	raw, err := keys.Advertisement("")
	if err != nil {
		f.Fatal(err)
	}
	if ft.adv, err = tang.ParseAdvertisement(raw); err != nil {
		f.Fatal(err)
	}
	srv, err := ft.adv.FindExchangeKey(ft.kid)
	if err != nil {
		f.Fatal(err)
	}
	epk, z, err := tang.Bind(srv)
	if err != nil {
		f.Fatal(err)
	}
	ft.z = z
	if ft.blind, err = tang.NewBlind(srv, epk); err != nil {
		f.Fatal(err)
	}
	if ft.request, err = json.Marshal(ft.blind.Request()); err != nil {
		f.Fatal(err)
	}
	y, err := keys.Recover(ft.kid, ft.blind.Request())
	if err != nil {
		f.Fatal(err)
	}
	if ft.answer, err = json.Marshal(y); err != nil {
		f.Fatal(err)
	}
	return ft
}

// kidFor maps the placeholders a corpus can hold to this run's keys:
// "" is the exchange key, "=sign" the signing key.
func (ft *fuzzTang) kidFor(kid string) string {
	switch kid {
	case "":
		return ft.kid
	case "=sign":
		return ft.signThp
	}
	return kid
}

// FuzzServerRec posts an arbitrary body to /rec/{kid} of tang.Server.
// Properties: no panic; the status is tangd's for a client error (400,
// 403, 404) or the mux's redirect of an unclean path, never a 5xx; a 200
// carries the exchange key's s·X for the posted X, computed here with
// crypto/elliptic from the key file, as an ECMR JWK on the same curve.
func FuzzServerRec(f *testing.F) {
	ft := newFuzzTang(f)
	f.Add("", ft.request)
	f.Add("=sign", ft.request)
	f.Add("unknown", ft.request)
	f.Add("", bytes.Replace(ft.request, []byte(`"ECMR"`), []byte(`"ES512"`), 1))
	f.Add("", bytes.Replace(ft.request, []byte(`"P-521"`), []byte(`"P-256"`), 1))
	f.Add("", []byte(`{"kty":"EC","crv":"P-521","x":"AA","y":"AA"}`))
	f.Add("", []byte(`{"kty":"EC","crv":"P-521"}`))
	f.Add("", []byte(`{"kty":"EC","crv":"P-521","x":"AA","y":"AA","d":"AA"}`))
	f.Add("", []byte(`{"kty":"oct","k":"AA"}`))
	f.Add("", bytes.Repeat([]byte("x"), 5000))
	f.Add("..%2f", []byte(`{}`))
	f.Fuzz(func(t *testing.T, kid string, body []byte) {
		kid = ft.kidFor(kid)
		r := httptest.NewRequest(http.MethodPost, "/rec/x", bytes.NewReader(body))
		r.URL.Path = "/rec/" + kid
		r.URL.RawPath = "/rec/" + url.PathEscape(kid)
		w := httptest.NewRecorder()
		ft.srv.ServeHTTP(w, r)
		switch w.Code {
		case http.StatusOK:
		case http.StatusBadRequest, http.StatusForbidden, http.StatusNotFound:
			return
		default:
			if !cleanRedirect(r, w) {
				t.Fatalf("POST /rec/%s %q: status %d", kid, body, w.Code)
			}
			return
		}
		if kid != ft.kid {
			t.Fatalf("key %q answered a recovery", kid)
		}
		var x tang.JWK
		if err := json.Unmarshal(body, &x); err != nil {
			t.Fatalf("answered a body that is not JSON: %q", body)
		}
		y, err := tang.ParseJWK(w.Body.Bytes())
		if err != nil {
			t.Fatalf("answer %s: %v", w.Body.Bytes(), err)
		}
		if y.Crv != ft.derive.Crv || y.Alg != tang.AlgExchange || y.D != "" {
			t.Fatalf("answer %+v", y)
		}
		wx, wy := scalarMult(t, ft.derive, &x)
		if y.X != wx || y.Y != wy {
			t.Fatalf("answer (%s, %s), want (%s, %s)", y.X, y.Y, wx, wy)
		}
	})
}

// scalarMult is s·X with crypto/elliptic, as base64url coordinates.
func scalarMult(t *testing.T, key, x *tang.JWK) (string, string) {
	t.Helper()
	var c elliptic.Curve
	switch key.Crv {
	case "P-256":
		c = elliptic.P256()
	case "P-384":
		c = elliptic.P384()
	case "P-521":
		c = elliptic.P521()
	default:
		t.Fatalf("curve %q", key.Crv)
	}
	num := func(s string) *big.Int {
		b, err := base64.RawURLEncoding.DecodeString(s)
		if err != nil {
			t.Fatalf("coordinate %q: %v", s, err)
		}
		return new(big.Int).SetBytes(b)
	}
	d, err := base64.RawURLEncoding.DecodeString(key.D)
	if err != nil {
		t.Fatal(err)
	}
	px, py := num(x.X), num(x.Y)
	// crypto/elliptic on purpose: an implementation independent of the server's nistec.
	//lint:ignore SA1019 independent check
	if !c.IsOnCurve(px, py) {
		t.Fatalf("the server answered for a point off the curve: %+v", x)
	}
	rx, ry := c.ScalarMult(px, py, d) //lint:ignore SA1019 independent check
	size := (c.Params().BitSize + 7) / 8
	enc := func(n *big.Int) string { return base64.RawURLEncoding.EncodeToString(n.FillBytes(make([]byte, size))) }
	return enc(rx), enc(ry)
}

// cleanRedirect reports the redirect http.ServeMux answers for a path
// that is not clean ("/rec/.", "/adv//x"): to the cleaned path.
func cleanRedirect(r *http.Request, w *httptest.ResponseRecorder) bool {
	if w.Code != http.StatusMovedPermanently && w.Code != http.StatusTemporaryRedirect && w.Code != http.StatusPermanentRedirect {
		return false
	}
	p := r.URL.Path
	return path.Clean(p) != p && w.Header().Get("Location") != ""
}

// FuzzServerAdv asks GET /adv/{thp} for arbitrary thumbprints.
// Properties: no panic; 200, 404 or the mux's redirect of an unclean
// path only; a 200 is an advertisement
// signed by a key with that thumbprint (any thp, or none, for /adv).
func FuzzServerAdv(f *testing.F) {
	ft := newFuzzTang(f)
	for _, thp := range []string{"", "=sign", ft.kid, "x", strings.Repeat("A", 43), "../adv", "%00"} {
		f.Add(thp)
	}
	f.Fuzz(func(t *testing.T, thp string) {
		if thp == "=sign" {
			thp = ft.signThp
		}
		r := httptest.NewRequest(http.MethodGet, "/adv", nil)
		if thp != "" {
			r.URL.Path = "/adv/" + thp
			r.URL.RawPath = "/adv/" + url.PathEscape(thp)
		}
		w := httptest.NewRecorder()
		ft.srv.ServeHTTP(w, r)
		switch w.Code {
		case http.StatusOK:
		case http.StatusNotFound:
			return
		default:
			if !cleanRedirect(r, w) {
				t.Fatalf("GET /adv/%s: status %d", thp, w.Code)
			}
			return
		}
		adv, err := tang.ParseAdvertisement(w.Body.Bytes())
		if err != nil {
			t.Fatalf("GET /adv/%s: %v", thp, err)
		}
		if thp != "" && !strings.Contains(thp, "/") {
			if err := adv.Trust(thp); err != nil {
				t.Fatalf("GET /adv/%s answered an advertisement it does not sign: %v", thp, err)
			}
		}
	})
}

// FuzzClientRecover answers a client's POST /rec with an arbitrary status,
// Content-Type and body (then, if it asks again, fails). Properties: no
// panic; success only on 200, with z of the curve's size, and the right
// z whenever the answer is the server's true one; every failure is an
// *tang.Error that names the server and unwraps to a sentinel.
func FuzzClientRecover(f *testing.F) {
	ft := newFuzzTang(f)
	f.Add(200, "application/jwk+json", ft.answer)
	f.Add(200, "application/jwk+json", bytes.Replace(ft.answer, []byte(`"x":"A`), []byte(`"x":"B`), 1))
	f.Add(200, "", []byte(`{"kty":"EC","crv":"P-256","x":"AA","y":"AA"}`))
	f.Add(200, "", []byte(`{"kty":"EC","crv":"P-521"}`))
	f.Add(200, "", []byte(`null`))
	f.Add(202, "application/json", []byte(`{"status":"pending","code":"ABCD-EFGH","keys":2,"arrived":1}`))
	f.Add(202, "application/json", []byte(`{"status":"approved"}`))
	f.Add(403, "application/json", []byte(`{"status":"denied","operator":"alice","code":"ABCD-EFGH","time":"2026-01-01T00:00:00Z"}`))
	f.Add(403, "", []byte(``))
	f.Add(404, "", []byte(``))
	f.Add(400, "", []byte(``))
	f.Add(500, "", []byte(`oops`))
	f.Add(301, "", []byte(``))
	f.Add(200, "", bytes.Repeat([]byte(" "), 70000))
	f.Fuzz(func(t *testing.T, status int, ctype string, body []byte) {
		if status < 100 || status > 999 {
			return // net/http rejects such status lines before a client sees them
		}
		rt := &onceTransport{status: status, ctype: ctype, body: body}
		c := &tang.Client{HTTP: &http.Client{Transport: rt}, Timeout: 5 * time.Second}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		z, err := c.Recover(ctx, "http://tang.test", ft.kid, ft.blind)
		if err != nil {
			if status == http.StatusOK && bytes.Equal(body, ft.answer) {
				t.Fatalf("the true answer failed: %v", err)
			}
			var te *tang.Error
			if !errors.As(err, &te) || te.URL != "http://tang.test" {
				t.Fatalf("error %v is not a *tang.Error naming the server", err)
			}
			if errors.Unwrap(te) == nil {
				t.Fatalf("error %v unwraps to nothing", err)
			}
			return
		}
		if status != http.StatusOK || rt.calls != 1 {
			t.Fatalf("recovered from status %d after %d calls", status, rt.calls)
		}
		if len(z) != len(ft.z) {
			t.Fatalf("z of %d bytes, want %d", len(z), len(ft.z))
		}
		if bytes.Equal(body, ft.answer) && !bytes.Equal(z, ft.z) {
			t.Fatalf("the true answer recovered z %x, want %x", z, ft.z)
		}
	})
}

// onceTransport answers the first request and fails the next ones.
type onceTransport struct {
	status int
	ctype  string
	body   []byte
	calls  int
}

func (o *onceTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	o.calls++
	if r.Body != nil {
		r.Body.Close()
	}
	if o.calls > 1 {
		return nil, errors.New("no second answer")
	}
	h := http.Header{}
	if o.ctype != "" {
		h.Set("Content-Type", o.ctype)
	}
	return &http.Response{
		StatusCode: o.status, Header: h, Body: io.NopCloser(bytes.NewReader(o.body)),
		ContentLength: int64(len(o.body)), Request: r, ProtoMajor: 1, ProtoMinor: 1,
	}, nil
}
