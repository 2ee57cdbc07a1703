package proxy

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sealproxy/sealproxy/proxy/config"
	"github.com/sealproxy/sealproxy/testenv"
)

// acmeListeners builds a listener using an issued key (web) and an ACME
// key not issued yet (new), and one using only the ACME key. The key
// opener fails the test if it is asked for the pending key.
func acmeListeners(t *testing.T, backend string) (*config.Config, []*ListenerConfig, *pki) {
	t.Helper()
	f := newBuildFixture(t)
	cfg := f.config(t, buildKeys+`
[[key]]
name = "new"
cert = "new.crt"
source = "sealed:new.key.jwe"
[key.acme]
directory = "https://acme.example/dir"
account = "sealed:account.jwe"
names = ["new.example"]
seal = '{"url":"http://tang:7500","thp":"x"}'

[[listener]]
name = "both"
listen = "127.0.0.1:0"
mode = "offload"
keys = ["new", "web"]
backend = "`+backend+`"

[[listener]]
name = "only"
listen = "127.0.0.1:0"
mode = "offload"
keys = ["new"]
backend = "`+backend+`"
`)
	open := func(ctx context.Context, k *config.Key) (crypto.Signer, error) {
		if k.Name == "new" {
			t.Errorf("the pending key was opened")
			return nil, errors.New("pending")
		}
		return f.open(ctx, k)
	}
	lcs, err := Build(context.Background(), cfg, open, nil)
	if err != nil {
		t.Fatalf("Build with a pending ACME key: %v", err)
	}
	return cfg, lcs, f.p
}

// countingBackend accepts connections and counts them.
func countingBackend(t *testing.T) (string, *atomic.Int64) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	var n atomic.Int64
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			n.Add(1)
			go func() { io.Copy(c, c); c.Close() }()
		}
	}()
	return ln.Addr().String(), &n
}

