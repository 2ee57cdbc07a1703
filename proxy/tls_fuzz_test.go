package proxy

import (
	"bytes"
	"context"
	"crypto"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/sealproxy/sealproxy/proxy/config"
)

// FuzzTLSClientHello feeds arbitrary bytes as a client's first flight to
// the handshake path of a listener built as sealproxy builds it (Build:
// two certificates chosen by SNI, optional client certificates checked
// against a CA, a CRL and allow rules; then Server.handshake over
// recordConn). The client then either hangs up or stays silent until the
// deadline. Properties: no panic; the handshake fails (one flight cannot
// complete it) within a bound, with an error the metrics can classify;
// when the SNI names a host one of the certificates covers, the chosen
// certificate covers it.
func FuzzTLSClientHello(f *testing.F) {
	s, cfg := fuzzTLSServer(f)
	for _, hello := range clientHelloSeeds(f) {
		f.Add(hello, false)
		f.Add(hello, true)
	}
	f.Fuzz(func(t *testing.T, flight []byte, silent bool) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		fc := &flightConn{r: bytes.NewReader(flight), silent: silent}
		c := &conn{s: s, cfg: cfg.cfg, m: cfg.m, raw: fc, start: time.Now(), ctx: ctx, cancel: cancel}
		start := time.Now()
		tc, err := s.handshake(c)
		if took := time.Since(start); took > 10*time.Second {
			t.Fatalf("handshake took %v", took)
		}
		if err == nil {
			tc.Close()
			t.Fatalf("a handshake completed from one client flight of %d bytes", len(flight))
		}
		if handshakeErrorKind(err) == "" {
			t.Fatalf("unclassified handshake error %v", err)
		}
		if c.sni != "" || c.client != "" {
			t.Fatalf("failed handshake set sni %q client %q", c.sni, c.client)
		}
	})
}

// fuzzTLSServer builds one listener from a configuration file, as
// sealproxy run does, and a Server for it that never accepts.
func fuzzTLSServer(f *testing.F) (*Server, *serverState) {
	p := newPKI(f)
	dir := f.TempDir()
	keys := map[string]*tls.Certificate{}
	p.web.WriteFiles(f, dir, "web")
	p.api.WriteFiles(f, dir, "api")
	p.ca.WriteCA(f, dir, "clients.pem")
	if err := os.WriteFile(filepath.Join(dir, "clients.crl"), p.ca.CRL(f, p.ca.Client(f, "bob").Cert), 0o644); err != nil {
		f.Fatal(err)
	}
	keys["web"], keys["api"] = tlsCert(f, p.web), tlsCert(f, p.api)
	cfg, err := config.Parse(filepath.Join(dir, "sealproxy.toml"), []byte(buildKeys+`
[[listener]]
name = "fuzz"
listen = "127.0.0.1:0"
mode = "offload"
keys = ["web", "api"]
backends = ["127.0.0.1:1"]
[listener.tls]
alpn = ["h2", "http/1.1"]
client_auth = "require"
client_ca = "clients.pem"
crl = ["clients.crl"]
[listener.tls.allow]
cn = ["alice"]
`))
	if err != nil {
		f.Fatal(err)
	}
	signers := map[string]crypto.Signer{"web": p.web.Key, "api": p.api.Key}
	open := func(_ context.Context, k *config.Key) (crypto.Signer, error) { return signers[k.Name], nil }
	lcs, err := Build(context.Background(), cfg, open, nil)
	if err != nil {
		f.Fatal(err)
	}
	lc := lcs[0]
	choose := lc.TLS.GetCertificate
	lc.TLS.GetCertificate = func(h *tls.ClientHelloInfo) (*tls.Certificate, error) {
		cert, err := choose(h)
		if err != nil || cert == nil {
			panic("no certificate for a ClientHello")
		}
		name := h.ServerName
		for _, k := range keys {
			if k.Leaf.VerifyHostname(name) == nil && cert.Leaf.VerifyHostname(name) != nil {
				panic("SNI " + name + " got certificate " + cert.Leaf.Subject.CommonName + " that does not cover it")
			}
		}
		return cert, nil
	}
	s, err := NewServer(idleListener{}, lc, nil)
	if err != nil {
		f.Fatal(err)
	}
	return s, s.state.Load()
}

