//go:build linux

package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// sources are the loopback addresses clients dial from: each has its own
// ephemeral port range, so tens of thousands of connections (and their
// TIME_WAITs) to one proxy port do not run out of ports.
const sources = 16

// dialer opens client connections to the proxy.
type dialer struct {
	pool *x509.CertPool
	next atomic.Uint32
}

func (d *dialer) tcp(ctx context.Context, addr string) (*net.TCPConn, error) {
	ip := net.IPv4(127, 0, 0, byte(2+d.next.Add(1)%sources))
	nd := net.Dialer{LocalAddr: &net.TCPAddr{IP: ip}, Timeout: 30 * time.Second}
	c, err := nd.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("dialing %s from %s: %w", addr, ip, err)
	}
	return c.(*net.TCPConn), nil
}

func (d *dialer) tlsConfig() *tls.Config {
	return &tls.Config{RootCAs: d.pool, ServerName: serverName, MinVersion: tls.VersionTLS13}
}

// tls opens a TLS 1.3 connection through the proxy and returns it with
// its handshake time.
func (d *dialer) tls(ctx context.Context, addr string) (*tls.Conn, time.Duration, error) {
	raw, err := d.tcp(ctx, addr)
	if err != nil {
		return nil, 0, err
	}
	start := time.Now()
	c := tls.Client(raw, d.tlsConfig())
	hctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := c.HandshakeContext(hctx); err != nil {
		raw.Close()
		return nil, 0, fmt.Errorf("TLS handshake with %s: %w", addr, err)
	}
	return c, time.Since(start), nil
}

// echo proves a connection: a message goes through the proxy to the echo
// backend and comes back intact.
func echo(c net.Conn, msg string) error {
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	defer c.SetDeadline(time.Time{})
	if _, err := io.WriteString(c, msg); err != nil {
		return fmt.Errorf("echo write: %w", err)
	}
	buf := make([]byte, len(msg))
	if _, err := io.ReadFull(c, buf); err != nil {
		return fmt.Errorf("echo read: %w", err)
	}
	if string(buf) != msg {
		return fmt.Errorf("echo: sent %q, got %q", msg, buf)
	}
	return nil
}

// backend is an in-process TCP server on 127.0.0.1.
type backend struct {
	ln    net.Listener
	wg    sync.WaitGroup
	mu    sync.Mutex
	conns map[net.Conn]struct{}
	open  atomic.Int64
}

func newBackend(serve func(net.Conn)) (*backend, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("backend listener: %w", err)
	}
	b := &backend{ln: ln, conns: map[net.Conn]struct{}{}}
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				if errors.Is(err, net.ErrClosed) {
					return
				}
				time.Sleep(10 * time.Millisecond) // EMFILE and the like
				continue
			}
			b.mu.Lock()
			b.conns[c] = struct{}{}
			b.mu.Unlock()
			b.open.Add(1)
			b.wg.Add(1)
			go func() {
				defer b.wg.Done()
				serve(c)
				c.Close()
				b.open.Add(-1)
				b.mu.Lock()
				delete(b.conns, c)
				b.mu.Unlock()
			}()
		}
	}()
	return b, nil
}

func (b *backend) addr() string { return b.ln.Addr().String() }

func (b *backend) close() {
	b.ln.Close()
	b.mu.Lock()
	for c := range b.conns {
		c.Close()
	}
	b.mu.Unlock()
	b.wg.Wait()
}

// serveEcho echoes with a small buffer: 9,000 idle echo connections
// should not cost the harness 32 KiB each.
func serveEcho(c net.Conn) {
	buf := make([]byte, 2048)
	for {
		n, err := c.Read(buf)
		if n > 0 {
			if _, werr := c.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// streamer writes up to limit bytes to every connection as fast as the
// connection takes them, and counts what each write call returned.
type streamer struct {
	limit    int64
	written  atomic.Int64 // over all connections
	finished atomic.Int64 // connections that got all of limit
	mu       sync.Mutex
	perConn  []*atomic.Int64
}

func (s *streamer) serve(c net.Conn) {
	n := new(atomic.Int64)
	s.mu.Lock()
	s.perConn = append(s.perConn, n)
	s.mu.Unlock()
	buf := make([]byte, 64<<10)
	for i := range buf {
		buf[i] = byte(i)
	}
	for n.Load() < s.limit {
		w, err := c.Write(buf[:min(int64(len(buf)), s.limit-n.Load())])
		n.Add(int64(w))
		s.written.Add(int64(w))
		if err != nil {
			return
		}
	}
	s.finished.Add(1)
	// Keep the connection open until the client closes it.
	_, _ = io.Copy(io.Discard, c)
}

func (s *streamer) maxPerConn() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	var m int64
	for _, n := range s.perConn {
		m = max(m, n.Load())
	}
	return m
}

// clientHello is the first flight of a real TLS 1.3 client, as bytes:
// records whose contents the hostile cases alter.
func clientHello(pool *x509.CertPool, maxVersion uint16) ([]byte, error) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	cfg := &tls.Config{RootCAs: pool, ServerName: serverName, MaxVersion: maxVersion}
	if maxVersion != 0 && maxVersion < tls.VersionTLS12 {
		cfg.MinVersion = maxVersion
	}
	go func() { _ = tls.Client(a, cfg).Handshake() }()
	_ = b.SetReadDeadline(time.Now().Add(10 * time.Second))
	hdr := make([]byte, 5)
	if _, err := io.ReadFull(b, hdr); err != nil {
		return nil, fmt.Errorf("capturing a ClientHello: %w", err)
	}
	body := make([]byte, binary.BigEndian.Uint16(hdr[3:]))
	if _, err := io.ReadFull(b, body); err != nil {
		return nil, fmt.Errorf("capturing a ClientHello: %w", err)
	}
	return append(hdr, body...), nil
}

// closedByPeer reports whether err means the other side closed or reset
// the connection (as opposed to our own deadline).
func closedByPeer(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) ||
		errors.Is(err, io.ErrUnexpectedEOF)
}

// waitClosed reads and discards until the peer closes (nil) or the
// deadline passes (an error).
func waitClosed(c net.Conn, deadline time.Time) error {
	_ = c.SetReadDeadline(deadline)
	buf := make([]byte, 4096)
	for {
		_, err := c.Read(buf)
		if err == nil {
			continue
		}
		if closedByPeer(err) {
			return nil
		}
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return errors.New("still open at our deadline: the proxy never closed it")
		}
		return fmt.Errorf("waiting for the proxy to close: %w", err)
	}
}

// latencies summarises durations.
type latencies struct {
	Count int     `json:"count"`
	P50ms float64 `json:"p50_ms"`
	P99ms float64 `json:"p99_ms"`
	MaxMs float64 `json:"max_ms"`
}

func summarise(ds []time.Duration) latencies {
	if len(ds) == 0 {
		return latencies{}
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	q := func(p float64) time.Duration { return s[min(len(s)-1, int(p*float64(len(s))))] }
	return latencies{Count: len(s), P50ms: ms(q(0.50)), P99ms: ms(q(0.99)), MaxMs: ms(s[len(s)-1])}
}

// parallel runs f(i) for i in [0, n) on workers goroutines and returns
// the errors, at most maxErrs of them, and how many there were.
func parallel(n, workers int, f func(i int) error) (errs []error, count int) {
	var (
		next atomic.Int64
		mu   sync.Mutex
		wg   sync.WaitGroup
	)
	for range min(workers, n) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				if err := f(i); err != nil {
					mu.Lock()
					count++
					if len(errs) < maxErrs {
						errs = append(errs, err)
					}
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	return errs, count
}

const maxErrs = 5
