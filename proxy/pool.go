package proxy

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/sealproxy/sealproxy/proxy/config"
)

// PoolConfig is what a Pool needs for new requests (docs/pool.md). A
// Pool holds one at a time and swaps it on reload; requests keep the one
// they started with.
type PoolConfig struct {
	Listen   string      // unix:PATH
	FileMode os.FileMode // of the socket file
	GID      int         // group of the socket file; -1: unchanged
	// MaxConns bounds requests and relayed connections together; beyond
	// it the pool answers busy.
	MaxConns int

	HandshakeTimeout, IdleTimeout, CloseTimeout, MaxLifetime time.Duration

	Services map[string]*PoolService
}

// PoolService is one service's policy.
type PoolService struct {
	Name string
	// Client is the role: the pool is the TLS client (the application
	// connected); otherwise the server (it accepted).
	Client bool
	// UIDs and GIDs may use the service (the peer credentials' uid and
	// primary gid); empty lists allow nobody.
	UIDs, GIDs []uint32
	// TLS is the policy: a server configuration (built as a listener's)
	// or a client one (as an upstream's, with the tls table's versions,
	// suites, curves and allow rules).
	TLS *tls.Config
	// keyNames names the [[key]] of each certificate the service may
	// present, by leaf: the answer's local_key.
	keyNames map[*x509.Certificate]string
	// check judges the peer's certificate (allow rules, CRLs, OCSP) as a
	// listener's does; nil when nothing is set.
	check *clientCheck
}

// BuildPool turns the [pool] of a validated configuration into a
// PoolConfig (nil without one), opening the keys its services use
// through open; the TLS settings are built by the same code as a
// listener's. With a nil open it only reads and checks the files.
func BuildPool(ctx context.Context, cfg *config.Config, open KeyOpener, log *slog.Logger) (*PoolConfig, error) {
	pl := &cfg.Pool
	if pl.Listen == "" {
		return nil, nil
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	key, staplers := keyLoader(ctx, cfg, open, log)
	pc := &PoolConfig{
		Listen: pl.Listen, FileMode: pl.FileMode, GID: pl.GID, MaxConns: pl.MaxConnections,
		HandshakeTimeout: pl.HandshakeTimeout, IdleTimeout: pl.IdleTimeout, CloseTimeout: pl.CloseTimeout,
		MaxLifetime: pl.MaxLifetime, Services: map[string]*PoolService{},
	}
	for i := range pl.Services {
		s := &pl.Services[i]
		ps := &PoolService{Name: s.Name, Client: s.Role == "client", UIDs: s.UIDs, GIDs: s.GIDs,
			keyNames: map[*x509.Certificate]string{}}
		fail := func(err error) (*PoolConfig, error) {
			return nil, fmt.Errorf("pool service %q: %w", s.Name, err)
		}
		if !ps.Client {
			var served []*tls.Certificate
			for _, name := range s.Keys {
				c, err := key(name)
				if err != nil {
					return fail(err)
				}
				served = append(served, c)
				if c != nil {
					ps.keyNames[c.Leaf] = name
				}
			}
			tc, check, err := serverTLS(ctx, cfg, &s.TLS, served, staplers, open != nil, log)
			if err != nil {
				return fail(err)
			}
			if check != nil {
				check.listener = "pool/" + s.Name
				ps.check = check
			}
			if s.TLS.SessionTickets != nil && !*s.TLS.SessionTickets {
				tc.SessionTicketsDisabled = true
			}
			ps.TLS = tc
		} else {
			var client *tls.Certificate
			if s.Key != "" {
				c, err := key(s.Key)
				if err != nil {
					return fail(fmt.Errorf("client key: %w", err))
				}
				client = c
				if c != nil {
					ps.keyNames[c.Leaf] = s.Key
				}
			}
			tc, err := upstreamTLS(cfg, &config.Upstream{CA: s.CA, ServerName: s.ServerName, ALPN: s.TLS.ALPN,
				MinVersion: s.TLS.MinVersion, MaxVersion: s.TLS.MaxVersion}, client)
			if err != nil {
				return fail(err)
			}
			// The tls table's suites, curves and allow rules (on the
			// server's certificate) as a listener builds them.
			policy := s.TLS
			policy.ClientAuth, policy.ClientCA, policy.CRL = "", "", nil
			sc, check, err := serverTLS(ctx, cfg, &policy, nil, nil, false, log)
			if err != nil {
				return fail(err)
			}
			if check != nil {
				check.listener = "pool/" + s.Name
				ps.check = check
			}
			tc.CipherSuites, tc.CurvePreferences, tc.VerifyConnection = sc.CipherSuites, sc.CurvePreferences, sc.VerifyConnection
			ps.TLS = tc
		}
		pc.Services[s.Name] = ps
	}
	return pc, nil
}
