package main

import (
	"net"
	"testing"
	"time"
)

// TestLimitListener: beyond max open connections, a new one is reset at
// once (and counted), and a slot freed by Close is usable again.
func TestLimitListener(t *testing.T) {
	tcp, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := &limitListener{Listener: tcp, max: 2}
	defer l.Close()
	accepted := make(chan net.Conn, 8)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			accepted <- c
		}
	}()
	dial := func() net.Conn {
		c, err := net.Dial("tcp", tcp.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	next := func() net.Conn {
		select {
		case c := <-accepted:
			return c
		case <-time.After(10 * time.Second):
			t.Fatal("a connection within the bound was not accepted")
			return nil
		}
	}
	dial()
	first := next()
	dial()
	next()

	// The reset may even beat the dialer's own check of its connect.
	if over, err := net.Dial("tcp", tcp.Addr().String()); err == nil {
		defer over.Close()
		_ = over.SetReadDeadline(time.Now().Add(10 * time.Second))
		if n, err := over.Read(make([]byte, 1)); err == nil || isTimeout(err) {
			t.Fatalf("a connection over the bound: read %d, %v; want it reset at once", n, err)
		}
	}
	if got := l.refused.Load(); got != 1 {
		t.Fatalf("refused = %d, want 1", got)
	}

	first.Close()
	first.Close() // a second Close frees nothing more
	dial()
	next()
	if got := l.open.Load(); got != 2 {
		t.Fatalf("open = %d, want 2", got)
	}
}

func isTimeout(err error) bool {
	ne, ok := err.(net.Error)
	return ok && ne.Timeout()
}
