package main

import (
	"context"
	"net"
	"path/filepath"
	"sync"
	"time"

	"github.com/sealproxy/sealproxy/cmd/internal/sandbox"
	"github.com/sealproxy/sealproxy/proxy"
	"github.com/sealproxy/sealproxy/proxy/config"
	"github.com/sealproxy/sealproxy/vault"
	"github.com/sealproxy/sealproxy/vault/acme"
	"github.com/sealproxy/sealproxy/vault/keyref"
	"github.com/sealproxy/sealproxy/vault/keyring"
)

// startACME runs the ACME manager of the configuration's [key.acme]
// keys once the daemon serves (their tls-alpn-01 challenges are answered
// by its listeners, through ch): http-01 listeners, and each new pair
// swapped in through the key ring and the reload worker, as `sealproxy
// ctl commit` does. The returned function stops it and waits.
func (r *runner) startACME(keys *keyring.Ring, m *proxy.Metrics, ch *proxy.Challenges) (stop func()) {
	if len(r.cfg.ACMEKeys()) == 0 {
		return func() {}
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	mgr := acme.New(r.cfg, acme.Options{
		Log: r.log, Challenges: ch,
		Swap: func(ctx context.Context, k *config.Key, key vault.Key) error {
			g := keys.Stage()
			g.Adopt(r.cfg, k, key)
			err := r.reload(ctx)
			g.Discard() // closes key only if the reload did not take it
			return err
		},
		Result: func(key, result string) { m.ACMERenewals.WithLabelValues(key, result).Inc() },
	})
	r.acmeManager.Store(mgr)
	wg.Go(func() {
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for !r.group.Ready() {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
		log := r.log.With("component", "acme")
		for _, addr := range httpListens(r.cfg) {
			ln, err := net.Listen("tcp", addr)
			if err != nil {
				log.Error("http-01 listener failed: http-01 validations fail until a restart", "addr", addr, "err", err)
				continue
			}
			wg.Go(func() {
				if err := ch.ServeHTTPChallenges(ctx, ln, log); err != nil {
					log.Error("http-01 listener stopped", "err", err)
				}
			})
		}
		mgr.Run(ctx)
	})
	return func() { cancel(); wg.Wait() }
}

// acmeApplied hands an applied reload's configuration to the ACME
// manager: [key.acme] changes apply from then on (http_listen and the
// sandbox's directories stay those of start-up).
func (r *runner) acmeApplied(c *config.Config) {
	if m := r.acmeManager.Load(); m != nil {
		m.Update(c)
	}
}

// httpListens are the distinct http_listen addresses of http-01 keys.
func httpListens(cfg *config.Config) []string {
	seen := map[string]bool{}
	var out []string
	for _, k := range cfg.ACMEKeys() {
		if a := k.ACME.HTTPListen; k.ACME.Challenge == config.ChallengeHTTP && !seen[a] {
			seen[a] = true
			out = append(out, a)
		}
	}
	return out
}

// acmeSandbox lets the sandbox write what ACME renewals replace (the
// sealed key, the certificate, the account key: by rename, so their
// directories) and read the CA bundle and the EAB key.
func acmeSandbox(cfg *config.Config, p *sandbox.Policy) {
	sealedDir := func(ref string) string {
		r, err := keyref.Parse(ref)
		if err != nil || !r.IsSealed() {
			return ""
		}
		return filepath.Dir(cfg.Resolve(r.Path))
	}
	for _, k := range cfg.ACMEKeys() {
		for _, d := range []string{filepath.Dir(cfg.Resolve(k.Cert)), sealedDir(k.Source), sealedDir(k.ACME.Account)} {
			if d != "" {
				p.Write = append(p.Write, d)
			}
		}
		if k.ACME.CA != "" {
			p.Read = append(p.Read, filepath.Dir(cfg.Resolve(k.ACME.CA)))
		}
		if d := sealedDir(k.ACME.EABKey); d != "" {
			p.Read = append(p.Read, d)
		}
	}
}
