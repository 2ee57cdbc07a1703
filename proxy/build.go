package proxy

import (
	"context"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"time"

	"golang.org/x/crypto/ocsp"

	"github.com/sealproxy/sealproxy/proxy/config"
)

// KeyOpener returns the private key of a configured [[key]]. The caller
// keeps custody: it decides when keys are closed (after a reload, at exit).
type KeyOpener func(ctx context.Context, k *config.Key) (crypto.Signer, error)

// Build turns a validated configuration into listener configurations:
// it reads certificate chains and CA bundles, opens the keys the
// listeners use through open, and checks each key against its
// certificate. With a nil open it only reads and checks the files (as
// `sealproxy check` does, without touching any key). log receives
// warnings (an OCSP responder that does not answer is not fatal).
func Build(ctx context.Context, cfg *config.Config, open KeyOpener, log *slog.Logger) ([]*ListenerConfig, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	key, staplers := keyLoader(ctx, cfg, open, log)

	var out []*ListenerConfig
	for i := range cfg.Listeners {
		l := &cfg.Listeners[i]
		lc := &ListenerConfig{
			Name: l.Name, Listen: l.Listen, Mode: l.Mode,
			RoundRobin: l.Balance == "round_robin", ConnectAllow: l.Connect.Allow,
			MaxConns: l.MaxConnections, HandshakeTimeout: l.HandshakeTimeout, ConnectTimeout: l.ConnectTimeout,
			IdleTimeout: l.IdleTimeout, CloseTimeout: l.CloseTimeout, MaxLifetime: l.MaxLifetime,
		}
		for _, n := range l.AcceptProxyFrom {
			p, _ := config.ParsePrefix(n)
			lc.AcceptProxyFrom = append(lc.AcceptProxyFrom, p)
		}
		switch l.ProxyProtocol {
		case "v1":
			lc.ProxyProtocol = 1
		case "v2":
			lc.ProxyProtocol = 2
		}
		for _, b := range l.BackendList() {
			lc.Backends = append(lc.Backends, ParseBackend(b))
		}
		if l.Mode != config.ModeEncrypt {
			var (
				served      []*tls.Certificate
				servedNames []string
			)
			for _, name := range l.Keys {
				c, err := key(name)
				if errors.Is(err, ErrPending) {
					continue // served once issued (AnswerACME answers its validations)
				}
				if err != nil {
					return nil, fmt.Errorf("listener %q: %w", l.Name, err)
				}
				served = append(served, c)
				servedNames = append(servedNames, name)
			}
			tc, check, err := serverTLS(ctx, cfg, &l.TLS, served, staplers, open != nil, log)
			if err != nil {
				return nil, fmt.Errorf("listener %q: %w", l.Name, err)
			}
			if check != nil {
				check.listener = l.Name
			}
			info := &revocationInfo{leaves: map[string]*x509.Certificate{}, check: check}
			for i, name := range servedNames {
				if served[i] != nil {
					info.leaves[name] = served[i].Leaf
				}
			}
			lc.revocation = info
			lc.TLS = tc
			lc.TicketRotation = l.TLS.TicketRotation
			if l.TLS.SessionTickets != nil && !*l.TLS.SessionTickets {
				tc.SessionTicketsDisabled = true
			}
		}
		if l.Mode == config.ModeBridge || l.Mode == config.ModeEncrypt {
			var client *tls.Certificate
			if l.Upstream.ClientKey != "" {
				c, err := key(l.Upstream.ClientKey)
				if err != nil {
					return nil, fmt.Errorf("listener %q: upstream client key: %w", l.Name, err)
				}
				client = c
			}
			uc, err := upstreamTLS(cfg, &l.Upstream, client)
			if err != nil {
				return nil, fmt.Errorf("listener %q: upstream: %w", l.Name, err)
			}
			lc.Upstream = uc
		}
		if open != nil {
			if err := lc.check(); err != nil {
				return nil, err
			}
		}
		out = append(out, lc)
	}
	return out, nil
}

