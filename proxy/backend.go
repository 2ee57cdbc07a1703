package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"syscall"
	"time"

	"github.com/sealproxy/sealproxy/proxy/config"
)

// dialBackend connects to the first backend that answers (in turn from a
// rotating start with round-robin), completing upstream TLS where the
// mode wants it; a failed TLS handshake moves on like a refused connect.
func (s *Server) dialBackend(c *conn, backends []Backend) (*endpoint, error) {
	start := 0
	if c.cfg.RoundRobin && len(backends) > 1 {
		start = int(s.rr.Add(1)-1) % len(backends)
	}
	var errs []error
	for i := range backends {
		b := backends[(start+i)%len(backends)]
		ep, err := s.dialOne(c, b)
		if err == nil {
			c.backendName = b.String()
			return ep, nil
		}
		if c.ctx.Err() != nil || errors.Is(err, errForbiddenDestination) {
			return nil, err
		}
		label := b.String()
		if c.cfg.Mode == config.ModeConnect {
			label = c.connectRule // the client chose b: bounded by the allow-list
		}
		s.opts.Metrics.BackendErrors.WithLabelValues(c.cfg.Name, label).Inc()
		s.opts.Log.Warn("backend failed", "listener", c.cfg.Name, "backend", b.String(), "err", err)
		errs = append(errs, err)
	}
	return nil, errors.Join(errs...)
}

func (s *Server) dialOne(c *conn, b Backend) (*endpoint, error) {
	ctx, cancel := context.WithTimeout(c.ctx, c.cfg.ConnectTimeout)
	defer cancel()
	var d net.Dialer
	if c.cfg.Mode == config.ModeConnect {
		allow := c.cfg.ConnectAllow
		d.ControlContext = func(_ context.Context, _, address string, _ syscall.RawConn) error {
			return checkConnectAddr(allow, address)
		}
	}
	raw, err := d.DialContext(ctx, b.Network, b.Address)
	if err != nil {
		return nil, fmt.Errorf("connecting to backend %s: %w", b, err)
	}
	c.setBackend(raw)
	if v := c.cfg.ProxyProtocol; v != 0 {
		// The header goes first on the socket, before any upstream TLS.
		src, dst := c.src, c.dst
		var hdr []byte
		if v == 1 {
			hdr = AppendProxyV1(nil, src, dst)
		} else {
			hdr = AppendProxyV2(nil, src, dst, tlsTLVs(c.tlsState))
		}
		if dl, ok := ctx.Deadline(); ok {
			_ = raw.SetWriteDeadline(dl)
		}
		if _, err := raw.Write(hdr); err != nil {
			_ = raw.Close()
			return nil, fmt.Errorf("sending PROXY header to backend %s: %w", b, err)
		}
		_ = raw.SetWriteDeadline(time.Time{})
	}
	if c.cfg.Mode != config.ModeBridge && c.cfg.Mode != config.ModeEncrypt {
		return plainEndpoint(raw), nil
	}
	cfg := c.cfg.Upstream
	if cfg.ServerName == "" {
		cfg = cfg.Clone()
		cfg.ServerName = b.host()
	}
	rc := newRecordConn(raw)
	tc := tls.Client(rc, cfg)
	if dl, ok := ctx.Deadline(); ok {
		_ = raw.SetDeadline(dl)
	}
	if err := tc.HandshakeContext(ctx); err != nil {
		_ = raw.Close()
		return nil, fmt.Errorf("TLS to backend %s: %w", b, err)
	}
	ep := tlsEndpoint(tc, raw)
	if ep.pending, err = drainPostHandshake(tc, rc); err != nil {
		_ = raw.Close()
		return nil, fmt.Errorf("TLS to backend %s: %w", b, err)
	}
	_ = raw.SetDeadline(time.Time{})
	return ep, nil
}

// maxPending bounds what drainPostHandshake reads ahead.
const maxPending = 64 << 10

// drainPostHandshake processes what a TLS server sent right after its
// handshake (TLS 1.3 session tickets, usually) without waiting for more,
// so that the relay does not start inside crypto/tls waiting for data
// with a buffer and a grown stack. Application data read on the way is
// returned, for the client.
func drainPostHandshake(tc *tls.Conn, rc *recordConn) ([]byte, error) {
	if !canPeek {
		return nil, nil // the relay's first read handles tickets there
	}
	rc.nonblock = true
	defer func() { rc.nonblock = false }()
	bp := bufPool.Get().(*[]byte)
	defer bufPool.Put(bp)
	var out []byte
	for len(out) < maxPending {
		n, err := tc.Read(*bp)
		out = append(out, (*bp)[:n]...)
		switch {
		case errors.Is(err, errWouldBlock), errors.Is(err, io.EOF):
			return out, nil // EOF stays in crypto/tls for the relay to see
		case err != nil:
			return nil, err
		}
	}
	return out, nil
}
