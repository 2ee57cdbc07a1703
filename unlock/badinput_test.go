package unlock_test

import (
	"bytes"
	"context"
	"crypto/ecdh"
	"crypto/rand"
	"crypto/sha1"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sealproxy/sealproxy/testenv"
	"github.com/sealproxy/sealproxy/unlock"
	"github.com/sealproxy/sealproxy/unlock/sss"
	"github.com/sealproxy/sealproxy/unlock/tang"
)

// Tests of every bad input the issue lists: each checks the specific error
// (errors.Is/As, and the text where the issue asks for it) and that a
// failed Decrypt hands back no plaintext.

var b64u = base64.RawURLEncoding

func badCtx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return c
}

func badSeal(t *testing.T, pin, cfg string, secret []byte, opts *unlock.Options) []byte {
	t.Helper()
	jwe, err := unlock.Encrypt(badCtx(t), pin, []byte(cfg), secret, opts)
	if err != nil {
		t.Fatalf("Encrypt %s: %v", pin, err)
	}
	return jwe
}

// badDecrypt decrypts input that must fail: it returns the error after
// checking that no plaintext came with it.
func badDecrypt(t *testing.T, jwe []byte, opts *unlock.Options) error {
	t.Helper()
	buf, err := unlock.Decrypt(badCtx(t), jwe, opts)
	if err == nil {
		defer buf.Destroy()
		t.Fatalf("Decrypt succeeded (%d bytes of plaintext), want an error", buf.Size())
	}
	if buf != nil {
		t.Fatalf("Decrypt returned a buffer along with the error %v", err)
	}
	return err
}

func badOpen(t *testing.T, jwe, want []byte, opts *unlock.Options) {
	t.Helper()
	buf, err := unlock.Decrypt(badCtx(t), jwe, opts)
	if err != nil {
		t.Fatalf("Decrypt: %v", err)
	}
	defer buf.Destroy()
	if !bytes.Equal(buf.Bytes(), want) {
		t.Fatalf("Decrypt = %q, want %q", buf.Bytes(), want)
	}
}

// badParts splits a compact JWE.
func badParts(jwe []byte) []string { return strings.Split(string(jwe), ".") }

// badFlip flips one bit of the i-th byte that part p of the JWE encodes.
func badFlip(t *testing.T, jwe []byte, p, i int) []byte {
	t.Helper()
	parts := badParts(jwe)
	b, err := b64u.DecodeString(parts[p])
	if err != nil {
		t.Fatal(err)
	}
	b[(i+len(b))%len(b)] ^= 0x01
	parts[p] = b64u.EncodeToString(b)
	return []byte(strings.Join(parts, "."))
}

// badHeader replaces the protected header of a JWE with f(header).
func badHeader(t *testing.T, jwe []byte, f func(h string) string) []byte {
	t.Helper()
	parts := badParts(jwe)
	raw, err := b64u.DecodeString(parts[0])
	if err != nil {
		t.Fatal(err)
	}
	changed := f(string(raw))
	if changed == string(raw) {
		t.Fatal("the header edit changed nothing")
	}
	parts[0] = b64u.EncodeToString([]byte(changed))
	return []byte(strings.Join(parts, "."))
}

// badReorder re-encodes a JSON object with its members sorted, which
// changes the order Clevis wrote them in but nothing else.
func badReorder(t *testing.T, h string) string {
	var m map[string]json.RawMessage
	if err := json.Unmarshal([]byte(h), &m); err != nil {
		t.Fatal(err)
	}
	out, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return string(out)
}

