package proxy

import (
	"errors"
	"io"
	"net"
	"testing"
	"time"
)

// TestBackendResetIsAnError: a backend that resets its connection in the
// middle of a response ends the client's connection as a backend error,
// not as a clean close (the readiness checks must not swallow the
// ECONNRESET, see wait_unix.go).
func TestBackendResetIsAnError(t *testing.T) {
	p := newPKI(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				buf := make([]byte, 1)
				if _, err := c.Read(buf); err != nil { // the client's request
					c.Close()
					return
				}
				c.Write(make([]byte, 64<<10))
				c.(*net.TCPConn).SetLinger(0)
				c.Close() // RST
			}()
		}
	}()
	cfg := listenerConfig(ModeOffload, ln.Addr().String())
	cfg.TLS = serverTLSConfig(t, p.web)
	srv := start(t, cfg, nil)
	c, err := dialTLS(t, srv.addr, clientConfig(p, "web.test"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(30 * time.Second))
	var ne net.Error
	_, err = io.Copy(io.Discard, c)
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("the client's connection outlived the backend's reset: %v", err)
	}
	if err == nil {
		t.Fatal("the client saw a clean end (close_notify) of a stream the backend cut: want an error, so the cut shows")
	}
	closed := func(reason string) float64 { return counter(srv.metrics.Closed.WithLabelValues("test", reason)) }
	waitFor(t, "the connection to be counted", func() bool { return closed(reasonBackendError)+closed(reasonBackendClosed) > 0 })
	if got := closed(reasonBackendError); got != 1 {
		t.Fatalf("backend_error = %v, backend_closed = %v: want the reset counted as a backend error", got, closed(reasonBackendClosed))
	}
}
