package main

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// The backend reads one command byte from each connection:
//
//	'E'                 echo everything until EOF
//	'S' + 8-byte length read exactly that many bytes, answer one byte
//	'D' + 8-byte length write that many bytes
//
// so no mode depends on how a terminator relays a half-close.
const (
	cmdEcho   = 'E'
	cmdSink   = 'S'
	cmdSource = 'D'
)

// backend serves the commands above on ln until ctx ends.
func backend(ctx context.Context, ln net.Listener) {
	go func() { <-ctx.Done(); ln.Close() }()
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go serveBackend(c)
	}
}

func serveBackend(c net.Conn) {
	defer c.Close()
	var hdr [9]byte
	if _, err := io.ReadFull(c, hdr[:1]); err != nil {
		return
	}
	switch hdr[0] {
	case cmdEcho:
		_, _ = io.Copy(c, c)
	case cmdSink, cmdSource:
		if _, err := io.ReadFull(c, hdr[1:]); err != nil {
			return
		}
		n := int64(binary.BigEndian.Uint64(hdr[1:]))
		if hdr[0] == cmdSink {
			if m, _ := io.CopyN(io.Discard, c, n); m == n {
				_, _ = c.Write([]byte{1})
			}
			return
		}
		_, _ = io.CopyN(c, zeroReader{}, n)
		// Wait for the client to close first, so the last bytes are
		// not lost to a reset.
		_, _ = io.Copy(io.Discard, c)
	}
}

type zeroReader struct{}

func (zeroReader) Read(p []byte) (int, error) { clear(p); return len(p), nil }

// client dials a terminator with full TLS 1.3 handshakes and nothing to
// resume a session from.
type client struct {
	addr string
	tls  *tls.Config
	// timeout bounds every dial, handshake and exchange.
	timeout time.Duration
}

func newClient(addr string, base *tls.Config) *client {
	cfg := base.Clone()
	cfg.MinVersion = tls.VersionTLS13
	cfg.ClientSessionCache = nil
	// Debian 12's OpenSSL 3.0 has no ML-KEM: X25519 for every terminator
	// keeps the comparison like for like.
	cfg.CurvePreferences = []tls.CurveID{tls.X25519}
	return &client{addr: addr, tls: cfg, timeout: 30 * time.Second}
}

// open dials, completes the handshake and one 1-byte echo through the
// backend, so the connection is established end to end.
func (c *client) open(ctx context.Context) (*tls.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	d := tls.Dialer{Config: c.tls}
	nc, err := d.DialContext(ctx, "tcp", c.addr)
	if err != nil {
		return nil, err
	}
	t := nc.(*tls.Conn)
	_ = t.SetDeadline(time.Now().Add(c.timeout))
	var b [1]byte
	_, err = t.Write([]byte{cmdEcho, 'x'})
	if err == nil {
		_, err = io.ReadFull(t, b[:])
	}
	if err != nil {
		t.Close()
		return nil, fmt.Errorf("first echo: %w", err)
	}
	_ = t.SetDeadline(time.Time{})
	return t, nil
}

// handshakes makes n connections, conc at a time, each a full handshake
// and one echo, and closes them.
func (c *client) handshakes(ctx context.Context, n, conc int) (tls.ConnectionState, error) {
	var (
		next  atomic.Int64
		wg    sync.WaitGroup
		once  sync.Once
		first error
		state tls.ConnectionState
		mu    sync.Mutex
	)
	for range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= int64(n) {
				t, err := c.open(ctx)
				if err != nil {
					once.Do(func() { first = err })
					return
				}
				mu.Lock()
				state = t.ConnectionState()
				mu.Unlock()
				t.Close()
			}
		}()
	}
	wg.Wait()
	return state, first
}

// bulk streams n bytes to the backend (up) or from it (down) over one
// connection.
func (c *client) bulk(ctx context.Context, n int64, up bool) error {
	d := tls.Dialer{Config: c.tls}
	nc, err := d.DialContext(ctx, "tcp", c.addr)
	if err != nil {
		return err
	}
	t := nc.(*tls.Conn)
	defer t.Close()
	_ = t.SetDeadline(time.Now().Add(10 * time.Minute))
	var hdr [9]byte
	hdr[0] = cmdSource
	if up {
		hdr[0] = cmdSink
	}
	binary.BigEndian.PutUint64(hdr[1:], uint64(n))
	if _, err := t.Write(hdr[:]); err != nil {
		return err
	}
	if up {
		if _, err := io.CopyBuffer(t, io.LimitReader(zeroReader{}, n), make([]byte, 64<<10)); err != nil {
			return err
		}
		var ack [1]byte
		_, err = io.ReadFull(t, ack[:])
		return err
	}
	m, err := io.CopyBuffer(io.Discard, io.LimitReader(t, n), make([]byte, 64<<10))
	if err == nil && m != n {
		err = fmt.Errorf("received %d of %d bytes", m, n)
	}
	return err
}

// pingpong sends n messages of size bytes one after the other and
// returns each round trip's duration, sorted.
func (c *client) pingpong(ctx context.Context, n, size int) ([]time.Duration, error) {
	t, err := c.open(ctx)
	if err != nil {
		return nil, err
	}
	defer t.Close()
	_ = t.SetDeadline(time.Now().Add(10 * time.Minute))
	msg, got := make([]byte, size), make([]byte, size)
	rtts := make([]time.Duration, 0, n)
	for range n {
		start := time.Now()
		if _, err := t.Write(msg); err != nil {
			return nil, err
		}
		if _, err := io.ReadFull(t, got); err != nil {
			return nil, err
		}
		rtts = append(rtts, time.Since(start))
	}
	slices.Sort(rtts)
	return rtts, nil
}

func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(p * float64(len(sorted)-1))
	return sorted[i]
}

// idle opens n connections, conc at a time, and returns them open; the
// caller closes them.
func (c *client) idle(ctx context.Context, n, conc int) ([]*tls.Conn, error) {
	conns := make([]*tls.Conn, n)
	var (
		next atomic.Int64
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
	)
	for range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := next.Add(1) - 1
				if i >= int64(n) {
					return
				}
				t, err := c.open(ctx)
				if err != nil {
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
					return
				}
				conns[i] = t
			}
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		closeAll(conns)
		return nil, err
	}
	return conns, nil
}

func closeAll(conns []*tls.Conn) {
	for _, c := range conns {
		if c != nil {
			c.Close()
		}
	}
}
