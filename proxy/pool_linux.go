package proxy

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/sealproxy/sealproxy/proxy/pool"
)

// Pool serves the TLS pool's unix socket (docs/pool.md): one request per
// connection, answered with the plaintext end of a socketpair, then
// relayed like a proxy connection. It shares the Server machinery
// (limits, the relay, the log line, the drain) through an embedded
// Server whose listener is the pool socket.
type Pool struct {
	srv   *Server
	ln    *net.UnixListener
	state atomic.Pointer[poolState]

	// peerCred reads the caller's credentials; tests replace it to play
	// another uid.
	peerCred func(*net.UnixConn) (cred, error)
}

type poolState struct {
	cfg *PoolConfig
	// lcs are the services' listener-shaped settings (name "pool/NAME",
	// the timeouts) and ms their metrics, for the shared relay.
	lcs map[string]*ListenerConfig
	ms  map[string]*listenerMetrics
}

type cred struct{ pid, uid, gid uint32 }

// NewPool binds the pool's socket (mode and group applied) with listen
// (nil: Listen); Serve starts it.
func NewPool(cfg *PoolConfig, opts *Options, listen func(string) (net.Listener, error)) (*Pool, error) {
	if listen == nil {
		listen = Listen
	}
	if !strings.HasPrefix(cfg.Listen, "unix:") {
		return nil, fmt.Errorf("pool: listen %q: want unix:PATH", cfg.Listen)
	}
	ln, err := listen(cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("pool: %w", err)
	}
	ul, ok := ln.(*net.UnixListener)
	if !ok {
		ln.Close()
		return nil, fmt.Errorf("pool: %s is not a unix socket", cfg.Listen)
	}
	if err := setSocketMode(cfg); err != nil {
		ln.Close()
		return nil, err
	}
	p := &Pool{ln: ul, peerCred: peerCred}
	p.srv = &Server{ln: ln, opts: opts.withDefaults(), local: NewLimiter(0), conns: map[*conn]struct{}{}, tickets: newTicketKeys()}
	p.Update(cfg)
	return p, nil
}

// setSocketMode applies the socket file's mode and group.
func setSocketMode(cfg *PoolConfig) error {
	path := strings.TrimPrefix(cfg.Listen, "unix:")
	if err := os.Chmod(path, cfg.FileMode); err != nil {
		return fmt.Errorf("pool: %w", err)
	}
	if cfg.GID >= 0 {
		if err := os.Chown(path, -1, cfg.GID); err != nil {
			return fmt.Errorf("pool: %w", err)
		}
	}
	return nil
}

// Addr is the socket's address.
func (p *Pool) Addr() net.Addr { return p.ln.Addr() }

// Update swaps the services and policy for new requests; requests in
// flight and relayed connections keep theirs.
func (p *Pool) Update(cfg *PoolConfig) {
	st := &poolState{cfg: cfg, lcs: map[string]*ListenerConfig{}, ms: map[string]*listenerMetrics{}}
	for name, s := range cfg.Services {
		lc := (&ListenerConfig{Name: "pool/" + name, HandshakeTimeout: cfg.HandshakeTimeout, IdleTimeout: cfg.IdleTimeout,
			CloseTimeout: cfg.CloseTimeout, MaxLifetime: cfg.MaxLifetime}).withDefaults()
		st.lcs[name] = lc
		st.ms[name] = p.srv.opts.Metrics.forListener(lc.Name)
		if !s.Client {
			p.srv.tickets.apply(s.TLS)
		}
		if s.check != nil {
			s.check.bind(p.srv.opts.Metrics)
		}
	}
	p.srv.local.SetMax(cfg.MaxConns)
	if old := p.state.Load(); old != nil && (old.cfg.FileMode != cfg.FileMode || old.cfg.GID != cfg.GID) {
		// A reload's mode or group: the socket stays, its file changes.
		if err := setSocketMode(cfg); err != nil {
			p.srv.opts.Log.Warn("pool socket mode or group unchanged", "err", err)
		}
	}
	p.state.Store(st)
}