func TestDecryptBadInput(t *testing.T) {
	srv := testenv.EmbeddedTang(t)
	other := testenv.EmbeddedTang(t)
	secret := []byte("the private key that must not come out")
	jwe := badSeal(t, "tang", srv.Config(), secret, nil)
	badOpen(t, jwe, secret, nil) // the untampered JWE opens
	parts := badParts(jwe)
	otherEPK := func() string {
		raw, _ := b64u.DecodeString(badParts(badSeal(t, "tang", srv.Config(), secret, nil))[0])
		var h struct{ Epk json.RawMessage }
		json.Unmarshal(raw, &h)
		return string(h.Epk)
	}()
	tpm2 := b64u.EncodeToString([]byte(`{"alg":"dir","enc":"A256GCM","clevis":{"pin":"tpm2","tpm2":{"hash":"sha256","key":"ecc","pcr_ids":"7"}}}`))

	tests := []struct {
		name string
		in   []byte
		want []error // the error wraps every one of these
		msg  string  // and its text contains this
	}{
		{"ciphertext first byte", badFlip(t, jwe, 3, 0), []error{unlock.ErrTampered}, ""},
		{"ciphertext middle byte", badFlip(t, jwe, 3, len(secret)/2), []error{unlock.ErrTampered}, ""},
		{"ciphertext last byte", badFlip(t, jwe, 3, -1), []error{unlock.ErrTampered}, ""},
		{"tag first byte", badFlip(t, jwe, 4, 0), []error{unlock.ErrTampered}, ""},
		{"tag last byte", badFlip(t, jwe, 4, -1), []error{unlock.ErrTampered}, ""},
		{"IV", badFlip(t, jwe, 2, 5), []error{unlock.ErrTampered}, ""},
		{"ciphertext extended", []byte(strings.Join([]string{parts[0], "", parts[2], parts[3] + "AAAA", parts[4]}, ".")), []error{unlock.ErrTampered}, ""},
		{"ciphertext emptied", []byte(strings.Join([]string{parts[0], "", parts[2], "", parts[4]}, ".")), []error{unlock.ErrTampered}, ""},
		{"tag of another JWE", []byte(strings.Join([]string{parts[0], "", parts[2], parts[3], badParts(badSeal(t, "tang", srv.Config(), secret, nil))[4]}, ".")), []error{unlock.ErrTampered}, ""},

		// Header changes that still recover a key: authentication fails.
		{"header url with a trailing slash", badHeader(t, jwe, func(h string) string {
			return strings.Replace(h, `"url":"`+srv.URL+`"`, `"url":"`+srv.URL+`/"`, 1)
		}), []error{unlock.ErrTampered}, ""},
		{"header members reordered", badHeader(t, jwe, func(h string) string { return badReorder(t, h) }), []error{unlock.ErrTampered}, ""},
		{"header with white space", badHeader(t, jwe, func(h string) string { return " " + h }), []error{unlock.ErrTampered}, ""},
		{"header epk of another binding", badHeader(t, jwe, func(h string) string {
			var m map[string]json.RawMessage
			json.Unmarshal([]byte(h), &m)
			return strings.Replace(h, string(m["epk"]), otherEPK, 1)
		}), []error{unlock.ErrTampered}, ""},
		// A header sending us to another Tang server: it lacks the key.
		{"header url of another server", badHeader(t, jwe, func(h string) string {
			return strings.Replace(h, srv.URL, other.URL, 1)
		}), []error{tang.ErrUnknownKey}, other.URL},
		// Header changes that make it unusable.
		{"header not JSON", badHeader(t, jwe, func(h string) string { return h[:len(h)/2] }), []error{unlock.ErrMalformed}, "not JSON"},
		{"header not base64url", []byte("!!" + string(jwe[2:])), []error{unlock.ErrMalformed}, "base64url"},
		{"header epk off the curve", badHeader(t, jwe, func(h string) string {
			var hh struct{ Epk tang.JWK }
			json.Unmarshal([]byte(h), &hh)
			y, _ := b64u.DecodeString(hh.Epk.Y)
			y[10] ^= 1
			return strings.Replace(h, hh.Epk.Y, b64u.EncodeToString(y), 1)
		}), []error{unlock.ErrMalformed, tang.ErrNotOnCurve}, ""},
		{"header kid of no key in adv", badHeader(t, jwe, func(h string) string {
			var hh struct{ Kid string }
			json.Unmarshal([]byte(h), &hh)
			return strings.Replace(h, `"kid":"`+hh.Kid, `"kid":"`+srv.Thp, 1)
		}), []error{unlock.ErrMalformed, tang.ErrNoExchangeKey}, ""},
		{"header alg dir on a tang pin", badHeader(t, jwe, func(h string) string {
			return strings.Replace(h, `"alg":"ECDH-ES"`, `"alg":"dir"`, 1)
		}), []error{unlock.ErrMalformed}, "ECDH-ES"},
		{"header without adv", badHeader(t, jwe, func(h string) string {
			i := strings.Index(h, `,"adv":`)
			return h[:i] + "}}}"
		}), []error{unlock.ErrMalformed}, "adv"},
		{"header url not http", badHeader(t, jwe, func(h string) string {
			return strings.Replace(h, `"url":"http://`, `"url":"ftp://`, 1)
		}), []error{unlock.ErrMalformed}, "http://host:port"},
		{"header url with credentials", badHeader(t, jwe, func(h string) string {
			return strings.Replace(h, `"url":"http://`, `"url":"http://u:s3cr3t@`, 1)
		}), []error{unlock.ErrMalformed}, "credentials"},
		{"header enc A128GCM", badHeader(t, jwe, func(h string) string {
			return strings.Replace(h, `"enc":"A256GCM"`, `"enc":"A128GCM"`, 1)
		}), []error{unlock.ErrMalformed}, "A128GCM"},

		{"unknown pin tpm2", []byte(tpm2 + ".." + parts[2] + "." + parts[3] + "." + parts[4]), []error{unlock.ErrUnknownPin}, `"tpm2"`},
		{"JSON serialization", []byte(`{"protected":"` + parts[0] + `","iv":"` + parts[2] + `","ciphertext":"` + parts[3] + `","tag":"` + parts[4] + `"}`), []error{unlock.ErrJSONSerialization}, "compact"},
		{"JSON serialization after white space", []byte("\n  {\"protected\":\"" + parts[0] + "\"}"), []error{unlock.ErrJSONSerialization}, ""},
		{"empty", nil, []error{unlock.ErrMalformed}, "empty"},
		{"white space only", []byte(" \n\t\n"), []error{unlock.ErrMalformed}, "empty"},
		{"oversized", append(bytes.Repeat([]byte("A"), unlock.MaxJWE), jwe...), []error{unlock.ErrMalformed}, "larger than"},
		{"not a JWE", []byte("-----BEGIN EC PRIVATE KEY-----"), []error{unlock.ErrMalformed}, "parts"},
	}
	// Truncation at several points: inside the header, after it, in the
	// IV, at the end of the ciphertext, inside the tag, one byte short.
	n0 := len(parts[0])
	for _, cut := range []int{1, n0 / 2, n0, n0 + 1, n0 + 2, n0 + 10, n0 + 2 + len(parts[2]) + 1, len(jwe) - len(parts[4]) - 1, len(jwe) - len(parts[4]), len(jwe) - 5, len(jwe) - 1} {
		tests = append(tests, struct {
			name string
			in   []byte
			want []error
			msg  string
		}{fmt.Sprintf("truncated to %d of %d bytes", cut, len(jwe)), jwe[:cut], []error{unlock.ErrMalformed}, ""})
	}

	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := badDecrypt(t, tc.in, nil)
			for _, want := range tc.want {
				if !errors.Is(err, want) {
					t.Fatalf("Decrypt = %v, want it to wrap %v", err, want)
				}
			}
			if !strings.Contains(err.Error(), tc.msg) || strings.Contains(err.Error(), "s3cr3t") {
				t.Fatalf("Decrypt = %v, want it to mention %q (and no password)", err, tc.msg)
			}
			if errors.Is(err, unlock.ErrTampered) && err.Error() != unlock.ErrTampered.Error() {
				t.Fatalf("Decrypt = %v: an authentication failure should say only that", err)
			}
		})
	}
	// Inspect, which reads the same parser, agrees on the parse errors.
	for _, in := range [][]byte{nil, jwe[:n0], []byte(`{"protected":""}`)} {
		if _, err := unlock.Inspect(in); !errors.Is(err, unlock.ErrMalformed) && !errors.Is(err, unlock.ErrJSONSerialization) {
			t.Errorf("Inspect(%.20q) = %v", in, err)
		}
	}
}