// clientHelloSeeds captures first flights of crypto/tls clients and
// derives truncated, oversized and fragmented variants.
func clientHelloSeeds(tb testing.TB) [][]byte {
	var out [][]byte
	hellos := []*tls.Config{
		{ServerName: "web.test", NextProtos: []string{"h2", "http/1.1"}},
		{ServerName: "api.test", MaxVersion: tls.VersionTLS12},
		{ServerName: "x.web.test", MinVersion: tls.VersionTLS13},
		{ServerName: "API.TEST.", CipherSuites: []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256}, MaxVersion: tls.VersionTLS12},
		{InsecureSkipVerify: true},
	}
	for _, cfg := range hellos {
		out = append(out, captureClientHello(tb, cfg))
	}
	h := out[0]
	out = append(out,
		h[:1], h[:5], h[:len(h)/2], h[:len(h)-1],
		append(bytes.Clone(h), h...),                    // a second hello
		append(bytes.Clone(h), 0x14, 3, 3, 0, 1, 1),     // and a ChangeCipherSpec
		append(bytes.Clone(h), 0x15, 3, 3, 0, 2, 2, 40), // and an alert
		append(bytes.Clone(h), 0x17, 3, 3, 0x40, 0x01),  // and a record cut short
		withRecordLength(h, 0x4001),                     // longer than a record may be
		withRecordLength(h, 0xffff),
		append(withRecordLength(h, len(h)-5+20000), make([]byte, 20000)...), // padded beyond 16 KiB
		withHandshakeLength(h, 0xffffff),
		withHandshakeLength(h, 0),
		fragment(h, 1), fragment(h, 7), fragment(h, 100),
		[]byte("\x80\x2e\x01\x03\x01\x00\x15\x00\x00\x00\x10\x07\x00\xc0\x03\x00\x80\x01\x00\x80\x06\x00\x40\x04\x00\x80\x02\x00\x80"), // SSLv2
		[]byte("GET / HTTP/1.1\r\nHost: web.test\r\n\r\n"),
		[]byte("PROXY TCP4 192.0.2.1 192.0.2.2 1 2\r\n"),
		nil,
	)
	return out
}

// captureClientHello returns what a crypto/tls client sends first.
func captureClientHello(tb testing.TB, cfg *tls.Config) []byte {
	tb.Helper()
	rec := &flightConn{r: bytes.NewReader(nil)}
	c := tls.Client(rec, cfg)
	_ = c.Handshake() // fails at EOF, after the ClientHello
	if len(rec.sent) < 5 || rec.sent[0] != 0x16 {
		tb.Fatalf("no ClientHello captured: %x", rec.sent)
	}
	return rec.sent
}

// withRecordLength rewrites the first record header's length.
func withRecordLength(h []byte, n int) []byte {
	out := bytes.Clone(h)
	binary.BigEndian.PutUint16(out[3:5], uint16(n))
	return out
}

// withHandshakeLength rewrites the ClientHello message's 24-bit length.
func withHandshakeLength(h []byte, n int) []byte {
	out := bytes.Clone(h)
	out[6], out[7], out[8] = byte(n>>16), byte(n>>8), byte(n)
	return out
}

// fragment splits the first record's body into records of size bytes.
func fragment(h []byte, size int) []byte {
	n := int(binary.BigEndian.Uint16(h[3:5]))
	body := h[5 : 5+n]
	var out []byte
	for len(body) > 0 {
		k := min(size, len(body))
		out = append(out, h[0], h[1], h[2], byte(k>>8), byte(k))
		out = append(out, body[:k]...)
		body = body[k:]
	}
	return append(out, h[5+n:]...)
}

// flightConn is a client that sends one flight: Read returns it and then
// EOF, or, silent, a deadline error as if the client said nothing more.
// Writes are recorded.
type flightConn struct {
	r      *bytes.Reader
	silent bool
	sent   []byte
}

func (c *flightConn) Read(p []byte) (int, error) {
	if c.r.Len() == 0 {
		if c.silent {
			return 0, os.ErrDeadlineExceeded
		}
		return 0, io.EOF
	}
	return c.r.Read(p)
}

func (c *flightConn) Write(p []byte) (int, error) {
	if len(c.sent) < 1<<16 {
		c.sent = append(c.sent, p...)
	}
	return len(p), nil
}

func (c *flightConn) Close() error        { return nil }
func (c *flightConn) LocalAddr() net.Addr { return &net.TCPAddr{IP: net.IPv4(192, 0, 2, 2), Port: 443} }
func (c *flightConn) RemoteAddr() net.Addr {
	return &net.TCPAddr{IP: net.IPv4(192, 0, 2, 1), Port: 50000}
}
func (c *flightConn) SetDeadline(time.Time) error      { return nil }
func (c *flightConn) SetReadDeadline(time.Time) error  { return nil }
func (c *flightConn) SetWriteDeadline(time.Time) error { return nil }

// idleListener is a listener no test serves.
type idleListener struct{}

func (idleListener) Accept() (net.Conn, error) { return nil, errors.New("idle listener") }
func (idleListener) Close() error              { return nil }
func (idleListener) Addr() net.Addr            { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)} }