// Serve accepts requests until ctx ends, then drains like a Server.
func (p *Pool) Serve(ctx context.Context) error {
	s := p.srv
	hard, cancelHard := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelHard()
	stop := context.AfterFunc(ctx, func() { _ = p.ln.Close() })
	defer stop()
	rotate := time.NewTicker(DefaultTicketRotation)
	defer rotate.Stop()
	go func() {
		for {
			select {
			case <-rotate.C:
				s.tickets.rotate()
				for _, svc := range p.state.Load().cfg.Services {
					if !svc.Client {
						s.tickets.apply(svc.TLS)
					}
				}
			case <-ctx.Done():
				return
			}
		}
	}()
	var (
		backoff time.Duration
		serr    error
	)
	for {
		uc, err := p.ln.AcceptUnix()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				if ctx.Err() == nil {
					serr = err
				}
				break
			}
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			s.opts.Log.Warn("accept failed; backing off", "listener", "pool", "err", err, "backoff", backoff)
			select {
			case <-time.After(backoff):
			case <-ctx.Done():
			}
			continue
		}
		backoff = 0
		// A full pool answers at once: the application never waits in
		// the backlog or for a slot.
		if !s.local.TryAcquire() {
			go p.refuseBusy(uc, "the pool is at max_connections")
			continue
		}
		if !s.opts.Global.TryAcquire() {
			s.local.Release()
			go p.refuseBusy(uc, "the daemon is at max_connections")
			continue
		}
		s.wg.Add(1)
		go p.handle(hard, uc)
	}
	s.drain()
	return serr
}

// busyWait bounds how long a busy refusal waits for the request: an
// application that sends at once is answered at once.
const busyWait = time.Second

func (p *Pool) refuseBusy(uc *net.UnixConn, msg string) {
	p.srv.opts.Metrics.Rejected.WithLabelValues("pool", "busy").Inc()
	p.srv.opts.Metrics.PoolRequests.WithLabelValues("", pool.ReasonBusy).Inc()
	// Take the request (and close its descriptors) before answering:
	// closing with it unread would make the application's send fail
	// (EPIPE) before it could read why.
	_ = uc.SetDeadline(time.Now().Add(busyWait))
	_, fds, _ := readRequest(uc)
	for _, fd := range fds {
		_ = syscall.Close(fd)
	}
	_, _ = uc.Write((&pool.Answer{Reason: pool.ReasonBusy, Error: msg}).Marshal())
	_ = uc.Close()
}

// refusal is a failure answer on its way: the reason, and the error for
// the answer and the log.
type refusal struct {
	reason string
	err    error
}

func (r *refusal) Error() string { return r.err.Error() }