func TestEncryptBadConfig(t *testing.T) {
	srv := testenv.EmbeddedTang(t)
	for _, tc := range []struct {
		pin, cfg string
		want     error
		msg      string
	}{
		{"tpm2", `{}`, unlock.ErrUnknownPin, "tpm2"},
		{"", `{}`, unlock.ErrUnknownPin, ""},
		{"tang", `not json`, unlock.ErrBadConfig, ""},
		{"tang", `{"thp":"` + srv.Thp + `"}`, unlock.ErrBadConfig, "url"},
		{"tang", `{"url":"ftp://127.0.0.1:1"}`, unlock.ErrBadConfig, "http://host:port"},
		{"tang", `{"url":"http://admin:s3cr3t@127.0.0.1:1"}`, unlock.ErrBadConfig, "admin:xxxxx@"},
		{"tang", `{"url":"` + srv.URL + `","thp":"` + srv.Thp + `","extra":1}`, unlock.ErrBadConfig, "extra"},
		{"tang", srv.Config() + ` {}`, unlock.ErrBadConfig, "trailing"},
		{"tang", `{"url":"` + srv.URL + `","adv":"/nonexistent/adv.jws"}`, unlock.ErrBadConfig, "adv"},
		{"sss", `{"t":4,"pins":{"tang":[` + srv.Config() + `,` + srv.Config() + `,` + srv.Config() + `]}}`, unlock.ErrBadConfig, "t is 4"},
		{"sss", `{"t":0,"pins":{"tang":[` + srv.Config() + `]}}`, unlock.ErrBadConfig, "t is 0"},
		{"sss", `{"t":-1,"pins":{"tang":[` + srv.Config() + `]}}`, unlock.ErrBadConfig, "t is -1"},
		{"sss", `{"t":1,"pins":{}}`, unlock.ErrBadConfig, "no pins"},
		{"sss", `{"t":1}`, unlock.ErrBadConfig, "no pins"},
		{"sss", `{"t":1,"pins":{"tang":[]}}`, unlock.ErrBadConfig, "no pins"},
		{"sss", `{"t":1,"pins":{"tang":[` + srv.Config() + `]},"x":1}`, unlock.ErrBadConfig, ""},
		{"sss", `{"t":1,"pins":{"tang":[{"url":"ftp://x"}]}}`, unlock.ErrBadConfig, "share 1 (tang)"},
		{"sss", `{"t":1,"pins":{"tpm2":{}}}`, unlock.ErrUnknownPin, "share 1 (tpm2)"},
		{"sss", `{"t":1,"pins":{"sss":{"t":2,"pins":{"tang":[` + srv.Config() + `]}}}}`, unlock.ErrBadConfig, "t is 2"},
	} {
		out, err := unlock.Encrypt(badCtx(t), tc.pin, []byte(tc.cfg), []byte("secret"), nil)
		if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.msg) || strings.Contains(err.Error(), "s3cr3t") || out != nil {
			t.Errorf("Encrypt %s %s = %v; want %v mentioning %q", tc.pin, tc.cfg, err, tc.want, tc.msg)
		}
	}
}

// advOf returns the advertisement the server of dir serves.
func advOf(t *testing.T, dir string) []byte {
	t.Helper()
	ks, err := tang.LoadKeys(dir)
	if err != nil {
		t.Fatal(err)
	}
	adv, err := ks.Advertisement("")
	if err != nil {
		t.Fatal(err)
	}
	return adv
}

// serveAdv serves adv at /adv and /adv/{anything}, as an impostor would,
// on 127.0.0.1.
func serveAdv(t *testing.T, adv []byte) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/jose+json")
		w.Write(adv)
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}

func tamperSignature(t *testing.T, adv []byte) []byte {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(adv, &m); err != nil {
		t.Fatal(err)
	}
	sig, _ := b64u.DecodeString(m["signature"].(string))
	sig[3] ^= 1
	m["signature"] = b64u.EncodeToString(sig)
	out, _ := json.Marshal(m)
	return out
}