// keyLoader returns the function that loads a [[key]] by name (its
// chain read once, its key opened once, its staple loaded) for Build and
// BuildPool, and the staplers it starts. With a nil open it only reads
// and checks the chain and returns a nil certificate.
func keyLoader(ctx context.Context, cfg *config.Config, open KeyOpener, log *slog.Logger) (func(string) (*tls.Certificate, error), map[*tls.Certificate]*stapler) {
	chains := map[string][][]byte{}
	certs := map[string]*tls.Certificate{}
	staplers := map[*tls.Certificate]*stapler{}
	key := func(name string) (*tls.Certificate, error) {
		if c, ok := certs[name]; ok {
			return c, nil
		}
		k := cfg.Key(name)
		if cfg.Pending(k) {
			return nil, fmt.Errorf("key %q: %w", name, ErrPending)
		}
		chain, ok := chains[name]
		if !ok {
			var err error
			if chain, err = loadChain(cfg.Resolve(k.Cert)); err != nil {
				return nil, fmt.Errorf("key %q: %w", name, err)
			}
			chains[name] = chain
			warnExpiry(cfg, name, chain)
		}
		if open == nil {
			return nil, nil
		}
		signer, err := open(ctx, k)
		if err != nil {
			return nil, fmt.Errorf("opening key %q: %w", name, err)
		}
		c, err := NewCertificate(name, chain, signer)
		if err != nil {
			return nil, err
		}
		if k.OCSPStaple != "" {
			if c.OCSPStaple, err = loadStaple(cfg.Resolve(k.OCSPStaple), c); err != nil {
				return nil, fmt.Errorf("key %q: ocsp_staple: %w", name, err)
			}
		}
		if k.OCSPFetch || k.OCSPResponder != "" {
			var issuer *x509.Certificate
			if len(chain) > 1 {
				issuer, _ = x509.ParseCertificate(chain[1])
			}
			st, err := newStapler(c.Leaf, issuer, k.OCSPResponder, log)
			if err != nil {
				return nil, fmt.Errorf("key %q: OCSP: %w", name, err)
			}
			fctx, cancel := context.WithTimeout(ctx, ocspTimeout)
			err = st.fetch(fctx)
			cancel()
			switch {
			case errors.Is(err, errOwnRevoked):
				st.backoff()
				log.Error("this server's certificate is revoked; handshakes go without a staple", "key", name, "err", err)
			case err != nil:
				st.backoff()
				log.Warn("no OCSP staple yet; handshakes go without until the responder answers", "key", name, "err", err)
			}
			staplers[c] = st
		}
		certs[name] = c
		return c, nil
	}
	return key, staplers
}