// handle answers one request and, on success, starts the relay.
func (p *Pool) handle(hard context.Context, uc *net.UnixConn) {
	s := p.srv
	st := p.state.Load() // this request's configuration, whatever reloads follow
	defer uc.Close()
	service, app, cr, rf := p.request(uc, st)
	if rf != nil {
		p.refuse(uc, service, rf)
		s.release()
		s.wg.Done()
		return
	}
	svc := st.cfg.Services[service.Service]
	lc, m := st.lcs[svc.Name], st.ms[svc.Name]
	c := &conn{s: s, cfg: lc, m: m, raw: app, start: time.Now(),
		src: addrPort(app.RemoteAddr()), dst: addrPort(app.LocalAddr()),
		backendName: "app pid=" + strconv.FormatUint(uint64(cr.pid), 10) + " uid=" + strconv.FormatUint(uint64(cr.uid), 10)}
	c.ctx, c.cancel = context.WithCancel(hard)
	s.track(c, true)
	m.accepted.Inc()
	m.active.Inc()
	if lc.MaxLifetime > 0 {
		c.lifetime = time.AfterFunc(lc.MaxLifetime, func() { c.force(reasonMaxLifetime) })
	}

	var presented string
	tc, err := svc.requestTLS(service.ServerName, service.ALPN, &presented)
	if err != nil {
		_ = app.Close()
		p.refuse(uc, service, &refusal{pool.ReasonBadRequest, err})
		s.finish(c, nil, reasonHandshakeFailed, err)
		return
	}
	tlsConn, err := p.handshake(c, svc, tc)
	if err != nil {
		_ = app.Close()
		reason := pool.ReasonHandshakeFailed
		switch handshakeErrorKind(err) {
		case "client_denied", "client_revoked", "client_cert":
			reason = pool.ReasonPeerRefused
		}
		p.refuse(uc, service, &refusal{reason, err})
		s.finish(c, nil, reasonHandshakeFailed, err)
		return
	}

	mine, theirs, err := socketpair()
	if err != nil {
		tlsConn.Close()
		p.refuse(uc, service, &refusal{pool.ReasonHandshakeFailed, err})
		s.finish(c, nil, reasonHandshakeFailed, err)
		return
	}
	cs := tlsConn.ConnectionState()
	ans := &pool.Answer{OK: true, Version: versionName(cs.Version), Cipher: tls.CipherSuiteName(cs.CipherSuite),
		ALPN: cs.NegotiatedProtocol, ServerName: cs.ServerName, Peer: peerOf(&cs), LocalKey: presented}
	if svc.Client {
		ans.ServerName = tc.ServerName
	}
	_ = uc.SetWriteDeadline(time.Now().Add(lc.HandshakeTimeout))
	_, _, err = uc.WriteMsgUnix(ans.Marshal(), syscall.UnixRights(theirs), nil)
	_ = syscall.Close(theirs) // the application has its own now
	if err != nil {
		mine.Close()
		tlsConn.Close()
		s.opts.Metrics.PoolRequests.WithLabelValues(svc.Name, "answer_failed").Inc()
		s.finish(c, nil, reasonClientError, fmt.Errorf("sending the answer: %w", err))
		return
	}
	s.opts.Metrics.PoolRequests.WithLabelValues(svc.Name, "ok").Inc()
	c.setBackend(mine)
	r := &relay{
		idle: lc.IdleTimeout, closeTimeout: lc.CloseTimeout,
		inC: m.bytesIn, outC: m.bytesOut,
		client: tlsEndpoint(tlsConn, app), backend: plainEndpoint(mine),
	}
	c.cancel()
	c.startRelay(r, func(reason closeReason) { s.finish(c, r, reason, nil) })
}

// refuse answers a failure (no fd), counts it and logs why.
func (p *Pool) refuse(uc *net.UnixConn, req *pool.Request, rf *refusal) {
	service := ""
	if req != nil && rf.reason != pool.ReasonUnknownService && rf.reason != pool.ReasonBadRequest {
		service = req.Service
	}
	p.srv.opts.Metrics.PoolRequests.WithLabelValues(service, rf.reason).Inc()
	if rf.reason != pool.ReasonHandshakeFailed && rf.reason != pool.ReasonPeerRefused {
		// Handshake failures have the connection's log line.
		p.srv.opts.Log.Info("pool request refused", "service", service, "reason", rf.reason, "err", rf.err.Error())
	}
	_ = uc.SetWriteDeadline(time.Now().Add(time.Second))
	_, _ = uc.Write((&pool.Answer{Reason: rf.reason, Error: rf.err.Error()}).Marshal())
}

