package proxy

import (
	"context"
	"crypto/tls"
	"io"
	"net"
	"testing"
	"time"

	"github.com/sealproxy/sealproxy/proxy/pool"
)

// poolBenchApp accepts TCP connections and hands each to the pool's
// "open" service, then runs serve on the plaintext (in this process, as
// BenchmarkHandshake's echo backend is).
func poolBenchApp(b *testing.B, e *poolEnv, serve func(net.Conn)) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				plain, _, err := pool.Server(ctx, e.path, c, "open")
				if err != nil {
					return
				}
				defer plain.Close()
				serve(plain)
			}()
		}
	}()
	return ln.Addr().String()
}

func echoPlain(c net.Conn) { _, _ = io.Copy(c, c) }

// BenchmarkPoolHandshake is BenchmarkHandshake through the pool: TCP
// accept, fd passing, the handshake in the pool, the plaintext fd back.
func BenchmarkPoolHandshake(b *testing.B) {
	defer reportCPU(b)()
	e := newPoolEnv(b, webService)
	addr := poolBenchApp(b, e, echoPlain)
	cfg := &tls.Config{RootCAs: e.ca.Pool(), ServerName: "web.test"}
	for b.Loop() {
		c, err := tls.Dial("tcp", addr, cfg)
		if err != nil {
			b.Fatal(err)
		}
		c.Close()
	}
}

// BenchmarkPoolCopy is BenchmarkCopy/offload through the pool: the
// remote writes 256 KiB chunks, the application reads and discards them.
func BenchmarkPoolCopy(b *testing.B) {
	defer reportCPU(b)()
	e := newPoolEnv(b, webService)
	addr := poolBenchApp(b, e, func(c net.Conn) { _, _ = io.Copy(io.Discard, c) })
	c, err := e.dialTLS(b, addr, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	chunk := make([]byte, 256<<10)
	b.SetBytes(int64(len(chunk)))
	b.ResetTimer()
	for b.Loop() {
		if _, err := c.Write(chunk); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkPoolPingPong64 is BenchmarkPingPong64 through the pool: the
// application echoes on the plaintext fd.
func BenchmarkPoolPingPong64(b *testing.B) {
	defer reportCPU(b)()
	e := newPoolEnv(b, webService)
	addr := poolBenchApp(b, e, echoPlain)
	c, err := e.dialTLS(b, addr, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	msg, buf := make([]byte, 64), make([]byte, 64)
	for b.Loop() {
		if _, err := c.Write(msg); err != nil {
			b.Fatal(err)
		}
		if _, err := io.ReadFull(c, buf); err != nil {
			b.Fatal(err)
		}
	}
}