func serverTLS(ctx context.Context, cfg *config.Config, t *config.TLS, served []*tls.Certificate, staplers map[*tls.Certificate]*stapler, withKeys bool, log *slog.Logger) (*tls.Config, *clientCheck, error) {
	tc := &tls.Config{NextProtos: t.ALPN}
	if withKeys {
		chooser := &CertChooser{}
		if len(served) == 0 {
			// Every key awaits its first ACME issue: handshakes fail
			// until the reload swaps a certificate in.
			tc.GetCertificate = func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return nil, ErrPending }
		} else if err := chooser.swap(served, staplers); err != nil {
			return nil, nil, err
		} else {
			tc.GetCertificate = chooser.GetCertificate
		}
	}
	tc.MinVersion, _ = config.Version(t.MinVersion)
	tc.MaxVersion, _ = config.Version(t.MaxVersion)
	// Mozilla's intermediate profile unless the configuration names its
	// own: Go's defaults still offer TLS 1.2 CBC suites.
	tc.CipherSuites = slices.Clone(config.IntermediateSuites)
	if len(t.CipherSuites) > 0 {
		tc.CipherSuites = tc.CipherSuites[:0]
		for _, name := range t.CipherSuites {
			id, _ := config.CipherSuite(name)
			tc.CipherSuites = append(tc.CipherSuites, id)
		}
	}
	tc.CurvePreferences = slices.Clone(config.IntermediateCurves)
	if len(t.Curves) > 0 {
		tc.CurvePreferences = tc.CurvePreferences[:0]
		for _, name := range t.Curves {
			id, _ := config.Curve(name)
			tc.CurvePreferences = append(tc.CurvePreferences, id)
		}
	}
	switch t.ClientAuth {
	case "request":
		tc.ClientAuth = tls.VerifyClientCertIfGiven
	case "require":
		tc.ClientAuth = tls.RequireAndVerifyClientCert
	}
	var rev *Revocations
	if t.ClientCA != "" {
		cas, err := loadCerts(cfg.Resolve(t.ClientCA))
		if err != nil {
			return nil, nil, fmt.Errorf("client_ca: %w", err)
		}
		tc.ClientCAs = x509.NewCertPool()
		for _, ca := range cas {
			tc.ClientCAs.AddCert(ca)
		}
		if len(t.CRL) > 0 {
			entries := make([]string, len(t.CRL))
			for i, p := range t.CRL {
				entries[i] = p
				if !config.IsURL(p) {
					entries[i] = cfg.Resolve(p)
				}
			}
			rev, err = loadCRLSources(ctx, entries, cas, crlOptions{cacheDir: cfg.Resolve(cfg.Revocation.CacheDir),
				timeout: cfg.Revocation.FetchTimeout, offline: !withKeys, log: log})
			if err != nil {
				return nil, nil, fmt.Errorf("crl: %w", err)
			}
			warnStaleCRLs(cfg, rev, t.CRLStale == config.CRLStaleWarn)
		}
	}
	rules := &AllowRules{CN: t.Allow.CN, DNS: t.Allow.DNS, URI: t.Allow.URI, OU: t.Allow.OU}
	for _, p := range t.Allow.SPKI {
		pin, err := ParseSPKIPin(p)
		if err != nil {
			return nil, nil, err
		}
		rules.SPKI = append(rules.SPKI, pin)
	}
	r := &t.ListenerRevocation
	if rules.empty() && rev == nil && (r.ClientOCSP == "" || r.ClientOCSP == config.ClientOCSPOff) {
		return tc, nil, nil
	}
	check := &clientCheck{rules: rules, rev: rev, staleWarn: r.CRLStale == config.CRLStaleWarn, log: log, now: time.Now}
	if r.ClientOCSP == config.ClientOCSPSoft || r.ClientOCSP == config.ClientOCSPHard {
		timeout := r.ClientOCSPTimeout
		if timeout <= 0 {
			timeout = config.DefaultClientOCSPTimeout
		}
		check.ocsp = newClientOCSP(r.ClientOCSP == config.ClientOCSPHard, r.ClientOCSPResponder, timeout)
	}
	tc.VerifyConnection = check.verify
	return tc, check, nil
}

// warnExpiry adds a configuration warning (sealproxy check prints them)
// for a leaf that expires within the first expiry threshold.
func warnExpiry(cfg *config.Config, name string, chain [][]byte) {
	leaf, err := x509.ParseCertificate(chain[0])
	if err != nil {
		return
	}
	if left := time.Until(leaf.NotAfter); left <= expiryThresholds[0] {
		for i := range cfg.Keys {
			if cfg.Keys[i].Name == name {
				what := fmt.Sprintf("expires in %d days", int(left.Hours()/24))
				if left <= 0 {
					what = "has expired"
				}
				cfg.Warn(fmt.Sprintf("key[%d].cert", i), "the certificate of key %q %s (not after %s): renew it",
					name, what, leaf.NotAfter.UTC().Format(time.RFC3339))
			}
		}
	}
}

