package acme

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	xacme "golang.org/x/crypto/acme"

	"github.com/sealproxy/sealproxy/proxy/config"
	"github.com/sealproxy/sealproxy/unlock/tang"
)

// TestWritePairCertFails: when the certificate cannot be written (disk
// full, or any write error) after the sealed key was, the old sealed key
// is put back, so the files on disk stay a matching pair; with no old
// key (first issue) the new one is removed.
func TestWritePairCertFails(t *testing.T) {
	dir := t.TempDir()
	keyPath := filepath.Join(dir, "web.key.jwe")
	if err := os.WriteFile(keyPath, []byte("old jwe"), 0o600); err != nil {
		t.Fatal(err)
	}
	badCert := filepath.Join(dir, "missing-dir", "web.crt")
	err := writePair(keyPath, []byte("new jwe"), badCert, [][]byte{{1, 2, 3}})
	var we *writeError
	if !errors.As(err, &we) || Classify(err) != ResultWrite {
		t.Fatalf("writePair = %v (%s), want a write error", err, Classify(err))
	}
	if got, _ := os.ReadFile(keyPath); !bytes.Equal(got, []byte("old jwe")) {
		t.Errorf("the sealed key after a failed certificate write: %q, want the old one back", got)
	}
	fresh := filepath.Join(dir, "fresh.key.jwe")
	if err := writePair(fresh, []byte("new jwe"), badCert, [][]byte{{1}}); err == nil {
		t.Fatal("no error")
	}
	if _, err := os.Stat(fresh); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a first issue's sealed key stayed without its certificate: %v", err)
	}
	// Both writable: both written, the key 0600.
	cert := filepath.Join(dir, "web.crt")
	if err := writePair(keyPath, []byte("new jwe"), cert, [][]byte{{1}, {2}}); err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(keyPath); runtime.GOOS != "windows" && fi.Mode().Perm() != 0o600 { // Windows has no such modes
		t.Errorf("sealed key mode %v", fi.Mode().Perm())
	}
	if pemData, _ := os.ReadFile(cert); bytes.Count(pemData, []byte("BEGIN CERTIFICATE")) != 2 {
		t.Errorf("certificate file: %q", pemData)
	}
}

func TestClassify(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want string
	}{
		{nil, ResultSuccess},
		{fmt.Errorf("sealing: %w", tang.ErrUnreachable), ResultTangUnreachable},
		{fmt.Errorf("%w: order: %w", errCA, errors.New("dial tcp: refused")), ResultCA},
		{&xacme.Error{StatusCode: 403}, ResultCA},
		{&writeError{errors.New("no space left on device")}, ResultWrite},
		{fmt.Errorf("%w: %w", errSwap, errors.New("reload")), ResultSwap},
		{errors.New("other"), ResultError},
	} {
		if got := Classify(tc.err); got != tc.want {
			t.Errorf("Classify(%v) = %s, want %s", tc.err, got, tc.want)
		}
	}
}

// TestBackoff: retries double from the first delay, with jitter, and
// stop growing at 64 times it.
func TestBackoff(t *testing.T) {
	first := time.Second
	for f := 1; f <= 20; f++ {
		d := backoffAfter(first, f)
		limit := first << min(f-1, 6)
		if d < limit/2 || d > limit {
			t.Errorf("failure %d: %v, want within [%v, %v]", f, d, limit/2, limit)
		}
	}
}

// TestSerialBytes: the ARI certificate identifier's serial is the DER
// integer's content: a leading zero when the high bit is set (RFC 9773
// section 4.1).
func TestSerialBytes(t *testing.T) {
	for _, tc := range []struct {
		serial *big.Int
		want   []byte
	}{
		{big.NewInt(0x7f), []byte{0x7f}},
		{big.NewInt(0x80), []byte{0x00, 0x80}},
		{big.NewInt(0x0102), []byte{0x01, 0x02}},
	} {
		if got := serialBytes(&x509.Certificate{SerialNumber: tc.serial}); !bytes.Equal(got, tc.want) {
			t.Errorf("serial %x: %x, want %x", tc.serial, got, tc.want)
		}
	}
}

// TestCheckChain refuses an issued certificate for another key or
// missing a name.
func TestCheckChain(t *testing.T) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), DNSNames: []string{"a.example"},
		NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	if err := checkChain([][]byte{der}, key, []string{"a.example"}); err != nil {
		t.Errorf("good chain: %v", err)
	}
	if err := checkChain([][]byte{der}, other, []string{"a.example"}); err == nil {
		t.Error("a certificate for another key passed")
	}
	if err := checkChain([][]byte{der}, key, []string{"a.example", "b.example"}); err == nil {
		t.Error("a certificate missing a name passed")
	}
	if err := checkChain(nil, key, []string{"a.example"}); err == nil {
		t.Error("an empty chain passed")
	}
}

// TestRenewalWindow: with ARI in the directory, the renewal time is in
// the CA's suggested window, asked for by the certificate's identifier;
// without it (or with a window that makes no sense) the caller falls back
// to two-thirds of the lifetime.
func TestRenewalWindow(t *testing.T) {
	start := time.Now().Add(time.Hour).UTC().Truncate(time.Second)
	end := start.Add(time.Hour)
	var asked string
	ari, window := true, fmt.Sprintf(`{"suggestedWindow":{"start":%q,"end":%q}}`, start.Format(time.RFC3339), end.Format(time.RFC3339))
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.URL.Path == "/dir" && ari:
			fmt.Fprintf(w, `{"newOrder":"x","renewalInfo":"https://%s/ari"}`, r.Host)
		case r.URL.Path == "/dir":
			fmt.Fprint(w, `{"newOrder":"x"}`)
		case strings.HasPrefix(r.URL.Path, "/ari/"):
			asked = strings.TrimPrefix(r.URL.Path, "/ari/")
			fmt.Fprint(w, window)
		default:
			http.NotFound(w, r)
		}
	}))
	defer srv.Close()
	dir := t.TempDir()
	caFile := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := &config.Config{Dir: dir}
	k := &config.Key{Name: "web", ACME: &config.ACME{Directory: srv.URL + "/dir", CA: caFile}}
	m := New(cfg, Options{})
	leaf := &x509.Certificate{SerialNumber: big.NewInt(0x87), AuthorityKeyId: []byte{1, 2, 3},
		NotBefore: time.Now(), NotAfter: time.Now().Add(24 * time.Hour)}
	got, ok := m.renewalWindow(context.Background(), k, leaf)
	if !ok || got.Before(start) || !got.Before(end) {
		t.Errorf("renewal at %v (ok %v), want in [%v, %v)", got, ok, start, end)
	}
	if asked != "AQID.AIc" {
		t.Errorf("ARI asked for %q, want AQID.AIc (base64url AKI . serial)", asked)
	}
	window = `{"suggestedWindow":{"start":"2030-01-02T00:00:00Z","end":"2030-01-01T00:00:00Z"}}`
	if _, ok := m.renewalWindow(context.Background(), k, leaf); ok {
		t.Error("a window that ends before it starts was used")
	}
	ari = false
	if _, ok := m.renewalWindow(context.Background(), k, leaf); ok {
		t.Error("a directory without renewalInfo gave a window")
	}
}