func TestEncryptTrust(t *testing.T) {
	srv := testenv.EmbeddedTang(t)
	other := testenv.EmbeddedTang(t)
	secret := []byte("trust test secret")

	t.Run("thp of another server", func(t *testing.T) {
		cfg := fmt.Sprintf(`{"url":%q,"thp":%q}`, srv.URL, other.Thp)
		_, err := unlock.Encrypt(badCtx(t), "tang", []byte(cfg), secret, nil)
		var te *tang.Error
		if !errors.Is(err, tang.ErrUntrusted) || !errors.As(err, &te) || te.URL != srv.URL {
			t.Fatalf("Encrypt = %v, want ErrUntrusted from %s", err, srv.URL)
		}
		if !strings.Contains(err.Error(), other.Thp) {
			t.Fatalf("Encrypt = %v, want it to name the pinned thumbprint", err)
		}
	})
	t.Run("impostor serving its own advertisement", func(t *testing.T) {
		url := serveAdv(t, advOf(t, other.Dir))
		cfg := fmt.Sprintf(`{"url":%q,"thp":%q}`, url, srv.Thp)
		_, err := unlock.Encrypt(badCtx(t), "tang", []byte(cfg), secret, nil)
		if !errors.Is(err, tang.ErrUntrusted) {
			t.Fatalf("Encrypt = %v, want ErrUntrusted", err)
		}
		for _, s := range []string{url, srv.Thp, other.Thp} {
			if !strings.Contains(err.Error(), s) {
				t.Fatalf("Encrypt = %v; want it to name %s (the URL, the pinned and the advertised thumbprints)", err, s)
			}
		}
	})
	t.Run("no thp", func(t *testing.T) {
		_, err := unlock.Encrypt(badCtx(t), "tang", []byte(`{"url":"`+srv.URL+`"}`), secret, nil)
		var ue *unlock.UntrustedError
		if !errors.As(err, &ue) || !errors.Is(err, unlock.ErrNoThumbprint) {
			t.Fatalf("Encrypt = %v, want an *UntrustedError", err)
		}
		if ue.URL != srv.URL || len(ue.Thumbprints) != 1 || ue.Thumbprints[0] != srv.Thp {
			t.Fatalf("UntrustedError %+v, want %s and [%s]", ue, srv.URL, srv.Thp)
		}
		if !strings.Contains(err.Error(), srv.Thp) || !strings.Contains(err.Error(), srv.URL) {
			t.Fatalf("Encrypt = %v, want it to list %s", err, srv.Thp)
		}
	})
	t.Run("trust on first use", func(t *testing.T) {
		jwe := badSeal(t, "tang", `{"url":"`+srv.URL+`"}`, secret, &unlock.Options{TrustOnFirstUse: true})
		badOpen(t, jwe, secret, nil)
	})
	t.Run("SHA-1 thp", func(t *testing.T) {
		adv, err := tang.ParseAdvertisement(advOf(t, srv.Dir))
		if err != nil {
			t.Fatal(err)
		}
		var sha1Thp string
		for _, k := range adv.Keys {
			if k.IsSigning() {
				sha1Thp = sha1Thumbprint(k)
			}
		}
		jwe := badSeal(t, "tang", fmt.Sprintf(`{"url":%q,"thp":%q}`, srv.URL, sha1Thp), secret, nil)
		badOpen(t, jwe, secret, nil)
	})
	t.Run("bad signature", func(t *testing.T) {
		url := serveAdv(t, tamperSignature(t, advOf(t, srv.Dir)))
		for _, tc := range []struct {
			cfg  string
			opts *unlock.Options
		}{
			{fmt.Sprintf(`{"url":%q,"thp":%q}`, url, srv.Thp), nil},
			{fmt.Sprintf(`{"url":%q}`, url), &unlock.Options{TrustOnFirstUse: true}},
		} {
			_, err := unlock.Encrypt(badCtx(t), "tang", []byte(tc.cfg), secret, tc.opts)
			if !errors.Is(err, tang.ErrBadSignature) || !strings.Contains(err.Error(), url) {
				t.Fatalf("Encrypt %s = %v, want ErrBadSignature naming %s", tc.cfg, err, url)
			}
		}
	})
	t.Run("adv supplied in the config", func(t *testing.T) {
		adv := advOf(t, srv.Dir)
		file := filepath.Join(t.TempDir(), "adv.jws")
		if err := os.WriteFile(file, adv, 0o600); err != nil {
			t.Fatal(err)
		}
		// With the server down: a supplied advertisement needs no fetch.
		srv.Stop()
		fileName, _ := json.Marshal(file)
		var sealed [][]byte
		for _, cfg := range []string{
			fmt.Sprintf(`{"url":%q,"adv":%s}`, srv.URL, fileName),
			fmt.Sprintf(`{"url":%q,"adv":%s}`, srv.URL, adv),
			fmt.Sprintf(`{"url":%q,"adv":%s,"thp":%q}`, srv.URL, adv, srv.Thp),
		} {
			sealed = append(sealed, badSeal(t, "tang", cfg, secret, nil))
		}
		for _, tc := range []struct {
			cfg  string
			want error
		}{
			{fmt.Sprintf(`{"url":%q,"adv":%s,"thp":%q}`, srv.URL, adv, other.Thp), tang.ErrUntrusted},
			{fmt.Sprintf(`{"url":%q,"adv":%s}`, srv.URL, tamperSignature(t, adv)), tang.ErrBadSignature},
			{fmt.Sprintf(`{"url":%q,"adv":{"payload":"e30"}}`, srv.URL), tang.ErrBadAdvertisement},
		} {
			if _, err := unlock.Encrypt(badCtx(t), "tang", []byte(tc.cfg), secret, nil); !errors.Is(err, tc.want) {
				t.Errorf("Encrypt with a supplied adv = %v, want %v", err, tc.want)
			}
		}
		srv.Start()
		for _, jwe := range sealed {
			badOpen(t, jwe, secret, nil)
		}
	})
}

// sha1Thumbprint is the RFC 7638 thumbprint with SHA-1 (27 characters),
// which old clevis bindings carry.
func sha1Thumbprint(k *tang.JWK) string {
	h := sha1.New()
	fmt.Fprintf(h, `{"crv":%q,"kty":"EC","x":%q,"y":%q}`, k.Crv, k.X, k.Y)
	return b64u.EncodeToString(h.Sum(nil))
}

