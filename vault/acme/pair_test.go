package acme

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sealproxy/sealproxy/proxy/config"
)

// pairEnv is one key directory with an old pair (or none, at a first
// issue) about to be replaced by a new one. A sealed key is stood in for
// by opaque bytes; unseal maps them back to the key they seal.
type pairEnv struct {
	dir, key, cert string
	roots          *x509.CertPool
	keys           map[[32]byte]*ecdsa.PrivateKey
	oldJWE, newJWE []byte
	newChain       [][]byte
}

func newPairEnv(t *testing.T, first bool) *pairEnv {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"}, IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, caKey.Public(), caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	e := &pairEnv{dir: t.TempDir(), roots: x509.NewCertPool(), keys: map[[32]byte]*ecdsa.PrivateKey{}}
	e.roots.AddCert(ca)
	e.key, e.cert = filepath.Join(e.dir, "web.key.jwe"), filepath.Join(e.dir, "web.crt")
	issue := func(serial int64) ([]byte, [][]byte) {
		k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial), DNSNames: []string{"web.example"},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, k.Public(), caKey)
		if err != nil {
			t.Fatal(err)
		}
		jwe := fmt.Appendf(nil, "eyJhbGciOiJFQ0RILUVTIn0.sealed-%d", serial) // no key material
		e.keys[sha256.Sum256(jwe)] = k
		return jwe, [][]byte{der, caDER}
	}
	var oldChain [][]byte
	e.oldJWE, oldChain = issue(2)
	e.newJWE, e.newChain = issue(3)
	if !first {
		if err := writePair(e.key, e.oldJWE, e.cert, oldChain); err != nil {
			t.Fatal(err)
		}
	}
	return e
}

// served returns the serial a TLS client sees from the pair on disk,
// or 0 when there is no pair; an error if it does not serve.
func (e *pairEnv) served(t *testing.T) (int64, error) {
	t.Helper()
	jwe, kerr := os.ReadFile(e.key)
	certPEM, cerr := os.ReadFile(e.cert)
	if errors.Is(kerr, os.ErrNotExist) && errors.Is(cerr, os.ErrNotExist) {
		return 0, nil // a first issue not done: the key is pending
	}
	if kerr != nil || cerr != nil {
		return 0, fmt.Errorf("half a pair: key %v, cert %v", kerr, cerr)
	}
	key := e.keys[sha256.Sum256(jwe)]
	if key == nil {
		return 0, fmt.Errorf("the sealed key file holds neither pair's key: %q", jwe)
	}
	if _, err := config.ReadLeaf(e.cert); err != nil { // what the daemon reads
		return 0, err
	}
	var chain [][]byte
	for rest := certPEM; ; {
		var b *pem.Block
		if b, rest = pem.Decode(rest); b == nil {
			break
		}
		chain = append(chain, b.Bytes)
	}
	if leaf, err := x509.ParseCertificate(chain[0]); err != nil || !key.PublicKey.Equal(leaf.PublicKey) {
		return 0, fmt.Errorf("the sealed key does not match the certificate (%v)", err)
	}
	srv, cli := net.Pipe()
	defer cli.Close()
	go func() {
		s := tls.Server(srv, &tls.Config{Certificates: []tls.Certificate{{Certificate: chain, PrivateKey: key}}})
		_ = s.HandshakeContext(context.Background())
		s.Close()
	}()
	c := tls.Client(cli, &tls.Config{ServerName: "web.example", RootCAs: e.roots})
	if err := c.HandshakeContext(t.Context()); err != nil {
		return 0, fmt.Errorf("handshake with the pair on disk: %w", err)
	}
	return c.ConnectionState().PeerCertificates[0].SerialNumber.Int64(), nil
}

// checkClean: no staged file or temporary is left, and no file holds a
// private key in the clear.
func (e *pairEnv) checkClean(t *testing.T) {
	t.Helper()
	entries, _ := os.ReadDir(e.dir)
	for _, f := range entries {
		if n := f.Name(); strings.Contains(n, stagedSuffix) || strings.HasSuffix(n, ".tmp") {
			t.Errorf("left after recovery: %s", n)
		}
		data, _ := os.ReadFile(filepath.Join(e.dir, f.Name()))
		if bytes.Contains(data, []byte("PRIVATE KEY")) {
			t.Errorf("%s holds a private key in the clear", f.Name())
		}
	}
}

