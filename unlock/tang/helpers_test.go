package tang_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/sha512"
	"encoding/json"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sealproxy/sealproxy/unlock/tang"
)

func testCtx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return c
}

// keyPair is one key file of a key directory.
type keyPair struct {
	sig, exc         *tang.JWK
	sigPath, excPath string
}

// newKeyDir makes a key directory with one signing and one exchange key.
func newKeyDir(t *testing.T) (string, keyPair) {
	t.Helper()
	dir := t.TempDir()
	thp, err := tang.Keygen(dir)
	if err != nil {
		t.Fatal(err)
	}
	kp := activeKeys(t, dir)
	if kp.sig.Thumbprint() != thp {
		t.Fatalf("Keygen returned %s, its signing key is %s", thp, kp.sig.Thumbprint())
	}
	return dir, kp
}

// activeKeys reads the one active key pair of dir.
func activeKeys(t *testing.T, dir string) keyPair {
	t.Helper()
	var kp keyPair
	files, _ := filepath.Glob(filepath.Join(dir, "*.jwk"))
	for _, f := range files {
		if strings.HasPrefix(filepath.Base(f), ".") {
			continue // rotated
		}
		k := readKey(t, f)
		switch {
		case k.IsExchange() && kp.exc == nil:
			kp.exc, kp.excPath = k, f
		case k.Can(tang.OpSign) && kp.sig == nil:
			kp.sig, kp.sigPath = k, f
		default:
			t.Fatalf("%s: unexpected key %+v", f, k.Public())
		}
	}
	if kp.sig == nil || kp.exc == nil {
		t.Fatalf("%s has no active key pair (%v)", dir, files)
	}
	return kp
}

func readKey(t *testing.T, path string) *tang.JWK {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	k, err := tang.ParseJWK(data)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return k
}

func loadKeys(t *testing.T, dir string) *tang.Keys {
	t.Helper()
	ks, err := tang.LoadKeys(dir)
	if err != nil {
		t.Fatal(err)
	}
	return ks
}

// serve runs h on 127.0.0.1 for the test.
func serve(t *testing.T, h http.Handler) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	if !strings.HasPrefix(srv.URL, "http://127.0.0.1:") {
		t.Fatalf("test server on %s, want 127.0.0.1", srv.URL)
	}
	return srv
}

// jwsSigs returns the signatures of a JWS in JSON serialization, flattened
// or general, and its base64url payload.
func jwsSigs(t *testing.T, jws []byte) (payload string, sigs []map[string]string) {
	t.Helper()
	var m struct {
		Payload    string              `json:"payload"`
		Protected  string              `json:"protected"`
		Signature  string              `json:"signature"`
		Signatures []map[string]string `json:"signatures"`
	}
	if err := json.Unmarshal(jws, &m); err != nil {
		t.Fatalf("not JWS JSON: %v: %s", err, jws)
	}
	sigs = m.Signatures
	if m.Signature != "" {
		sigs = append(sigs, map[string]string{"protected": m.Protected, "signature": m.Signature})
	}
	return m.Payload, sigs
}

// signedBy reports whether one of the JWS's signatures is a valid ES512
// signature by k. It is written against the RFCs, not the package: ECDSA
// P-521 with SHA-512 over "protected.payload", r‖s of 66 bytes each.
func signedBy(t *testing.T, jws []byte, k *tang.JWK) bool {
	t.Helper()
	payload, sigs := jwsSigs(t, jws)
	x, _ := b64.DecodeString(k.X)
	y, _ := b64.DecodeString(k.Y)
	//lint:ignore SA1019 written against the RFCs: the coordinates are what the JWK carries
	pub := &ecdsa.PublicKey{Curve: elliptic.P521(), X: new(big.Int).SetBytes(x), Y: new(big.Int).SetBytes(y)}
	for _, s := range sigs {
		hdr, err := b64.DecodeString(s["protected"])
		if err != nil {
			continue
		}
		var h struct{ Alg string }
		if json.Unmarshal(hdr, &h) != nil || h.Alg != "ES512" {
			continue
		}
		sig, err := b64.DecodeString(s["signature"])
		if err != nil || len(sig) != 132 {
			continue
		}
		d := sha512.Sum512([]byte(s["protected"] + "." + payload))
		if ecdsa.Verify(pub, d[:], new(big.Int).SetBytes(sig[:66]), new(big.Int).SetBytes(sig[66:])) {
			return true
		}
	}
	return false
}
