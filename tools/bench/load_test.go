package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"io"
	"net"
	"os"
	"testing"

	"github.com/sealproxy/sealproxy/unlock"
)

// startTerminator runs the harness's backend and a crypto/tls terminator
// in front of it, and returns a client for it.
func startTerminator(t *testing.T) (*client, *pki) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	p, err := newPKI(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	bln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go backend(ctx, bln)
	cert, err := tls.LoadX509KeyPair(p.certFile, p.keyFile)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				b, err := net.Dial("tcp", bln.Addr().String())
				if err != nil {
					return
				}
				defer b.Close()
				go func() { _, _ = io.Copy(b, c) }()
				_, _ = io.Copy(c, b)
			}()
		}
	}()
	return newClient(ln.Addr().String(), &tls.Config{RootCAs: p.pool, ServerName: serverName}), p
}

func TestModes(t *testing.T) {
	c, _ := startTerminator(t)
	ctx := context.Background()

	st, err := c.handshakes(ctx, 20, 4)
	if err != nil {
		t.Fatal(err)
	}
	if st.Version != tls.VersionTLS13 || st.DidResume || st.CurveID != tls.X25519 {
		t.Errorf("handshake: version %x, resumed %v, curve %v; want a full TLS 1.3 handshake over X25519",
			st.Version, st.DidResume, st.CurveID)
	}
	for _, up := range []bool{true, false} {
		if err := c.bulk(ctx, 3<<20+7, up); err != nil {
			t.Fatalf("bulk (up %v): %v", up, err)
		}
	}
	rtts, err := c.pingpong(ctx, 50, 64)
	if err != nil {
		t.Fatal(err)
	}
	if len(rtts) != 50 || percentile(rtts, 0.5) > percentile(rtts, 0.99) {
		t.Errorf("pingpong: %d round trips, p50 %v > p99 %v?", len(rtts), percentile(rtts, 0.5), percentile(rtts, 0.99))
	}
	conns, err := c.idle(ctx, 10, 3)
	if err != nil {
		t.Fatal(err)
	}
	defer closeAll(conns)
	for i, conn := range conns {
		// Each idle connection is established end to end: it still echoes.
		if _, err := conn.Write([]byte("ping")); err != nil {
			t.Fatal(err)
		}
		got := make([]byte, 4)
		if _, err := io.ReadFull(conn, got); err != nil || string(got) != "ping" {
			t.Fatalf("idle connection %d: got %q, %v", i, got, err)
		}
	}
}

// TestBulkShort checks that a backend that stops early fails the bulk
// mode instead of passing.
func TestBulkShort(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	p, err := newPKI(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := tls.LoadX509KeyPair(p.certFile, p.keyFile)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		tc := tls.Server(c, &tls.Config{Certificates: []tls.Certificate{cert}})
		hdr := make([]byte, 9)
		_, _ = io.ReadFull(tc, hdr)
		_, _ = tc.Write(make([]byte, 1000)) // far less than asked
		tc.Close()
	}()
	c := newClient(ln.Addr().String(), &tls.Config{RootCAs: p.pool, ServerName: serverName})
	if err := c.bulk(context.Background(), 1<<20, false); err == nil {
		t.Fatal("bulk accepted a short stream")
	}
}

func TestSealKey(t *testing.T) {
	p, err := newPKI(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	jweFile, err := p.sealKey(ctx)
	if err != nil {
		t.Fatal(err)
	}
	jwe, _ := os.ReadFile(jweFile)
	keyPEM, _ := os.ReadFile(p.keyFile)
	if bytes.Contains(jwe, keyPEM) {
		t.Fatal("the JWE holds the key in the clear")
	}
	buf, err := unlock.Decrypt(ctx, jwe, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer buf.Destroy()
	if !bytes.Equal(buf.Bytes(), keyPEM) {
		t.Fatal("the sealed key does not recover to the key")
	}
}

func TestLoopbackOnly(t *testing.T) {
	for addr, ok := range map[string]bool{
		"127.0.0.1:8443": true, "[::1]:1": true, "10.0.0.1:8443": false, "example.com:443": false, "nonsense": false,
	} {
		if err := loopbackOnly(addr); (err == nil) != ok {
			t.Errorf("loopbackOnly(%q) = %v", addr, err)
		}
	}
}