func TestDecryptTangDown(t *testing.T) {
	srv := testenv.EmbeddedTang(t)
	secret := []byte("tang down")
	jwe := badSeal(t, "tang", srv.Config(), secret, nil)
	srv.Stop()
	err := badDecrypt(t, jwe, nil)
	var te *tang.Error
	if !errors.Is(err, tang.ErrUnreachable) || !errors.As(err, &te) || te.URL != srv.URL || !strings.Contains(err.Error(), srv.URL) {
		t.Fatalf("Decrypt = %v, want ErrUnreachable naming %s", err, srv.URL)
	}
	_, err = unlock.Encrypt(badCtx(t), "tang", []byte(srv.Config()), secret, nil)
	if !errors.Is(err, tang.ErrUnreachable) || !strings.Contains(err.Error(), srv.URL) {
		t.Fatalf("Encrypt = %v, want ErrUnreachable naming %s", err, srv.URL)
	}
	srv.Start()
	badOpen(t, jwe, secret, nil)
}

// fakeTang is a Tang server whose /rec answers a test can replace; the
// advertisement and, by default, recoveries are served by a real server.
type fakeTang struct {
	URL string
	Thp string
	rec atomic.Value // func(w, r, real http.Handler)
}

func newFakeTang(t *testing.T) *fakeTang {
	t.Helper()
	dir := t.TempDir()
	thp, err := tang.Keygen(dir)
	if err != nil {
		t.Fatal(err)
	}
	ks, err := tang.LoadKeys(dir)
	if err != nil {
		t.Fatal(err)
	}
	real := tang.NewServer(ks, nil)
	f := &fakeTang{Thp: thp}
	f.rec.Store(func(w http.ResponseWriter, r *http.Request) { real.ServeHTTP(w, r) })
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost {
			f.rec.Load().(func(http.ResponseWriter, *http.Request))(w, r)
			return
		}
		real.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	f.URL = srv.URL
	return f
}

func (f *fakeTang) config() string { return fmt.Sprintf(`{"url":%q,"thp":%q}`, f.URL, f.Thp) }

func (f *fakeTang) answer(status int, body string) {
	f.rec.Store(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/jwk+json")
		w.WriteHeader(status)
		io.WriteString(w, body)
	})
}

func TestDecryptTangSlow(t *testing.T) {
	f := newFakeTang(t)
	secret := []byte("tang slow")
	jwe := badSeal(t, "tang", f.config(), secret, nil)

	arrived := make(chan struct{}, 8)
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	hold := func(w http.ResponseWriter, r *http.Request) {
		// Reading the body lets the server notice the client hanging up.
		io.Copy(io.Discard, r.Body)
		arrived <- struct{}{}
		select {
		case <-r.Context().Done():
		case <-release:
		}
	}
	f.rec.Store(hold)
	check := func(t *testing.T, err error) {
		t.Helper()
		var te *tang.Error
		if !errors.Is(err, tang.ErrUnreachable) || !errors.As(err, &te) || te.URL != f.URL || !strings.Contains(err.Error(), f.URL) {
			t.Fatalf("Decrypt = %v, want ErrUnreachable naming %s", err, f.URL)
		}
		<-arrived // the request did reach the server, which held it
	}
	t.Run("client timeout", func(t *testing.T) {
		check(t, badDecrypt(t, jwe, &unlock.Options{Tang: &tang.Client{Timeout: 200 * time.Millisecond}}))
	})
	t.Run("context deadline", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(badCtx(t), 200*time.Millisecond)
		defer cancel()
		buf, err := unlock.Decrypt(ctx, jwe, nil)
		if buf != nil {
			t.Fatal("plaintext returned")
		}
		check(t, err)
	})
	t.Run("sss with a slow child", func(t *testing.T) {
		good := testenv.EmbeddedTang(t)
		cfg := fmt.Sprintf(`{"t":2,"pins":{"tang":[%s,%s]}}`, good.Config(), f.config())
		sssJWE := badSeal(t, "sss", cfg, secret, nil)
		err := badDecrypt(t, sssJWE, &unlock.Options{Tang: &tang.Client{Timeout: 200 * time.Millisecond}})
		if !errors.Is(err, unlock.ErrNotEnoughShares) {
			t.Fatalf("Decrypt = %v, want ErrNotEnoughShares", err)
		}
		check(t, err)
	})
}

// p256Point is a valid point of the wrong curve.
func p256Point(t *testing.T) string {
	k, err := ecdh.P256().GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	pt := k.PublicKey().Bytes()
	return fmt.Sprintf(`{"alg":"ECMR","crv":"P-256","kty":"EC","x":%q,"y":%q}`, b64u.EncodeToString(pt[1:33]), b64u.EncodeToString(pt[33:]))
}

// p521Point returns a valid P-521 point as a JWK, and one off the curve.
func p521Point(t *testing.T) (on, off string) {
	k, err := ecdh.P521().GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	pt := k.PublicKey().Bytes()
	x, y := pt[1:67], bytes.Clone(pt[67:])
	on = fmt.Sprintf(`{"alg":"ECMR","crv":"P-521","kty":"EC","x":%q,"y":%q}`, b64u.EncodeToString(x), b64u.EncodeToString(y))
	y[30] ^= 4
	off = fmt.Sprintf(`{"alg":"ECMR","crv":"P-521","kty":"EC","x":%q,"y":%q}`, b64u.EncodeToString(x), b64u.EncodeToString(y))
	return on, off
}

