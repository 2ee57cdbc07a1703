package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sealproxy/sealproxy/proxy/config"
)

// Server serves one listener. Build it with NewServer, run it with Serve,
// and swap its configuration with Update while it runs.
type Server struct {
	ln    net.Listener
	opts  Options
	local *Limiter
	state atomic.Pointer[serverState]
	rr    atomic.Uint64

	tickets *ticketKeys

	wg    sync.WaitGroup
	mu    sync.Mutex
	conns map[*conn]struct{}
}

type serverState struct {
	cfg *ListenerConfig
	m   *listenerMetrics
}

// NewServer makes a server for ln; it does not start accepting.
func NewServer(ln net.Listener, cfg *ListenerConfig, opts *Options) (*Server, error) {
	s := &Server{ln: ln, opts: opts.withDefaults(), local: NewLimiter(0), conns: map[*conn]struct{}{}, tickets: newTicketKeys()}
	if err := s.Update(cfg); err != nil {
		return nil, err
	}
	startParker() // its descriptor and goroutine belong to the baseline
	return s, nil
}

// Addr is the listening address.
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// Config returns the configuration new connections use.
func (s *Server) Config() *ListenerConfig { return s.state.Load().cfg }

// Update swaps the configuration for new connections; open connections
// keep theirs. An invalid configuration is refused and the old one stays.
func (s *Server) Update(cfg *ListenerConfig) error {
	if err := cfg.check(); err != nil {
		return err
	}
	cfg = cfg.withDefaults()
	if cfg.revocation != nil {
		cfg.revocation.check.bind(s.opts.Metrics)
	}
	s.local.SetMax(cfg.MaxConns)
	s.tickets.apply(cfg.TLS)
	s.state.Store(&serverState{cfg: cfg, m: s.opts.Metrics.forListener(cfg.Name)})
	return nil
}

func (c *ListenerConfig) check() error {
	switch c.Mode {
	case config.ModeOffload, config.ModeBridge, config.ModeConnect:
		if c.TLS == nil {
			return fmt.Errorf("listener %q: mode %s needs a TLS configuration", c.Name, c.Mode)
		}
	case config.ModeEncrypt:
	default:
		return fmt.Errorf("listener %q: unknown mode %q", c.Name, c.Mode)
	}
	if (c.Mode == config.ModeBridge || c.Mode == config.ModeEncrypt) && c.Upstream == nil {
		return fmt.Errorf("listener %q: mode %s needs an upstream TLS configuration", c.Name, c.Mode)
	}
	if c.Mode != config.ModeConnect && len(c.Backends) == 0 {
		return fmt.Errorf("listener %q: no backend", c.Name)
	}
	if c.ProxyProtocol < 0 || c.ProxyProtocol > 2 {
		return fmt.Errorf("listener %q: PROXY protocol version %d (want 1 or 2)", c.Name, c.ProxyProtocol)
	}
	if c.Mode == config.ModeConnect && len(c.ConnectAllow) == 0 {
		return fmt.Errorf("listener %q: mode connect needs an allow-list", c.Name)
	}
	return nil
}

