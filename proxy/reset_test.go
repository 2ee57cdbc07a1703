package proxy

import (
	"errors"
	"io"
	"net"
	"os"
	"testing"
	"time"

	"github.com/sealproxy/sealproxy/proxy/config"
	"github.com/sealproxy/sealproxy/testenv"
)

// TestBackendResetIsAnError: a backend that resets its connection in the
// middle of a response ends the client's connection as a backend error,
// not as a clean close (the readiness checks must not swallow the
// ECONNRESET, see wait_unix.go).
func TestBackendResetIsAnError(t *testing.T) {
	if testenv.UnderWine() {
		t.Skip("Wine 8 reads a reset that arrives behind unread data as a clean end (EOF), where Windows and Linux report the reset")
	}
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
	cfg := listenerConfig(config.ModeOffload, ln.Addr().String())
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
	closed := func(reason closeReason) float64 {
		return counter(srv.metrics.Closed.WithLabelValues("test", string(reason)))
	}
	testenv.Eventually(t, 10*time.Second, "the connection to be counted", func() bool { return closed(reasonBackendError)+closed(reasonBackendClosed) > 0 })
	if got := closed(reasonBackendError); got != 1 {
		t.Fatalf("backend_error = %v, backend_closed = %v: want the reset counted as a backend error", got, closed(reasonBackendClosed))
	}
}

// TestResetHandshakeIsClosed: a client that resets its connection during
// the handshake counts as closed, not as a protocol error, on every
// platform (Windows reports the reset with its own error code).
func TestResetHandshakeIsClosed(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err == nil {
			accepted <- c
		}
	}()
	client, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server := <-accepted
	defer server.Close()
	server.SetReadDeadline(time.Now().Add(10 * time.Second))
	read := make(chan error, 1)
	go func() {
		_, err := server.Read(make([]byte, 1))
		read <- err
	}()
	// The reset reaches a Read that waits, as in a handshake. (Wine turns a
	// reset that arrived before the Read into EOF.)
	time.Sleep(100 * time.Millisecond)
	client.(*net.TCPConn).SetLinger(0)
	client.Close() // RST
	err = <-read
	if err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read after the peer's reset: %v", err)
	}
	if errors.Is(err, io.EOF) {
		t.Skip("this stack reports the reset as a clean end (EOF): nothing to classify")
	}
	if kind := handshakeErrorKind(err); kind != "closed" {
		t.Fatalf("handshakeErrorKind(%v) = %q, want closed", err, kind)
	}
}
