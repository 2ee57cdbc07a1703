package tang_test

import (
	"bytes"
	"crypto/ecdh"
	"crypto/rand"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/sealproxy/sealproxy/unlock/tang"
)

func get(t *testing.T, url string) (int, string, []byte) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, resp.Header.Get("Content-Type"), body
}

func post(t *testing.T, url, body string) (int, string, []byte) {
	t.Helper()
	resp, err := http.Post(url, "application/jwk+json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, resp.Header.Get("Content-Type"), out
}

// serveKeyDir serves dir through a KeyDir, as sealgate does.
func serveKeyDir(t *testing.T, dir string) string {
	t.Helper()
	kd, err := tang.OpenKeyDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	return serve(t, tang.NewServer(kd, nil)).URL
}

func TestServerAdvertisement(t *testing.T) {
	dir, old := newKeyDir(t)
	url := serveKeyDir(t, dir)

	for _, path := range []string{"/adv", "/adv/"} {
		status, ctype, body := get(t, url+path)
		if status != http.StatusOK || ctype != "application/jose+json" {
			t.Fatalf("GET %s: %d %q, want 200 application/jose+json", path, status, ctype)
		}
		adv, err := tang.ParseAdvertisement(body)
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		if err := adv.Trust(old.sig.Thumbprint()); err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
	}
	status, _, body := get(t, url+"/adv/"+old.sig.Thumbprint())
	if status != http.StatusOK || !signedBy(t, body, old.sig) {
		t.Fatalf("GET /adv/{active thp}: %d, signed by it: %v", status, signedBy(t, body, old.sig))
	}
	status, _, body = get(t, url+"/adv/"+rfc7638(old.sig, sha1Sum))
	if status != http.StatusOK || !signedBy(t, body, old.sig) {
		t.Fatalf("GET /adv/{SHA-1 thp}: %d", status)
	}

	if _, err := tang.Rotate(dir); err != nil {
		t.Fatal(err)
	}
	cur := activeKeys(t, dir)
	status, ctype, body := get(t, url+"/adv/"+old.sig.Thumbprint())
	if status != http.StatusOK || ctype != "application/jose+json" {
		t.Fatalf("GET /adv/{rotated thp}: %d %q", status, ctype)
	}
	if !signedBy(t, body, old.sig) || !signedBy(t, body, cur.sig) {
		t.Fatal("GET /adv/{rotated thp}: not signed by both the rotated and the active key")
	}
	if bytes.Contains(mustDecodePayload(t, body), []byte(old.sig.X)) {
		t.Fatal("GET /adv/{rotated thp}: the payload lists the rotated key")
	}
	status, _, body = get(t, url+"/adv")
	if status != http.StatusOK || signedBy(t, body, old.sig) || !signedBy(t, body, cur.sig) {
		t.Fatalf("GET /adv after rotation: %d; want it signed by the new key only", status)
	}

	for name, path := range map[string]string{
		"unknown thp":           "/adv/" + knownThpS256,
		"exchange key thp":      "/adv/" + cur.exc.Thumbprint(),
		"rotated exchange thp":  "/adv/" + old.exc.Thumbprint(),
		"garbage thp":           "/adv/xyz",
		"unknown path":          "/nope",
		"path below a thp":      "/adv/" + cur.sig.Thumbprint() + "/x",
		"rec with GET (no kid)": "/rec",
	} {
		if status, _, _ := get(t, url+path); status != http.StatusNotFound {
			t.Errorf("GET %s (%s): %d, want 404", path, name, status)
		}
	}
	if status, _, _ := post(t, url+"/adv", "{}"); status != http.StatusMethodNotAllowed {
		t.Errorf("POST /adv: %d, want 405", status)
	}
}

func TestServerRecovery(t *testing.T) {
	dir, old := newKeyDir(t)
	url := serveKeyDir(t, dir)

	x, err := ecdh.P521().GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	X := x.PublicKey().Bytes()
	good := mustMarshal(t, pointJWK(X, "ECMR"))
	noAlg := mustMarshal(t, pointJWK(X, ""))
	off := pointJWK(X, "ECMR")
	off.Y = flipB64(off.Y, 5)
	p256, _ := ecdh.P256().GenerateKey(rand.Reader)
	withD := pointJWK(X, "ECMR")
	withD.D = b64.EncodeToString(x.Bytes())

	checkAnswer := func(t *testing.T, body []byte, exc *tang.JWK) {
		t.Helper()
		y, err := tang.ParseJWK(body)
		if err != nil {
			t.Fatalf("answer %s: %v", body, err)
		}
		sx, _ := b64.DecodeString(exc.X)
		sy, _ := b64.DecodeString(exc.Y)
		S, _ := ecdh.P521().NewPublicKey(append(append([]byte{4}, sx...), sy...))
		want, _ := x.ECDH(S)
		if got, _ := b64.DecodeString(y.X); !bytes.Equal(got, want) {
			t.Fatalf("answer is not s·X")
		}
	}

	kid := old.exc.Thumbprint()
	status, ctype, body := post(t, url+"/rec/"+kid, good)
	if status != http.StatusOK || ctype != "application/jwk+json" {
		t.Fatalf("POST /rec/{kid}: %d %q %s, want 200 application/jwk+json", status, ctype, body)
	}
	checkAnswer(t, body, old.exc)
	if status, _, body = post(t, url+"/rec/"+kid, noAlg); status != http.StatusOK {
		t.Fatalf("POST /rec/{kid} without alg: %d %s", status, body)
	}
	checkAnswer(t, body, old.exc)
	if status, _, body = post(t, url+"/rec/"+rfc7638(old.exc, sha1Sum), good); status != http.StatusOK {
		t.Fatalf("POST /rec/{SHA-1 kid}: %d %s", status, body)
	}
	checkAnswer(t, body, old.exc)

	tests := []struct {
		name, kid, body string
		want            int
	}{
		{"bad JSON", kid, `{"kty":"EC",`, 400},
		{"empty body", kid, ``, 400},
		{"JSON array", kid, `[]`, 400},
		{"off-curve point", kid, mustMarshal(t, off), 400},
		{"point on P-256", kid, mustMarshal(t, pointJWK(p256.PublicKey().Bytes(), "ECMR")), 400},
		{"wrong alg", kid, mustMarshal(t, pointJWK(X, "ES512")), 400},
		{"wrong kty", kid, strings.Replace(good, `"kty":"EC"`, `"kty":"RSA"`, 1), 400},
		{"private key sent", kid, mustMarshal(t, withD), 400},
		{"coordinates missing", kid, `{"kty":"EC","crv":"P-521","alg":"ECMR"}`, 400},
		{"huge body", kid, `{"kty":"EC","pad":"` + strings.Repeat("a", 8<<10) + `"}`, 400},
		{"signing key's kid", old.sig.Thumbprint(), good, 403},
		{"signing key's SHA-1 kid", rfc7638(old.sig, sha1Sum), good, 403},
		{"unknown kid", knownThpS256, good, 404},
		{"garbage kid", "xyz", good, 404},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			status, _, body := post(t, url+"/rec/"+tc.kid, tc.body)
			if status != tc.want {
				t.Fatalf("POST /rec: %d %s, want %d", status, body, tc.want)
			}
			if len(body) != 0 {
				t.Fatalf("error answer has a body: %q", body)
			}
		})
	}

	if status, _, _ := get(t, url+"/rec/"+kid); status != http.StatusMethodNotAllowed {
		t.Errorf("GET /rec/{kid}: %d, want 405", status)
	}

	// After a rotation the old exchange key still recovers.
	if _, err := tang.Rotate(dir); err != nil {
		t.Fatal(err)
	}
	if status, _, body = post(t, url+"/rec/"+kid, good); status != http.StatusOK {
		t.Fatalf("POST /rec/{rotated kid}: %d", status)
	}
	checkAnswer(t, body, old.exc)
	cur := activeKeys(t, dir)
	if status, _, body = post(t, url+"/rec/"+cur.exc.Thumbprint(), good); status != http.StatusOK {
		t.Fatalf("POST /rec/{new kid}: %d", status)
	}
	checkAnswer(t, body, cur.exc)
	if status, _, _ = post(t, url+"/rec/"+old.sig.Thumbprint(), good); status != http.StatusForbidden {
		t.Fatalf("POST /rec/{rotated signing kid}: %d, want 403", status)
	}
}
