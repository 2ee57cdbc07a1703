package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"time"
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
		if c.ctx.Err() != nil {
			return nil, err
		}
		s.opts.Metrics.BackendErrors.WithLabelValues(c.cfg.Name, b.String()).Inc()
		s.opts.Log.Warn("backend failed", "listener", c.cfg.Name, "backend", b.String(), "err", err)
		errs = append(errs, err)
	}
	return nil, errors.Join(errs...)
}

func (s *Server) dialOne(c *conn, b Backend) (*endpoint, error) {
	ctx, cancel := context.WithTimeout(c.ctx, c.cfg.ConnectTimeout)
	defer cancel()
	var d net.Dialer
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
	if c.cfg.Mode != ModeBridge && c.cfg.Mode != ModeEncrypt {
		return plainEndpoint(raw), nil
	}
	cfg := c.cfg.Upstream
	if cfg.ServerName == "" {
		cfg = cfg.Clone()
		cfg.ServerName = b.host()
	}
	tc := tls.Client(&recordConn{Conn: raw}, cfg)
	if dl, ok := ctx.Deadline(); ok {
		_ = raw.SetDeadline(dl)
	}
	if err := tc.HandshakeContext(ctx); err != nil {
		_ = raw.Close()
		return nil, fmt.Errorf("TLS to backend %s: %w", b, err)
	}
	_ = raw.SetDeadline(time.Time{})
	return tlsEndpoint(tc, raw), nil
}