func TestDecryptTangGarbage(t *testing.T) {
	f := newFakeTang(t)
	secret := []byte("tang garbage")
	jwe := badSeal(t, "tang", f.config(), secret, nil)
	var h struct{ Kid string }
	raw, _ := b64u.DecodeString(badParts(jwe)[0])
	json.Unmarshal(raw, &h)
	validPoint, offPoint := p521Point(t)

	tests := []struct {
		name   string
		status int
		body   string
		want   []error
		msg    string
	}{
		{"not JSON", 200, "<html>Tang</html>", []error{tang.ErrBadResponse}, "not a JWK"},
		{"wrong curve", 200, p256Point(t), []error{tang.ErrBadResponse, tang.ErrBadExchange}, ""},
		{"off-curve point", 200, offPoint, []error{tang.ErrBadResponse, tang.ErrNotOnCurve}, ""},
		{"coordinates missing", 200, `{"kty":"EC","crv":"P-521"}`, []error{tang.ErrBadResponse}, ""},
		{"a valid point that is not s·X", 200, validPoint, []error{unlock.ErrTampered}, ""},
		{"404", 404, "", []error{tang.ErrUnknownKey}, "no longer has key " + h.Kid},
		{"403", 403, "", []error{tang.ErrWrongKeyUse}, "403"},
		{"400", 400, "", []error{tang.ErrRejected}, "400"},
		{"500", 500, "", []error{tang.ErrUnreachable}, "500"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f.answer(tc.status, tc.body)
			err := badDecrypt(t, jwe, nil)
			for _, want := range tc.want {
				if !errors.Is(err, want) {
					t.Fatalf("Decrypt = %v, want it to wrap %v", err, want)
				}
			}
			if !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("Decrypt = %v, want it to mention %q", err, tc.msg)
			}
			var te *tang.Error
			if !errors.Is(err, unlock.ErrTampered) && (!errors.As(err, &te) || te.URL != f.URL) {
				t.Fatalf("Decrypt = %v, want a *tang.Error naming %s", err, f.URL)
			}
		})
	}
}

func TestSSSNotEnoughShares(t *testing.T) {
	a, b, c := testenv.EmbeddedTang(t), testenv.EmbeddedTang(t), testenv.EmbeddedTang(t)
	secret := []byte("two of three")
	jwe := badSeal(t, "sss", fmt.Sprintf(`{"t":2,"pins":{"tang":[%s,%s,%s]}}`, a.Config(), b.Config(), c.Config()), secret, nil)
	b.Stop()
	c.Stop()
	err := badDecrypt(t, jwe, nil)
	var se *unlock.ShareError
	if !errors.Is(err, unlock.ErrNotEnoughShares) || !errors.As(err, &se) {
		t.Fatalf("Decrypt = %v, want a *ShareError", err)
	}
	if se.Needed != 2 || se.Total != 3 || se.Recovered != 1 || len(se.Failures) != 2 {
		t.Fatalf("ShareError %+v, want 2 needed of 3, 1 recovered, 2 failures", se)
	}
	if !errors.Is(err, tang.ErrUnreachable) {
		t.Fatalf("Decrypt = %v, want it to wrap tang.ErrUnreachable", err)
	}
	msg := err.Error()
	want := "sss: 2 of 3 shares needed, 1 recovered; share 2: tang " + b.URL + ": "
	if !strings.HasPrefix(msg, want) || !strings.Contains(msg, "; share 3: tang "+c.URL+": ") {
		t.Fatalf("Decrypt = %q\nwant it to start %q and name share 3 at %s", msg, want, c.URL)
	}
	if strings.Contains(msg, a.URL) {
		t.Fatalf("Decrypt = %q names the server that answered", msg)
	}
	b.Start()
	badOpen(t, jwe, secret, nil)
}

func TestSSSOneOfTwo(t *testing.T) {
	a, b := testenv.EmbeddedTang(t), testenv.EmbeddedTang(t)
	secret := []byte("one of two")
	jwe := badSeal(t, "sss", fmt.Sprintf(`{"t":1,"pins":{"tang":[%s,%s]}}`, a.Config(), b.Config()), secret, nil)
	a.Stop()
	badOpen(t, jwe, secret, nil)
	a.Start()
	b.Stop()
	badOpen(t, jwe, secret, nil)
	a.Stop()
	err := badDecrypt(t, jwe, nil)
	var se *unlock.ShareError
	if !errors.As(err, &se) || se.Needed != 1 || se.Recovered != 0 || !strings.HasPrefix(err.Error(), "sss: 1 of 2 shares needed, 0 recovered; share 1: tang "+a.URL) {
		t.Fatalf("Decrypt = %v", err)
	}
}

func TestSSSNested(t *testing.T) {
	a, b, c := testenv.EmbeddedTang(t), testenv.EmbeddedTang(t), testenv.EmbeddedTang(t)
	secret := []byte("nested sss")
	// (a or b) and c; pins are taken in name order: sss, then tang.
	cfg := fmt.Sprintf(`{"t":2,"pins":{"tang":%s,"sss":{"t":1,"pins":{"tang":[%s,%s]}}}}`, c.Config(), a.Config(), b.Config())
	jwe := badSeal(t, "sss", cfg, secret, nil)

	n, err := unlock.Inspect(jwe)
	if err != nil {
		t.Fatal(err)
	}
	if n.Pin != "sss" || n.Threshold != 2 || len(n.Shares) != 2 ||
		n.Shares[0].Pin != "sss" || n.Shares[0].Threshold != 1 || len(n.Shares[0].Shares) != 2 ||
		n.Shares[0].Shares[0].URL != a.URL || n.Shares[0].Shares[1].URL != b.URL || n.Shares[1].URL != c.URL {
		var out strings.Builder
		n.Format(&out)
		t.Fatalf("Inspect:\n%s", out.String())
	}

	badOpen(t, jwe, secret, nil)
	a.Stop()
	badOpen(t, jwe, secret, nil)
	b.Stop()
	err = badDecrypt(t, jwe, nil)
	var se *unlock.ShareError
	if !errors.As(err, &se) || se.Needed != 2 || se.Recovered != 1 {
		t.Fatalf("Decrypt = %v, want the outer ShareError", err)
	}
	for _, s := range []string{"sss: 2 of 2 shares needed, 1 recovered; share 1: sss: 1 of 2 shares needed, 0 recovered", a.URL, b.URL} {
		if !strings.Contains(err.Error(), s) {
			t.Fatalf("Decrypt = %q, want it to contain %q", err, s)
		}
	}
	a.Start()
	c.Stop()
	err = badDecrypt(t, jwe, nil)
	if !errors.Is(err, unlock.ErrNotEnoughShares) || !strings.Contains(err.Error(), "share 2: tang "+c.URL) {
		t.Fatalf("Decrypt = %v, want share 2 (%s) named", err, c.URL)
	}
}

