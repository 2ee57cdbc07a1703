package testenv

import (
	"crypto/tls"
	"io"
	"net"
	"sync"
	"testing"
)

// Echo is a TCP backend on 127.0.0.1 that echoes each connection and
// half-closes when the client does, so a client reading to EOF gets
// back exactly what it sent.
type Echo struct {
	// Addr is the backend's host:port.
	Addr string
	// IDs receives the common name of each client certificate a TLS
	// backend verified (buffered; extra names are dropped, not waited on).
	IDs chan string

	ln    net.Listener
	wg    sync.WaitGroup
	mu    sync.Mutex
	conns map[net.Conn]struct{}
	shut  bool
}

// StartEcho starts an echo backend, stopped (and its connections
// waited for) at cleanup. With tlsCfg it speaks TLS.
func StartEcho(t testing.TB, tlsCfg *tls.Config) *Echo {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e := &Echo{Addr: ln.Addr().String(), IDs: make(chan string, 100), ln: ln, conns: map[net.Conn]struct{}{}}
	e.wg.Add(1)
	go func() {
		defer e.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			e.mu.Lock()
			if e.shut {
				e.mu.Unlock()
				c.Close()
				return
			}
			e.conns[c] = struct{}{}
			e.mu.Unlock()
			e.wg.Add(1)
			go func() {
				defer e.wg.Done()
				e.serve(c, tlsCfg)
				e.mu.Lock()
				delete(e.conns, c)
				e.mu.Unlock()
			}()
		}
	}()
	t.Cleanup(e.Close)
	return e
}

func (e *Echo) serve(c net.Conn, tlsCfg *tls.Config) {
	defer c.Close()
	if tlsCfg == nil {
		_, _ = io.Copy(c, c)
		_ = c.(*net.TCPConn).CloseWrite()
		return
	}
	tc := tls.Server(c, tlsCfg)
	if err := tc.Handshake(); err != nil {
		return
	}
	if cs := tc.ConnectionState(); len(cs.PeerCertificates) > 0 {
		select {
		case e.IDs <- cs.PeerCertificates[0].Subject.CommonName:
		default:
		}
	}
	_, _ = io.Copy(tc, tc)
	_ = tc.CloseWrite()
}

// Close stops accepting, closes the open connections and waits for
// their goroutines.
func (e *Echo) Close() {
	e.ln.Close()
	e.mu.Lock()
	e.shut = true
	for c := range e.conns {
		c.Close()
	}
	e.mu.Unlock()
	e.wg.Wait()
}