// TestWritePairCrash crashes the writer after each of its steps (and
// inside the atomic writes, leaving their temporaries), then recovers as
// a start-up does: the files are always a matching pair that serves, the
// old one before the commit marker (or none at a first issue), the new
// one after it.
func TestWritePairCrash(t *testing.T) {
	steps := []struct {
		step string
		temp string // a temporary the crash left inside an atomic write
		want int64  // serial served after recovery: 2 old, 3 new
	}{
		{step: "key staged", want: 2},
		{step: "key staged", temp: "cert", want: 2},
		{step: "cert staged", want: 3},
		{step: "key renamed", want: 3},
		{step: "", want: 3}, // no crash: done
	}
	for _, first := range []bool{false, true} {
		for _, s := range steps {
			name := fmt.Sprintf("first=%v/%s/temp=%s", first, s.step, s.temp)
			t.Run(name, func(t *testing.T) {
				e := newPairEnv(t, first)
				crashHook = func(step string) bool { return step == s.step }
				err := writePair(e.key, e.newJWE, e.cert, e.newChain)
				crashHook = nil
				if s.step != "" && !errors.Is(err, errCrash) {
					t.Fatalf("writePair = %v, want the injected crash", err)
				}
				if s.temp != "" {
					tmp := filepath.Join(e.dir, ".web.crt.next.123456.tmp")
					if err := os.WriteFile(tmp, []byte("-----BEGIN CERT"), 0o644); err != nil {
						t.Fatal(err)
					}
				}
				Recover(&config.Config{Dir: e.dir, Keys: []config.Key{{Name: "web", Cert: "web.crt",
					Source: "sealed:web.key.jwe", ACME: &config.ACME{}}}}, slog.New(slog.DiscardHandler))
				got, err := e.served(t)
				if err != nil {
					t.Fatal(err)
				}
				want := s.want
				if first && want == 2 {
					want = 0 // nothing before the first commit: still pending
				}
				if got != want {
					t.Errorf("serial %d served after recovery, want %d", got, want)
				}
				e.checkClean(t)
				// The next renewal writes over whatever recovery left.
				if err := writePair(e.key, e.newJWE, e.cert, e.newChain); err != nil {
					t.Fatal(err)
				}
				if got, err := e.served(t); err != nil || got != 3 {
					t.Errorf("after the next write: serial %d, %v; want 3", got, err)
				}
			})
		}
	}
}

// TestFinishPairMismatch: a staged certificate whose recorded digest is
// not that of the staged key, or (once the staged key is gone) of the
// key in place, is another writer's leftover: it is removed and the
// pair in place keeps serving. So is one that names no key.
func TestFinishPairMismatch(t *testing.T) {
	cases := map[string]func(e *pairEnv){
		"staged key is another": func(e *pairEnv) {
			os.WriteFile(e.key+stagedSuffix, []byte("another sealed key"), 0o600)
		},
		"key in place is not the certified one": func(e *pairEnv) {
			os.Remove(e.key + stagedSuffix)
		},
		"no digest line": func(e *pairEnv) {
			data, _ := os.ReadFile(e.cert + stagedSuffix)
			_, rest, _ := bytes.Cut(data, []byte("\n"))
			os.WriteFile(e.cert+stagedSuffix, rest, 0o644)
		},
	}
	for name, mess := range cases {
		t.Run(name, func(t *testing.T) {
			e := newPairEnv(t, false)
			crashHook = func(step string) bool { return step == "cert staged" }
			_ = writePair(e.key, e.newJWE, e.cert, e.newChain)
			crashHook = nil
			mess(e)
			pairMu.Lock()
			done, err := finishPair(e.key, e.cert)
			pairMu.Unlock()
			if done || err != nil {
				t.Fatalf("finishPair = %v, %v; want the staged pair removed", done, err)
			}
			if got, err := e.served(t); err != nil || got != 2 {
				t.Errorf("serial %d, %v after a mismatched staged pair; want the old pair (2)", got, err)
			}
			e.checkClean(t)
		})
	}
}

// TestPairDigestLine: the certificate in place starts with the digest
// of its sealed key and still reads as the chain.
func TestPairDigestLine(t *testing.T) {
	e := newPairEnv(t, false)
	if err := writePair(e.key, e.newJWE, e.cert, e.newChain); err != nil {
		t.Fatal(err)
	}
	data, _ := os.ReadFile(e.cert)
	sum, ok := stagedDigest(data)
	if !ok || sum != sha256.Sum256(e.newJWE) {
		t.Fatalf("certificate's first line: %q", bytes.SplitN(data, []byte("\n"), 2)[0])
	}
	if got, err := e.served(t); err != nil || got != 3 {
		t.Errorf("serial %d, %v; want the new pair (3)", got, err)
	}
}

// FuzzStagedDigest: any staged certificate's first line is read without
// panic, and a digest is found only from a line that spells it.
func FuzzStagedDigest(f *testing.F) {
	sum := sha256.Sum256([]byte("jwe"))
	f.Add([]byte(pairDigestPrefix + fmt.Sprintf("%x", sum) + "\n-----BEGIN CERTIFICATE-----\n"))
	f.Add([]byte(pairDigestPrefix + "zz\n"))
	f.Add([]byte("-----BEGIN CERTIFICATE-----\n"))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		got, ok := stagedDigest(data)
		if !ok {
			return
		}
		want := pairDigestPrefix + fmt.Sprintf("%x", got)
		if len(data) < len(want) || !strings.EqualFold(string(data[:len(want)]), want) {
			t.Fatalf("digest %x from a line that does not spell it: %q", got, data)
		}
	})
}