func TestSSSTampered(t *testing.T) {
	a, b, c := testenv.EmbeddedTang(t), testenv.EmbeddedTang(t), testenv.EmbeddedTang(t)
	secret := []byte("sss tampered")
	jwe := badSeal(t, "sss", fmt.Sprintf(`{"t":2,"pins":{"tang":[%s,%s,%s]}}`, a.Config(), b.Config(), c.Config()), secret, nil)
	for name, in := range map[string][]byte{
		"t lowered": badHeader(t, jwe, func(h string) string { return strings.Replace(h, `"t":2`, `"t":1`, 1) }),
		"a child's ciphertext": badHeader(t, jwe, func(h string) string {
			var hh struct {
				Clevis struct{ SSS struct{ JWE []string } }
			}
			json.Unmarshal([]byte(h), &hh)
			child := hh.Clevis.SSS.JWE[1]
			return strings.Replace(h, child, string(badFlip(t, []byte(child), 3, 0)), 1)
		}),
		"ciphertext": badFlip(t, jwe, 3, 1),
		"tag":        badFlip(t, jwe, 4, 1),
	} {
		if err := badDecrypt(t, in, nil); !errors.Is(err, unlock.ErrTampered) {
			t.Errorf("%s: Decrypt = %v, want ErrTampered", name, err)
		}
	}
	allBad := func(h string) string {
		var m map[string]any
		json.Unmarshal([]byte(h), &m)
		m["clevis"].(map[string]any)["sss"].(map[string]any)["jwe"] = []string{"x", "y.z", "...."}
		out, _ := json.Marshal(m)
		return string(out)
	}
	tpm2Child := "eyJlbmMiOiJBMjU2R0NNIiwiY2xldmlzIjp7InBpbiI6InRwbTIifX0..AAAAAAAAAAAAAAAA.AA.AAAAAAAAAAAAAAAAAAAAAA"
	for _, tc := range []struct {
		name string
		edit func(string) string
		want []error
	}{
		{"t above n", func(h string) string { return strings.Replace(h, `"t":2`, `"t":4`, 1) }, []error{unlock.ErrMalformed}},
		{"t zero", func(h string) string { return strings.Replace(h, `"t":2`, `"t":0`, 1) }, []error{unlock.ErrMalformed}},
		{"p not base64url", func(h string) string { return strings.Replace(h, `"p":"`, `"p":"*`, 1) }, []error{unlock.ErrMalformed}},
		{"p not 32 bytes", func(h string) string { return strings.Replace(h, `"p":"`, `"p":"AAAA`, 1) }, []error{unlock.ErrMalformed, sss.ErrBadShare}},
		{"alg not dir", func(h string) string { return strings.Replace(h, `"alg":"dir"`, `"alg":"ECDH-ES"`, 1) }, []error{unlock.ErrMalformed}},
		{"clevis.sss gone", func(h string) string { return strings.Replace(h, `"sss":{`, `"xyz":{`, 1) }, []error{unlock.ErrMalformed}},
		{"zero children", func(h string) string { return h[:strings.Index(h, `"jwe":[`)+7] + `],"p":"AA","t":1}}}` }, []error{unlock.ErrMalformed}},
		// The remaining two shares recover the key, but the header changed.
		{"one child not a JWE", func(h string) string { return strings.Replace(h, `"jwe":["`, `"jwe":["x`, 1) }, []error{unlock.ErrTampered}},
		{"extra child of unknown pin", func(h string) string { return strings.Replace(h, `"jwe":["`, `"jwe":["`+tpm2Child+`","`, 1) }, []error{unlock.ErrTampered}},
		{"every child broken", allBad, []error{unlock.ErrNotEnoughShares, unlock.ErrMalformed}},
		{"children of unknown pin", func(h string) string {
			return strings.Replace(allBad(h), `["x","y.z","...."]`, `["`+tpm2Child+`","`+tpm2Child+`","x"]`, 1)
		}, []error{unlock.ErrNotEnoughShares, unlock.ErrUnknownPin}},
	} {
		err := badDecrypt(t, badHeader(t, jwe, tc.edit), nil)
		for _, want := range tc.want {
			if !errors.Is(err, want) {
				t.Errorf("%s: Decrypt = %v, want it to wrap %v", tc.name, err, want)
			}
		}
	}
}