// request reads and checks one request: its line, its one fd, the
// service, the caller's right to it. On success it owns the passed
// socket as a net.Conn (the received descriptor itself is closed).
func (p *Pool) request(uc *net.UnixConn, st *poolState) (*pool.Request, net.Conn, cred, *refusal) {
	bad := func(format string, args ...any) *refusal {
		return &refusal{pool.ReasonBadRequest, fmt.Errorf(format, args...)}
	}
	cr, err := p.peerCred(uc)
	if err != nil {
		return nil, nil, cr, bad("reading peer credentials: %v", err)
	}
	_ = uc.SetReadDeadline(time.Now().Add(st.cfg.HandshakeTimeout))
	line, fds, err := readRequest(uc)
	defer func() {
		for _, fd := range fds {
			_ = syscall.Close(fd)
		}
	}()
	if err != nil {
		return nil, nil, cr, bad("%v", err)
	}
	req, err := pool.ParseRequest(line)
	if err != nil {
		return nil, nil, cr, &refusal{pool.ReasonBadRequest, err}
	}
	if len(fds) != 1 {
		return req, nil, cr, bad("the request came with %d file descriptors; want exactly one (SCM_RIGHTS)", len(fds))
	}
	svc, ok := st.cfg.Services[req.Service]
	if !ok {
		return req, nil, cr, &refusal{pool.ReasonUnknownService, fmt.Errorf("no service %q", req.Service)}
	}
	if !slices.Contains(svc.UIDs, cr.uid) && !slices.Contains(svc.GIDs, cr.gid) {
		return req, nil, cr, &refusal{pool.ReasonNotAllowed, fmt.Errorf("uid %d (gid %d) may not use service %q", cr.uid, cr.gid, req.Service)}
	}
	f := os.NewFile(uintptr(fds[0]), "pool-request")
	fds = nil
	c, err := net.FileConn(f) // a duplicate: the received descriptor is closed below
	f.Close()
	if err != nil {
		return req, nil, cr, bad("the file descriptor is not a socket: %v", err)
	}
	switch c.(type) {
	case *net.TCPConn:
	case *net.UnixConn:
		if c.LocalAddr().Network() != "unix" {
			c.Close()
			return req, nil, cr, bad("the file descriptor is not a stream socket")
		}
	default:
		c.Close()
		return req, nil, cr, bad("the file descriptor is not a stream socket")
	}
	if c.RemoteAddr() == nil {
		// A listening or unconnected socket: nothing to run TLS with (and
		// the connection's log line needs the peer's address).
		c.Close()
		return req, nil, cr, bad("the socket is not connected")
	}
	return req, c, cr, nil
}

// readRequest reads the request line and the descriptors that came with
// it. One request per connection: bytes after the line are refused.
func readRequest(uc *net.UnixConn) ([]byte, []int, error) {
	var (
		line []byte
		fds  []int
	)
	buf := make([]byte, pool.MaxRequest+1)
	// Room for a few descriptors, so that two are seen (and refused)
	// rather than truncated.
	oob := make([]byte, syscall.CmsgSpace(8*4))
	for {
		n, oobn, flags, _, err := uc.ReadMsgUnix(buf[len(line):], oob)
		if oobn > 0 {
			if msgs, perr := syscall.ParseSocketControlMessage(oob[:oobn]); perr == nil {
				for _, m := range msgs {
					if got, err := syscall.ParseUnixRights(&m); err == nil {
						fds = append(fds, got...)
					}
				}
			}
		}
		if flags&syscall.MSG_CTRUNC != 0 {
			return nil, fds, errors.New("too many file descriptors (control data truncated)")
		}
		line = buf[:len(line)+n]
		if i := bytes.IndexByte(line, '\n'); i >= 0 {
			if i != len(line)-1 {
				return nil, fds, errors.New("bytes after the request line: one request per connection")
			}
			return line, fds, nil
		}
		if len(line) > pool.MaxRequest {
			return nil, fds, fmt.Errorf("no newline in the first %d bytes", pool.MaxRequest)
		}
		if err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				return nil, fds, errors.New("no complete request line before handshake_timeout")
			}
			return nil, fds, fmt.Errorf("reading the request: %v", err)
		}
	}
}

// handshake runs the service's handshake on the passed socket under the
// handshake timeout.
func (p *Pool) handshake(c *conn, svc *PoolService, tc *tls.Config) (*tls.Conn, error) {
	var t *tls.Conn
	if svc.Client {
		t = tls.Client(newRecordConn(c.raw), tc)
	} else {
		t = tls.Server(serverRecordConn(c.raw), tc)
	}
	_ = c.raw.SetDeadline(time.Now().Add(c.cfg.HandshakeTimeout))
	start := time.Now()
	if err := t.HandshakeContext(c.ctx); err != nil {
		kind := handshakeErrorKind(err)
		p.srv.opts.Metrics.HandshakeErrors.WithLabelValues(c.cfg.Name, kind).Inc()
		return nil, fmt.Errorf("TLS handshake (%s): %w", kind, err)
	}
	c.m.handshake.Observe(time.Since(start).Seconds())
	_ = c.raw.SetDeadline(time.Time{})
	cs := t.ConnectionState()
	c.sni = cs.ServerName
	c.client = clientIdentity(&cs)
	return t, nil
}