// Serve accepts connections until ctx ends, then stops accepting, lets
// open connections finish for up to Options.ShutdownTimeout, closes the
// rest and returns.
//
// The listener's connection slot is taken before Accept. When none is
// free the loop still accepts, tries once more, and refuses the
// connection at once (counted as rejected) instead of leaving clients to
// hang in the kernel's backlog. The global slot, shared with other
// listeners, is taken right after Accept: reserving it while waiting
// would let an idle listener starve busy ones.
func (s *Server) Serve(ctx context.Context) error {
	hard, cancelHard := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelHard()
	stop := context.AfterFunc(ctx, func() { _ = s.ln.Close() })
	defer stop()
	rotation := s.Config().TicketRotation
	if rotation <= 0 {
		rotation = DefaultTicketRotation
	}
	go s.rotateTicketsEvery(rotation, ctx.Done())

	var (
		backoff time.Duration
		serr    error
	)
	for {
		slot := s.local.TryAcquire()
		raw, err := s.ln.Accept()
		if err != nil {
			if slot {
				s.local.Release()
			}
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				if ctx.Err() == nil {
					serr = err
				}
				break
			}
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			s.opts.Log.Warn("accept failed; backing off", "listener", s.Config().Name, "err", err, "backoff", backoff)
			t := time.NewTimer(backoff)
			select {
			case <-t.C:
			case <-ctx.Done():
				t.Stop()
			}
			continue
		}
		backoff = 0
		if !slot && !s.local.TryAcquire() {
			s.refuse(raw, reasonListenerLimit)
			continue
		}
		if !s.opts.Global.TryAcquire() {
			s.local.Release()
			s.refuse(raw, reasonGlobalLimit)
			continue
		}
		st := s.state.Load()
		c := &conn{s: s, cfg: st.cfg, m: st.m, raw: raw, start: time.Now(),
			src: addrPort(raw.RemoteAddr()), dst: addrPort(raw.LocalAddr())}
		c.ctx, c.cancel = context.WithCancel(hard)
		s.track(c, true)
		s.wg.Add(1)
		go s.handle(c)
	}

	s.drain()
	return serr
}

// drain waits for open connections for up to ShutdownTimeout, then
// closes the rest and waits for them.
func (s *Server) drain() {
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	t := time.NewTimer(s.opts.ShutdownTimeout)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
		s.mu.Lock()
		for c := range s.conns {
			c.force(reasonShutdown)
		}
		s.mu.Unlock()
		<-done
	}
}

func (s *Server) release() {
	s.local.Release()
	s.opts.Global.Release()
}

func (s *Server) refuse(raw net.Conn, reason closeReason) {
	name := s.Config().Name
	s.opts.Metrics.Rejected.WithLabelValues(name, string(reason)).Inc()
	s.opts.Log.Debug("connection refused", "listener", name, "remote", raw.RemoteAddr().String(), "reason", string(reason))
	if tc, ok := raw.(*net.TCPConn); ok {
		_ = tc.SetLinger(0) // reset: the client learns at once
	}
	_ = raw.Close()
}

func (s *Server) track(c *conn, add bool) {
	s.mu.Lock()
	if add {
		s.conns[c] = struct{}{}
	} else {
		delete(s.conns, c)
	}
	s.mu.Unlock()
}

// conn is one client connection while it is handled.
type conn struct {
	s      *Server
	cfg    *ListenerConfig
	m      *listenerMetrics
	raw    net.Conn
	start  time.Time
	ctx    context.Context
	cancel context.CancelFunc
	forced atomic.Pointer[closeReason]
	// relay, once started, is woken by force: a parked direction learns
	// of a closed socket only that way (park_linux.go).
	relay atomic.Pointer[relay]

	mu      sync.Mutex
	backend net.Conn

	lifetime *time.Timer
	// src and dst are the client's addresses: the socket's, or what a
	// trusted PROXY header said.
	src, dst netip.AddrPort

	sni, client, backendName string
	// connectRule is the allow-list entry a CONNECT matched: its
	// destination's name in metrics.
	connectRule string
	tlsState    *tls.ConnectionState
}

// remote names the client for logs.
func (c *conn) remote() string {
	if c.src.IsValid() {
		return c.src.String()
	}
	return c.raw.RemoteAddr().String()
}

// force closes the connection from outside (lifetime, shutdown).
func (c *conn) force(reason closeReason) {
	c.forced.CompareAndSwap(nil, &reason)
	c.cancel()
	_ = c.raw.Close()
	c.mu.Lock()
	if c.backend != nil {
		_ = c.backend.Close()
	}
	c.mu.Unlock()
	if r := c.relay.Load(); r != nil {
		r.wake()
	}
}

// startRelay starts r for c, where force can wake it; a force that came
// first has closed the sockets, which the relay's first reads see.
func (c *conn) startRelay(r *relay, done func(closeReason)) {
	r.start(done)
	c.relay.Store(r) // after start: wake reads what start set
	if c.forced.Load() != nil {
		r.wake()
	}
}

func (c *conn) setBackend(b net.Conn) {
	c.mu.Lock()
	c.backend = b
	forced := c.forced.Load() != nil
	c.mu.Unlock()
	if forced {
		_ = b.Close()
	}
}

