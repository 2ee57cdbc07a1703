// Package proxy is sealproxy's data plane: TLS listeners that offload,
// bridge, encrypt or tunnel (CONNECT) TCP connections to backends.
//
// It knows keys only as crypto.Signer inside tls.Certificate values; where
// keys come from (sealed files, HSMs, the Windows store) is the caller's
// business. A Server serves one listener; a Group runs many and reloads
// them atomically.
package proxy

import (
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strings"
	"time"

	"github.com/sealproxy/sealproxy/proxy/config"
)

// ListenerConfig is everything a Server needs for new connections. A
// Server holds one at a time and swaps it atomically (Server.Update);
// connections keep the one they started with.
type ListenerConfig struct {
	Name   string
	Listen string // host:port or unix:PATH
	Mode   config.Mode

	// TLS accepts client connections (offload, bridge, connect); its
	// GetCertificate usually is a CertChooser's.
	TLS *tls.Config
	// Upstream dials TLS to the backend (bridge, encrypt). An empty
	// ServerName is filled with each backend's host.
	Upstream *tls.Config

	Backends   []Backend
	RoundRobin bool
	// ConnectAllow lists the destinations a connect listener permits.
	ConnectAllow []string

	// AcceptProxyFrom lists the networks (load balancers) whose
	// connections must start with a PROXY header (v1 or v2); the header's
	// source becomes the client address. Others connect directly.
	AcceptProxyFrom []netip.Prefix

	// TicketRotation is the period of session ticket key rotation
	// (default DefaultTicketRotation); read when Serve starts.
	TicketRotation time.Duration

	// ProxyProtocol sends a PROXY header of this version (1 or 2; 0:
	// none) to the backend before anything else; v2 carries TLS facts.
	ProxyProtocol int

	MaxConns int // 0: no per-listener bound
	// Timeouts; zero means the configuration's default (10s, 10s, 5m,
	// 10s). IdleTimeout ends connections silent both ways; CloseTimeout
	// ends the remaining direction silent that long after a half-close.
	HandshakeTimeout time.Duration
	ConnectTimeout   time.Duration
	IdleTimeout      time.Duration
	CloseTimeout     time.Duration
	MaxLifetime      time.Duration // 0: unlimited

	// revocation is what Build knows of the keys' certificates and the
	// client check, for the metrics and the expiry watch.
	revocation *revocationInfo
}

// withDefaults returns a copy with zero timeouts set to the defaults.
func (c *ListenerConfig) withDefaults() *ListenerConfig {
	out := *c
	for _, d := range []struct {
		v   *time.Duration
		def time.Duration
	}{
		{&out.HandshakeTimeout, config.DefaultHandshakeTimeout},
		{&out.ConnectTimeout, config.DefaultConnectTimeout},
		{&out.IdleTimeout, config.DefaultIdleTimeout},
		{&out.CloseTimeout, config.DefaultCloseTimeout},
	} {
		if *d.v <= 0 {
			*d.v = d.def
		}
	}
	return &out
}

// Backend is a destination: TCP host:port or a unix socket.
type Backend struct {
	Network string // tcp or unix
	Address string
}

// ParseBackend parses host:port or unix:PATH.
func ParseBackend(s string) Backend {
	if p, ok := strings.CutPrefix(s, "unix:"); ok {
		return Backend{Network: "unix", Address: p}
	}
	return Backend{Network: "tcp", Address: s}
}

func (b Backend) String() string {
	if b.Network == "unix" {
		return "unix:" + b.Address
	}
	return b.Address
}

// host is the name to verify a TLS backend against by default.
func (b Backend) host() string {
	if b.Network != "tcp" {
		return ""
	}
	h, _, err := net.SplitHostPort(b.Address)
	if err != nil {
		return b.Address
	}
	return h
}

// Listen opens the listening socket of an address (host:port or
// unix:PATH). A unix socket file left behind by a process that is gone
// (nothing answers on it) is replaced; a live one is not.
func Listen(addr string) (net.Listener, error) {
	b := ParseBackend(addr)
	if b.Network == "unix" {
		if fi, err := os.Lstat(b.Address); err == nil && fi.Mode()&os.ModeSocket != 0 {
			if c, err := net.DialTimeout("unix", b.Address, time.Second); err == nil {
				c.Close()
				return nil, fmt.Errorf("listen unix %s: another process is serving this socket", b.Address)
			}
			_ = os.Remove(b.Address)
		}
	}
	return net.Listen(b.Network, b.Address)
}

// Options are shared by the servers of one process.
type Options struct {
	Log     *slog.Logger
	Metrics *Metrics
	// Global bounds connections over all servers sharing it.
	Global *Limiter
	// ShutdownTimeout bounds the drain when Serve's context ends; then
	// the remaining connections are closed. Default 30s.
	ShutdownTimeout time.Duration
	// Listen opens a listener's socket (a Group's new and moved
	// listeners); nil means Listen. The daemon passes one that also knows
	// the sockets systemd hands over ("systemd:NAME").
	Listen func(addr string) (net.Listener, error)
}

func (o *Options) withDefaults() Options {
	var out Options
	if o != nil {
		out = *o
	}
	if out.Log == nil {
		out.Log = slog.New(slog.DiscardHandler)
	}
	if out.Metrics == nil {
		out.Metrics = NewMetrics(nil)
	}
	if out.ShutdownTimeout <= 0 {
		out.ShutdownTimeout = 30 * time.Second
	}
	if out.Listen == nil {
		out.Listen = Listen
	}
	return out
}