func challengeCert(t *testing.T, name string) *tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(7), DNSNames: []string{name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// TestACMEPendingKey: listeners start with a key awaiting its first
// issue; its names get no certificate (a listener with only that key
// fails handshakes with ErrPending), the other keys serve.
func TestACMEPendingKey(t *testing.T) {
	backend, _ := countingBackend(t)
	_, lcs, p := acmeListeners(t, backend)
	both := start(t, lcs[0], nil)
	c, err := dialTLS(t, both.addr, clientConfig(p, "web.test"))
	if err != nil {
		t.Fatalf("the issued key beside a pending one: %v", err)
	}
	c.Close()
	only := start(t, lcs[1], nil)
	if c, err := dialTLS(t, only.addr, &tls.Config{InsecureSkipVerify: true, ServerName: "new.example"}); err == nil {
		c.Close()
		t.Fatal("a listener whose only key is pending completed a handshake")
	}
}

// TestACMETLSALPN: a ClientHello offering only acme-tls/1 for a pending
// name gets the challenge certificate and is closed after the handshake,
// never reaching the backend; any other ClientHello (another protocol
// offered too, another name, the challenge cleared) gets the usual
// certificate choice.
func TestACMETLSALPN(t *testing.T) {
	backend, conns := countingBackend(t)
	cfg, lcs, _ := acmeListeners(t, backend)
	ch := NewChallenges()
	AnswerACME(lcs, cfg, ch)
	srv := start(t, lcs[0], nil)
	cert := challengeCert(t, "new.example")
	ch.SetTLSALPN("NEW.example", cert) // names match case-insensitively

	validator := &tls.Config{InsecureSkipVerify: true, ServerName: "new.example", NextProtos: []string{ACMETLSALPN}}
	c, err := dialTLS(t, srv.addr, validator)
	if err != nil {
		t.Fatalf("validation handshake: %v", err)
	}
	cs := c.ConnectionState()
	if cs.NegotiatedProtocol != ACMETLSALPN || !cs.PeerCertificates[0].Equal(mustLeaf(t, cert)) {
		t.Errorf("validation got protocol %q and %v; want acme-tls/1 and the challenge certificate", cs.NegotiatedProtocol, cs.PeerCertificates[0].DNSNames)
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := c.Read(make([]byte, 1)); err == nil || n > 0 {
		t.Errorf("the validation connection stayed open: read %d, %v", n, err)
	}
	c.Close()

	for _, tc := range []struct {
		name string
		cfg  *tls.Config
	}{
		{"another protocol offered too", &tls.Config{InsecureSkipVerify: true, ServerName: "new.example", NextProtos: []string{ACMETLSALPN, "h2"}}},
		{"no ALPN", &tls.Config{InsecureSkipVerify: true, ServerName: "new.example"}},
		{"a name not pending", &tls.Config{InsecureSkipVerify: true, ServerName: "web.test", NextProtos: []string{ACMETLSALPN}}},
	} {
		c, err := dialTLS(t, srv.addr, tc.cfg)
		if err != nil {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		if got := c.ConnectionState().PeerCertificates[0]; got.Equal(mustLeaf(t, cert)) {
			t.Errorf("%s: got the challenge certificate", tc.name)
		}
		c.Close()
	}
	ch.ClearTLSALPN("new.example")
	if c, err := dialTLS(t, srv.addr, validator); err == nil {
		if c.ConnectionState().PeerCertificates[0].Equal(mustLeaf(t, cert)) {
			t.Error("the challenge certificate is served after ClearTLSALPN")
		}
		c.Close()
	}
	// Only the four ordinary connections reached the backend.
	testenv.Eventually(t, 5*time.Second, "the ordinary connections at the backend", func() bool { return conns.Load() >= 4 })
	if n := conns.Load(); n != 4 {
		t.Errorf("%d connections reached the backend; want the 4 ordinary ones (validations never do)", n)
	}
}

func mustLeaf(t *testing.T, c *tls.Certificate) *x509.Certificate {
	t.Helper()
	leaf, err := x509.ParseCertificate(c.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	return leaf
}

// TestHTTPChallenges: the http-01 listener answers pending tokens only,
// and nothing else: other paths, methods and cleared tokens are 404,
// oversized headers are refused.
func TestHTTPChallenges(t *testing.T) {
	ch := NewChallenges()
	ch.SetHTTP("tok", "tok.thumb")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- ch.ServeHTTPChallenges(ctx, ln, slog.New(slog.DiscardHandler)) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	base := "http://" + ln.Addr().String()
	get := func(method, path string, hdr http.Header) (int, string) {
		req, _ := http.NewRequest(method, base+path, nil)
		for k, v := range hdr {
			req.Header[k] = v
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}
	if code, body := get("GET", "/.well-known/acme-challenge/tok", nil); code != 200 || body != "tok.thumb" {
		t.Errorf("pending token: %d %q", code, body)
	}
	for _, tc := range []struct{ method, path string }{
		{"GET", "/.well-known/acme-challenge/other"},
		{"GET", "/.well-known/acme-challenge/"},
		{"GET", "/"},
		{"GET", "/tok"},
		{"POST", "/.well-known/acme-challenge/tok"},
	} {
		if code, _ := get(tc.method, tc.path, nil); code != 404 {
			t.Errorf("%s %s: %d, want 404", tc.method, tc.path, code)
		}
	}
	if code, _ := get("GET", "/.well-known/acme-challenge/tok", http.Header{"X-Big": {strings.Repeat("a", 64<<10)}}); code != http.StatusRequestHeaderFieldsTooLarge {
		t.Errorf("64 KiB of headers: %d, want 431", code)
	}
	ch.ClearHTTP("tok")
	if code, _ := get("GET", "/.well-known/acme-challenge/tok", nil); code != 404 {
		t.Errorf("cleared token: %d, want 404", code)
	}
}

// TestChallengeConnLimit: the http-01 listener holds Accept while its
// connection bound is reached, and accepts again once one closes.
func TestChallengeConnLimit(t *testing.T) {
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer inner.Close()
	ln := &limitedListener{Listener: inner, slots: make(chan struct{}, 2)}
	accepted := make(chan net.Conn, 3)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted <- c
		}
	}()
	for range 3 {
		c, err := net.Dial("tcp", inner.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
	}
	first, second := <-accepted, <-accepted
	select {
	case <-accepted:
		t.Fatal("a third connection was accepted beyond the bound of 2")
	case <-time.After(200 * time.Millisecond):
	}
	first.Close()
	first.Close() // a second Close releases nothing more
	select {
	case c := <-accepted:
		c.Close()
	case <-time.After(5 * time.Second):
		t.Fatal("no connection accepted after one closed")
	}
	second.Close()
	// The accept loop's next Accept holds one slot while it waits.
	testenv.Eventually(t, 5*time.Second, "the slots released", func() bool { return len(ln.slots) <= 1 })
}