// handle takes a connection through the handshake, the CONNECT request
// and the backend dial, then hands it to a relay of two fresh goroutines
// and returns: the deep handshake stack is freed, not parked for the
// connection's lifetime.
func (s *Server) handle(c *conn) {
	c.m.accepted.Inc()
	c.m.active.Inc()
	if c.cfg.MaxLifetime > 0 {
		c.lifetime = time.AfterFunc(c.cfg.MaxLifetime, func() { c.force(reasonMaxLifetime) })
	}
	r, reason, err := s.setup(c)
	if r == nil {
		s.finish(c, nil, reason, err)
		return
	}
	// The context served the handshake and the dial; from here force
	// closes the sockets. Cancelling now unlinks it from the server's.
	c.cancel()
	c.startRelay(r, func(reason closeReason) { s.finish(c, r, reason, nil) })
}

// finish logs the connection's one line and releases everything it held.
func (s *Server) finish(c *conn, r *relay, reason closeReason, err error) {
	if c.lifetime != nil {
		c.lifetime.Stop()
	}
	if f := c.forced.Load(); f != nil {
		reason = *f
	}
	s.opts.Metrics.Closed.WithLabelValues(c.cfg.Name, string(reason)).Inc()
	var in, out int64
	if r != nil {
		in, out = r.in.Load(), r.out.Load()
	}
	attrs := []slog.Attr{
		slog.String("listener", c.cfg.Name),
		slog.String("remote", c.remote()),
		slog.String("sni", c.sni),
		slog.String("client", c.client),
		slog.String("backend", c.backendName),
		slog.Int64("bytes_in", in),
		slog.Int64("bytes_out", out),
		slog.Duration("duration", time.Since(c.start)),
		slog.String("reason", string(reason)),
	}
	if err != nil {
		attrs = append(attrs, slog.String("err", err.Error()))
	}
	s.opts.Log.LogAttrs(context.Background(), slog.LevelInfo, "connection closed", attrs...)
	c.cancel()
	s.track(c, false)
	s.release()
	c.m.active.Dec()
	s.wg.Done()
}

// setup runs everything before the relay; on failure it closes the
// client and returns a nil relay with the reason.
func (s *Server) setup(c *conn) (*relay, closeReason, error) {
	if trusted(c.cfg.AcceptProxyFrom, c.src) {
		_ = c.raw.SetReadDeadline(time.Now().Add(c.cfg.HandshakeTimeout))
		h, err := readProxyHeaderExact(c.raw)
		if err != nil {
			s.opts.Metrics.Rejected.WithLabelValues(c.cfg.Name, string(reasonBadProxyHeader)).Inc()
			_ = c.raw.Close()
			return nil, reasonBadProxyHeader, err
		}
		_ = c.raw.SetReadDeadline(time.Time{})
		if h.Src.IsValid() && !h.Local {
			c.src, c.dst = h.Src, h.Dst
		}
	}
	client := plainEndpoint(c.raw)
	if c.cfg.Mode != config.ModeEncrypt {
		tc, err := s.handshake(c)
		if err != nil {
			_ = c.raw.Close()
			return nil, reasonHandshakeFailed, err
		}
		if tc.ConnectionState().NegotiatedProtocol == ACMETLSALPN {
			_ = tc.Close() // a CA's tls-alpn-01 validation: it got its answer
			return nil, reasonACMEChallenge, nil
		}
		client = tlsEndpoint(tc, c.raw)
	}

	backends := c.cfg.Backends
	var early []byte
	if c.cfg.Mode == config.ModeConnect {
		dest, rest, err := readConnect(c, client.tls)
		if err != nil {
			client.close()
			return nil, reasonConnectRefused, err
		}
		backends = []Backend{{Network: "tcp", Address: dest}}
		early = rest
	}

	back, err := s.dialBackend(c, backends)
	if err != nil {
		reason, status := reasonBackendUnavailable, "502 Bad Gateway"
		if errors.Is(err, errForbiddenDestination) {
			reason, status = reasonConnectRefused, "403 Forbidden"
		}
		if c.cfg.Mode == config.ModeConnect {
			_ = c.raw.SetWriteDeadline(time.Now().Add(time.Second))
			_, _ = io.WriteString(client.rw, "HTTP/1.1 "+status+"\r\nContent-Length: 0\r\n\r\n")
		}
		client.close()
		return nil, reason, err
	}
	if c.cfg.Mode == config.ModeConnect {
		_ = c.raw.SetWriteDeadline(time.Now().Add(c.cfg.HandshakeTimeout))
		_, err = io.WriteString(client.rw, "HTTP/1.1 200 Connection established\r\n\r\n")
		if err == nil && len(early) > 0 {
			_ = back.raw.SetWriteDeadline(time.Now().Add(c.cfg.ConnectTimeout))
			_, err = back.rw.Write(early)
		}
		if err != nil {
			client.close()
			back.close()
			return nil, reasonClientError, err
		}
	}
	if len(back.pending) > 0 { // the backend spoke first, during setup
		_ = c.raw.SetWriteDeadline(time.Now().Add(c.cfg.IdleTimeout))
		if _, err := client.rw.Write(back.pending); err != nil {
			client.close()
			back.close()
			return nil, reasonClientError, err
		}
	}
	r := &relay{
		idle: c.cfg.IdleTimeout, closeTimeout: c.cfg.CloseTimeout,
		inC: c.m.bytesIn, outC: c.m.bytesOut,
		client: client, backend: back,
	}
	if len(early) > 0 {
		r.in.Add(int64(len(early)))
		r.inC.Add(float64(len(early)))
	}
	if n := len(back.pending); n > 0 {
		r.out.Add(int64(n))
		r.outC.Add(float64(n))
		back.pending = nil
	}
	return r, "", nil
}