// peerOf is the answer's identity of the peer: empty without a
// certificate.
func peerOf(cs *tls.ConnectionState) *pool.Peer {
	if len(cs.PeerCertificates) == 0 {
		return &pool.Peer{}
	}
	leaf := cs.PeerCertificates[0]
	sum := sha256.Sum256(leaf.RawSubjectPublicKeyInfo)
	p := &pool.Peer{CN: leaf.Subject.CommonName, DNS: leaf.DNSNames, SPKISHA256: base64.StdEncoding.EncodeToString(sum[:])}
	for _, u := range leaf.URIs {
		p.URI = append(p.URI, u.String())
	}
	return p
}

func versionName(v uint16) string {
	switch v {
	case tls.VersionTLS13:
		return "TLS1.3"
	case tls.VersionTLS12:
		return "TLS1.2"
	case tls.VersionTLS11:
		return "TLS1.1"
	case tls.VersionTLS10:
		return "TLS1.0"
	}
	return fmt.Sprintf("0x%04x", v)
}

// socketpair returns the pool's end as a net.Conn and the application's
// as a descriptor to pass.
func socketpair() (net.Conn, int, error) {
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, -1, fmt.Errorf("socketpair: %w", err)
	}
	f := os.NewFile(uintptr(fds[0]), "pool-plaintext")
	c, err := net.FileConn(f)
	f.Close()
	if err != nil {
		_ = syscall.Close(fds[1])
		return nil, -1, err
	}
	return c, fds[1], nil
}

// peerCred reads SO_PEERCRED: the credentials of the process that
// connected, as the kernel recorded them at connect (they cannot be
// forged by the caller).
func peerCred(uc *net.UnixConn) (cred, error) {
	raw, err := uc.SyscallConn()
	if err != nil {
		return cred{}, err
	}
	var (
		u    *syscall.Ucred
		uerr error
	)
	if err := raw.Control(func(fd uintptr) {
		u, uerr = syscall.GetsockoptUcred(int(fd), syscall.SOL_SOCKET, syscall.SO_PEERCRED)
	}); err != nil {
		return cred{}, err
	}
	if uerr != nil {
		return cred{}, uerr
	}
	return cred{pid: uint32(u.Pid), uid: u.Uid, gid: u.Gid}, nil
}

// setGlobal shares the daemon-wide connection bound.
func (p *Pool) setGlobal(l *Limiter) { p.srv.opts.Global = l }

// closeListener closes a pool that never served.
func (p *Pool) closeListener() { _ = p.ln.Close() }

// requestTLS is the service's TLS configuration for one request: the
// request's server_name (client role) and ALPN applied, and a hook that
// records which key was presented.
func (ps *PoolService) requestTLS(serverName string, alpn []string, presented *string) (*tls.Config, error) {
	tc := ps.TLS.Clone()
	if len(alpn) > 0 {
		for _, p := range alpn {
			if len(ps.TLS.NextProtos) > 0 && !slices.Contains(ps.TLS.NextProtos, p) {
				return nil, fmt.Errorf("alpn %q is not among the service's protocols", p)
			}
		}
		tc.NextProtos = alpn
	}
	if ps.Client {
		if serverName != "" {
			tc.ServerName = serverName
		}
		if tc.ServerName == "" {
			return nil, fmt.Errorf("service %q has no server_name: the request must name the server to verify", ps.Name)
		}
		if len(tc.Certificates) > 0 {
			leaf := tc.Certificates[0].Leaf
			tc.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
				*presented = ps.keyNames[leaf]
				return &tc.Certificates[0], nil
			}
		}
		return tc, nil
	}
	if get := tc.GetCertificate; get != nil {
		tc.GetCertificate = func(h *tls.ClientHelloInfo) (*tls.Certificate, error) {
			c, err := get(h)
			if c != nil {
				*presented = ps.keyNames[c.Leaf]
			}
			return c, err
		}
	}
	return tc, nil
}