// TestSecretsNeverLogged runs succeeding and failing recoveries with a
// recognizable secret and checks that neither the server's logs nor any
// error text contain it in any common encoding.
func TestSecretsNeverLogged(t *testing.T) {
	var logs testenv.SyncBuffer
	logger := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	dir := t.TempDir()
	thp, err := tang.Keygen(dir)
	if err != nil {
		t.Fatal(err)
	}
	kd, err := tang.OpenKeyDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	httpSrv := httptest.NewServer(tang.NewServer(kd, logger))
	defer httpSrv.Close()
	cfg := fmt.Sprintf(`{"url":%q,"thp":%q}`, httpSrv.URL, thp)
	jsonLogs := &testenv.SyncBuffer{}
	jsonSrv := httptest.NewServer(tang.NewServer(kd, slog.New(slog.NewJSONHandler(jsonLogs, nil))))
	defer jsonSrv.Close()
	jsonCfg := fmt.Sprintf(`{"url":%q,"thp":%q}`, jsonSrv.URL, thp)

	secret := []byte("CANARY-" + hex.EncodeToString(func() []byte { b := make([]byte, 16); rand.Read(b); return b }()))
	var errs []string
	record := func(err error) {
		if err != nil {
			errs = append(errs, err.Error(), fmt.Sprintf("%+v", err), fmt.Sprintf("%#v", err))
		}
	}

	tangJWE := badSeal(t, "tang", cfg, secret, nil)
	sssJWE := badSeal(t, "sss", fmt.Sprintf(`{"t":2,"pins":{"tang":[%s,%s]}}`, cfg, jsonCfg), secret, nil)
	badOpen(t, tangJWE, secret, nil)
	badOpen(t, sssJWE, secret, nil)
	record(badDecrypt(t, badFlip(t, tangJWE, 3, 0), nil))
	record(badDecrypt(t, badFlip(t, sssJWE, 4, 0), nil))
	record(badDecrypt(t, badHeader(t, tangJWE, func(h string) string { return badReorder(t, h) }), nil))
	record(badDecrypt(t, tangJWE[:len(tangJWE)-3], nil))
	_, err = unlock.Encrypt(badCtx(t), "tang", []byte(`{"url":"`+httpSrv.URL+`"}`), secret, nil)
	record(err)
	_, err = unlock.Encrypt(badCtx(t), "sss", []byte(`{"t":3,"pins":{"tang":[`+cfg+`]}}`), secret, nil)
	record(err)
	jsonSrv.Close()
	record(badDecrypt(t, sssJWE, nil))
	httpSrv.Close()
	record(badDecrypt(t, tangJWE, nil))
	if n, err := unlock.Inspect(sssJWE); err == nil {
		var out strings.Builder
		n.Format(&out)
		errs = append(errs, out.String())
	}

	all := logs.String() + jsonLogs.String() + strings.Join(errs, "\n")
	if !strings.Contains(logs.String(), "/rec/") || !strings.Contains(jsonLogs.String(), "/rec/") || len(errs) < 8*3 {
		t.Fatalf("the test saw too little: %d errors, logs:\n%s", len(errs), logs.String())
	}
	for name, enc := range map[string]string{
		"raw":           string(secret),
		"hex":           hex.EncodeToString(secret),
		"HEX":           strings.ToUpper(hex.EncodeToString(secret)),
		"base64":        base64.StdEncoding.EncodeToString(secret),
		"base64url":     b64u.EncodeToString(secret),
		"unique suffix": string(secret[len("CANARY-"):]),
		"Go bytes":      fmt.Sprint(secret[:8]),
	} {
		if strings.Contains(all, enc) {
			t.Errorf("the secret (%s) appears in logs or errors", name)
		}
	}
	// The server's own private keys stay out of its logs too.
	files, _ := filepath.Glob(filepath.Join(dir, "*.jwk"))
	for _, f := range files {
		data, _ := os.ReadFile(f)
		var k tang.JWK
		json.Unmarshal(data, &k)
		if k.D == "" || strings.Contains(all, k.D) {
			t.Errorf("%s: private key missing or logged", f)
		}
	}
}

// deadTangURL is a 127.0.0.1 URL where nothing listens.
func deadTangURL(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return "http://" + ln.Addr().String()
}

func TestEncryptSSSShareUnreachable(t *testing.T) {
	srv := testenv.EmbeddedTang(t)
	dead := deadTangURL(t)
	cfg := fmt.Sprintf(`{"t":1,"pins":{"tang":[%s,{"url":%q,"thp":%q}]}}`, srv.Config(), dead, srv.Thp)
	_, err := unlock.Encrypt(badCtx(t), "sss", []byte(cfg), []byte("x"), nil)
	if !errors.Is(err, tang.ErrUnreachable) || !strings.Contains(err.Error(), "share 2 (tang)") || !strings.Contains(err.Error(), dead) {
		t.Fatalf("Encrypt = %v, want share 2 at %s unreachable", err, dead)
	}
}

// TestSSSDoesNotWaitForSlowChildren: with t shares in, Decrypt returns and
// cancels the recoveries still running. The slow child comes first and is
// held until Decrypt has returned; the fast one answers only once the slow
// one's request is in. A sequential implementation fails here (at the
// context deadline), it is not merely slow.
func TestSSSDoesNotWaitForSlowChildren(t *testing.T) {
	slow, fast := newFakeTang(t), newFakeTang(t)
	secret := []byte("one of two, concurrently")
	jwe := badSeal(t, "sss", fmt.Sprintf(`{"t":1,"pins":{"tang":[%s,%s]}}`, slow.config(), fast.config()), secret, nil)

	arrived, canceled, release := make(chan struct{}), make(chan struct{}), make(chan struct{})
	t.Cleanup(func() { close(release) })
	slow.rec.Store(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		close(arrived)
		select {
		case <-r.Context().Done():
			close(canceled)
		case <-release:
		}
	})
	real := fast.rec.Load().(func(http.ResponseWriter, *http.Request))
	fast.rec.Store(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-arrived:
			real(w, r)
		case <-r.Context().Done():
		}
	})
	ctx, cancel := context.WithTimeout(badCtx(t), 20*time.Second)
	defer cancel()
	buf, err := unlock.Decrypt(ctx, jwe, &unlock.Options{Tang: &tang.Client{Timeout: time.Hour}})
	if err != nil {
		t.Fatalf("Decrypt = %v; did it wait for the first child before asking the second?", err)
	}
	if !bytes.Equal(buf.Bytes(), secret) {
		t.Fatalf("Decrypt = %q", buf.Bytes())
	}
	buf.Destroy()
	select {
	case <-canceled:
	case <-badCtx(t).Done():
		t.Fatal("the slow child's recovery was not canceled after Decrypt returned")
	}
}