// trusted reports whether addr is in one of the prefixes.
func trusted(prefixes []netip.Prefix, addr netip.AddrPort) bool {
	for _, p := range prefixes {
		if p.Contains(addr.Addr()) {
			return true
		}
	}
	return false
}

// handshake runs the server handshake under the handshake deadline, so
// silent or slow clients cannot hold a slot.
func (s *Server) handshake(c *conn) (*tls.Conn, error) {
	tc := tls.Server(serverRecordConn(c.raw), c.cfg.TLS)
	_ = c.raw.SetDeadline(time.Now().Add(c.cfg.HandshakeTimeout))
	start := time.Now()
	err := tc.HandshakeContext(c.ctx)
	if err != nil {
		kind := handshakeErrorKind(err)
		s.opts.Metrics.HandshakeErrors.WithLabelValues(c.cfg.Name, kind).Inc()
		return nil, fmt.Errorf("TLS handshake (%s): %w", kind, err)
	}
	c.m.handshake.Observe(time.Since(start).Seconds())
	_ = c.raw.SetDeadline(time.Time{})
	cs := tc.ConnectionState()
	if c.cfg.ProxyProtocol == 2 { // kept only for the header's TLVs
		c.tlsState = &cs
	}
	c.sni = cs.ServerName
	c.client = clientIdentity(&cs)
	return tc, nil
}

// handshakeErrorKind classifies a failed handshake for the metrics.
func handshakeErrorKind(err error) string {
	var (
		verr *tls.CertificateVerificationError
		herr tls.RecordHeaderError
		aerr tls.AlertError
	)
	switch {
	case errors.Is(err, os.ErrDeadlineExceeded), errors.Is(err, context.DeadlineExceeded):
		return "timeout"
	case errors.Is(err, errClientDenied):
		return "client_denied"
	case errors.Is(err, errClientRevoked):
		return "client_revoked"
	case errors.Is(err, errCRLStale):
		return "crl_stale"
	case errors.Is(err, errOCSPUnavailable):
		return "ocsp_unavailable"
	case errors.As(err, &verr):
		return "client_cert"
	case errors.As(err, &herr):
		return "not_tls"
	case errors.As(err, &aerr):
		return "alert"
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, net.ErrClosed),
		errors.Is(err, errConnReset), errors.Is(err, context.Canceled):
		return "closed"
	}
	return "protocol"
}