// warnStaleCRLs adds a configuration warning for each CRL past its
// NextUpdate.
func warnStaleCRLs(cfg *config.Config, rev *Revocations, warnOnly bool) {
	effect := "client certificates of that CA are refused until a fresh one is published (crl_stale = \"refuse\")"
	if warnOnly {
		effect = "client certificates of that CA are accepted without a current CRL (crl_stale = \"warn\")"
	}
	now := time.Now()
	for _, s := range rev.sources {
		p := s.cur.Load()
		if p == nil {
			cfg.Warn("", "CRL %s: no copy on disk yet (it is fetched when sealproxy runs)", s.where)
			continue
		}
		for _, l := range *p {
			if !l.next.IsZero() && now.After(l.next) {
				cfg.Warn("", "CRL %s of CA %q is past its NextUpdate (%s): %s",
					s.where, l.ca, l.next.UTC().Format(time.RFC3339), effect)
			}
		}
	}
}

func upstreamTLS(cfg *config.Config, u *config.Upstream, client *tls.Certificate) (*tls.Config, error) {
	tc := &tls.Config{
		ServerName: u.ServerName,
		NextProtos: u.ALPN,
		// Resume upstream sessions: most of a full handshake's cost.
		ClientSessionCache: tls.NewLRUClientSessionCache(upstreamSessions),
	}
	tc.MinVersion, _ = config.Version(u.MinVersion)
	tc.MaxVersion, _ = config.Version(u.MaxVersion)
	if u.CA != "" {
		pool, err := loadPool(cfg.Resolve(u.CA))
		if err != nil {
			return nil, fmt.Errorf("ca: %w", err)
		}
		tc.RootCAs = pool
	}
	if client != nil {
		tc.Certificates = []tls.Certificate{*client}
	}
	return tc, nil
}

// upstreamSessions is how many backend TLS sessions a listener keeps
// for resumption.
const upstreamSessions = 64

// loadStaple reads a DER OCSP response and checks that it speaks of the
// certificate's leaf, is signed for its issuer (the chain's second
// certificate, when present), says good and has not expired.
func loadStaple(path string, c *tls.Certificate) ([]byte, error) {
	der, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var issuer *x509.Certificate
	if len(c.Certificate) > 1 {
		if issuer, err = x509.ParseCertificate(c.Certificate[1]); err != nil {
			return nil, err
		}
	}
	resp, err := ocsp.ParseResponseForCert(der, c.Leaf, issuer)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	switch {
	case resp.Status != ocsp.Good:
		return nil, fmt.Errorf("%s: the response does not say good (status %d)", path, resp.Status)
	case !resp.NextUpdate.IsZero() && time.Now().After(resp.NextUpdate):
		return nil, fmt.Errorf("%s: expired at %s", path, resp.NextUpdate.Format(time.RFC3339))
	}
	return der, nil
}

// loadChain reads a PEM certificate chain, leaf first.
func loadChain(path string) ([][]byte, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading certificate chain: %w", err)
	}
	var chain [][]byte
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		if _, err := x509.ParseCertificate(block.Bytes); err != nil {
			return nil, fmt.Errorf("%s: certificate %d: %w", path, len(chain)+1, err)
		}
		chain = append(chain, block.Bytes)
	}
	if len(chain) == 0 {
		return nil, fmt.Errorf("%s: no PEM CERTIFICATE block", path)
	}
	return chain, nil
}

// loadCerts reads the certificates of a PEM bundle.
func loadCerts(path string) ([]*x509.Certificate, error) {
	chain, err := loadChain(path)
	if err != nil {
		return nil, err
	}
	out := make([]*x509.Certificate, len(chain))
	for i, der := range chain {
		if out[i], err = x509.ParseCertificate(der); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// loadPool reads a PEM CA bundle.
func loadPool(path string) (*x509.CertPool, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading CA bundle: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(data) {
		return nil, errors.New(path + ": no PEM CERTIFICATE block")
	}
	return pool, nil
}
