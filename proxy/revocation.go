package proxy

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sealproxy/sealproxy/internal/atomicfile"
	"github.com/sealproxy/sealproxy/proxy/config"
)

// errClientRevoked reports a client certificate listed in a CRL or
// answered "revoked" by its OCSP responder.
var errClientRevoked = errors.New("client certificate revoked")

// errCRLStale reports a client certificate whose CA's CRL is past its
// NextUpdate (crl_stale = "refuse"): a revocation may be missing from it.
var errCRLStale = errors.New("client certificate refused: its CA's CRL is past its NextUpdate")

// errOCSPUnavailable reports a client certificate whose OCSP status
// could not be learnt, with client_ocsp = "hard".
var errOCSPUnavailable = errors.New("client certificate refused: its OCSP responder gave no usable answer")

// Events counted in sealproxy_revocation_events_total{listener,event}.
const (
	eventCRLStaleRefused     = "crl_stale_refused"
	eventCRLStaleAccepted    = "crl_stale_accepted"
	eventOCSPRevoked         = "ocsp_revoked"
	eventOCSPUnreachable     = "ocsp_unavailable_refused"
	eventOCSPUnreachableSoft = "ocsp_unavailable_accepted"
)

const (
	maxCRLSize    = 16 << 20 // a CRL of ~500k entries
	crlRetry      = time.Minute
	crlRetryMax   = time.Hour
	logEvery      = 10 * time.Second
	crlCacheMode  = 0o600
	crlCacheExt   = ".crl"
	crlNoNextPoll = time.Hour // a CRL without NextUpdate is fetched again this often
)

// Revocations is the set of CRLs of a listener, each verified against
// its CA. File CRLs are re-read on reload; URL CRLs are refreshed in the
// background before their NextUpdate (a handshake that finds one due
// starts the download, so nothing needs stopping when a reload drops it).
type Revocations struct {
	sources []*crlSource
}

// crlList is one verified CRL.
type crlList struct {
	issuer     *x509.Certificate
	ca         string // the issuer for logs and metrics
	this, next time.Time
	revoked    map[string]struct{} // serial bytes
	der        []byte
}

// crlSource is one crl entry of the configuration: a file, or a URL with
// its on-disk cache.
type crlSource struct {
	where string // path or URL
	url   bool
	cache string // cache file of a URL
	cas   []*x509.Certificate
	http  *http.Client
	log   *slog.Logger
	now   func() time.Time

	cur     atomic.Pointer[[]*crlList]
	busy    atomic.Bool
	nextTry atomic.Int64 // unix nanoseconds
	retry   atomic.Int64 // current backoff
}

// LoadCRLs reads CRL files (PEM "X509 CRL" blocks or DER) issued by any
// of issuers.
func LoadCRLs(paths []string, issuers []*x509.Certificate) (*Revocations, error) {
	r := &Revocations{}
	for _, path := range paths {
		s := &crlSource{where: path, cas: issuers, now: time.Now, log: slog.New(slog.DiscardHandler)}
		data, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("reading CRL: %w", err)
		}
		lists, err := parseCRLs(path, data, issuers)
		if err != nil {
			return nil, err
		}
		s.cur.Store(&lists)
		r.sources = append(r.sources, s)
	}
	return r, nil
}

// crlOptions say where URL CRLs are cached and how they are fetched.
type crlOptions struct {
	cacheDir string
	timeout  time.Duration
	offline  bool // sealproxy check: read caches, fetch nothing
	log      *slog.Logger
}

// loadCRLSources reads every crl entry: files now, URLs from their cache
// when it is fresh, else from the network (falling back to the cache).
func loadCRLSources(ctx context.Context, entries []string, issuers []*x509.Certificate, o crlOptions) (*Revocations, error) {
	var files []string
	r := &Revocations{}
	for _, e := range entries {
		if !config.IsURL(e) {
			files = append(files, e)
			continue
		}
		sum := sha256.Sum256([]byte(e))
		s := &crlSource{where: e, url: true, cas: issuers, log: o.log, now: time.Now,
			cache: filepath.Join(o.cacheDir, hex.EncodeToString(sum[:16])+crlCacheExt),
			http:  &http.Client{Timeout: o.timeout}}
		var cacheErr error
		if data, err := os.ReadFile(s.cache); err == nil {
			var lists []*crlList
			if lists, cacheErr = parseCRLs(s.cache, data, issuers); cacheErr == nil {
				s.cur.Store(&lists)
			}
		} else if !errors.Is(err, os.ErrNotExist) {
			cacheErr = err
		}
		if !o.offline && (s.cur.Load() == nil || s.due(s.now())) {
			fctx, cancel := context.WithTimeout(ctx, o.timeout)
			err := s.fetch(fctx)
			cancel()
			switch {
			case err != nil && s.cur.Load() == nil:
				if cacheErr != nil {
					err = fmt.Errorf("%w; and the cached copy: %v", err, cacheErr)
				}
				return nil, fmt.Errorf("%w (no usable cached copy in %s)", err, o.cacheDir)
			case err != nil:
				s.backoff()
				o.log.Warn("CRL download failed; using the cached copy", "crl", e, "err", err)
			}
		}
		r.sources = append(r.sources, s)
	}
	fr, err := LoadCRLs(files, issuers)
	if err != nil {
		return nil, err
	}
	for _, s := range fr.sources {
		s.log = o.log
	}
	r.sources = append(fr.sources, r.sources...)
	return r, nil
}

// parseCRLs decodes PEM or DER CRLs and verifies each against issuers.
func parseCRLs(where string, data []byte, issuers []*x509.Certificate) ([]*crlList, error) {
	ders := [][]byte{data}
	if bytes.Contains(data, []byte("-----BEGIN")) {
		ders = nil
		for {
			var block *pem.Block
			block, data = pem.Decode(data)
			if block == nil {
				break
			}
			if block.Type == "X509 CRL" {
				ders = append(ders, block.Bytes)
			}
		}
		if len(ders) == 0 {
			return nil, fmt.Errorf("%s: no PEM X509 CRL block", where)
		}
	}
	var out []*crlList
	for _, der := range ders {
		l, err := verifyCRL(where, der, issuers)
		if err != nil {
			return nil, err
		}
		out = append(out, l)
	}
	return out, nil
}

func verifyCRL(where string, der []byte, issuers []*x509.Certificate) (*crlList, error) {
	crl, err := x509.ParseRevocationList(der)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", where, err)
	}
	named := false
	for _, ca := range issuers {
		if !bytes.Equal(ca.RawSubject, crl.RawIssuer) {
			continue
		}
		named = true
		if crl.CheckSignatureFrom(ca) != nil {
			continue
		}
		l := &crlList{issuer: ca, ca: caLabel(ca), this: crl.ThisUpdate, next: crl.NextUpdate,
			revoked: map[string]struct{}{}, der: der}
		for _, e := range crl.RevokedCertificateEntries {
			l.revoked[string(e.SerialNumber.Bytes())] = struct{}{}
		}
		return l, nil
	}
	if named {
		return nil, fmt.Errorf("%s: the CRL names a CA of the client CA bundle as issuer but its signature does not verify with that CA's key (forged, corrupted, or the CA was re-keyed)", where)
	}
	return nil, fmt.Errorf("%s: the CRL is not signed by any CA of the client CA bundle", where)
}

// caLabel names a CA in logs and metrics.
func caLabel(ca *x509.Certificate) string {
	if ca.Subject.CommonName != "" {
		return ca.Subject.CommonName
	}
	return ca.Subject.String()
}

// lists returns the current CRLs, starting a refresh of a URL when one
// is due.
func (s *crlSource) lists(now time.Time) []*crlList {
	if s.url && s.due(now) {
		s.refreshAsync(now)
	}
	if p := s.cur.Load(); p != nil {
		return *p
	}
	return nil
}

// due reports whether a URL's CRL should be fetched again: past half its
// validity (so a new one is in hand before NextUpdate), or a fixed
// interval for a CRL without NextUpdate.
func (s *crlSource) due(now time.Time) bool {
	p := s.cur.Load()
	if p == nil || len(*p) == 0 {
		return true
	}
	for _, l := range *p {
		at := l.this.Add(crlNoNextPoll)
		if !l.next.IsZero() {
			at = l.this.Add(l.next.Sub(l.this) / 2)
		}
		if now.After(at) {
			return true
		}
	}
	return false
}

func (s *crlSource) backoff() {
	d := time.Duration(s.retry.Load())
	d = min(max(2*d, crlRetry), crlRetryMax)
	s.retry.Store(int64(d))
	s.nextTry.Store(s.now().Add(d).UnixNano())
}

func (s *crlSource) refreshAsync(now time.Time) {
	if now.UnixNano() < s.nextTry.Load() || !s.busy.CompareAndSwap(false, true) {
		return
	}
	go func() {
		defer s.busy.Store(false)
		ctx, cancel := context.WithTimeout(context.Background(), s.http.Timeout)
		defer cancel()
		if err := s.fetch(ctx); err != nil {
			s.backoff()
			s.log.Warn("CRL refresh failed; keeping the previous CRL", "crl", s.where, "err", err,
				"retry_in", time.Duration(s.retry.Load()))
		}
	}()
}

// fetch downloads the CRL, verifies it, refuses one older than the one
// in hand (a replayed CRL would hide later revocations), installs it and
// writes it to the cache.
func (s *crlSource) fetch(ctx context.Context) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.where, nil)
	if err != nil {
		return err
	}
	resp, err := s.http.Do(req)
	if err != nil {
		return fmt.Errorf("fetching CRL: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("fetching CRL %s: HTTP %s", s.where, resp.Status)
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxCRLSize+1))
	if err != nil {
		return fmt.Errorf("fetching CRL %s: %w", s.where, err)
	}
	if len(data) > maxCRLSize {
		return fmt.Errorf("fetching CRL %s: larger than %d bytes", s.where, maxCRLSize)
	}
	lists, err := parseCRLs(s.where, data, s.cas)
	if err != nil {
		return err
	}
	if old := s.cur.Load(); old != nil {
		for _, o := range *old {
			for _, n := range lists {
				if n.issuer == o.issuer && n.this.Before(o.this) {
					return fmt.Errorf("%s: the CRL served (thisUpdate %s) is older than the one in hand (%s): refused", s.where,
						n.this.UTC().Format(time.RFC3339), o.this.UTC().Format(time.RFC3339))
				}
			}
		}
	}
	s.cur.Store(&lists)
	s.retry.Store(0)
	s.nextTry.Store(0)
	var out []byte
	for _, l := range lists {
		out = append(out, pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: l.der})...)
	}
	if err := atomicfile.Write(s.cache, out, crlCacheMode); err != nil {
		s.log.Warn("could not keep the CRL on disk; a restart needs the network", "crl", s.where, "err", err)
	}
	return nil
}

// crlResult is what the CRLs say about a chain.
type crlResult int

const (
	crlOK crlResult = iota
	crlRevoked
	crlStale
)

// check looks every certificate of a verified chain (leaf first) up in
// the CRL of its issuer; stale names the CRL past its NextUpdate.
func (r *Revocations) check(chain []*x509.Certificate, now time.Time) (crlResult, *crlList) {
	if r == nil {
		return crlOK, nil
	}
	var stale *crlList
	for _, s := range r.sources {
		for _, l := range s.lists(now) {
			for _, c := range chain {
				if !bytes.Equal(c.RawIssuer, l.issuer.RawSubject) {
					continue
				}
				if _, ok := l.revoked[string(c.SerialNumber.Bytes())]; ok {
					return crlRevoked, l
				}
				if !l.next.IsZero() && now.After(l.next) && stale == nil {
					stale = l
				}
			}
		}
	}
	if stale != nil {
		return crlStale, stale
	}
	return crlOK, nil
}

// poll starts the refresh of every URL CRL that is due.
func (r *Revocations) poll(now time.Time) {
	if r == nil {
		return
	}
	for _, s := range r.sources {
		s.lists(now)
	}
}

// Revoked reports whether any certificate of a verified chain (leaf
// first) is revoked.
func (r *Revocations) Revoked(chain []*x509.Certificate) bool {
	res, _ := r.check(chain, time.Now())
	return res == crlRevoked
}

// NextUpdates returns each CRL's NextUpdate by CA (zero when it has none).
func (r *Revocations) NextUpdates() map[string]time.Time {
	out := map[string]time.Time{}
	if r == nil {
		return out
	}
	for _, s := range r.sources {
		if p := s.cur.Load(); p != nil {
			for _, l := range *p {
				out[l.ca] = l.next
			}
		}
	}
	return out
}

// clientCheck is a listener's judgement of client certificates after
// crypto/tls verified their chain: revocation (CRL, OCSP), then the allow
// rules.
type clientCheck struct {
	rules     *AllowRules
	rev       *Revocations
	staleWarn bool
	ocsp      *clientOCSP // nil: client_ocsp = "off"
	log       *slog.Logger
	listener  string
	now       func() time.Time

	events  atomic.Pointer[prometheus.CounterVec]
	lastLog atomic.Int64
}

// bind makes the check count its events in m (Server.Update calls it;
// Build named the listener).
func (k *clientCheck) bind(m *Metrics) {
	if k == nil || m == nil {
		return
	}
	k.events.Store(m.RevocationEvents)
}

func (k *clientCheck) count(event string) {
	if v := k.events.Load(); v != nil {
		v.WithLabelValues(k.listener, event).Inc()
	}
}

// logLimited logs at most once per logEvery: every event is counted,
// but a client retrying in a loop does not flood the journal.
func (k *clientCheck) logLimited(level slog.Level, msg string, args ...any) {
	now := k.now().UnixNano()
	last := k.lastLog.Load()
	if now-last < int64(logEvery) || !k.lastLog.CompareAndSwap(last, now) {
		return
	}
	k.log.Log(context.Background(), level, msg, append([]any{"listener", k.listener}, args...)...)
}

// verifyClient combines revocation and allow rules into a
// tls.Config.VerifyConnection (nil when there is nothing to check).
func verifyClient(rules *AllowRules, rev *Revocations) func(tls.ConnectionState) error {
	if rules.empty() && rev == nil {
		return nil
	}
	k := &clientCheck{rules: rules, rev: rev, log: slog.New(slog.DiscardHandler), now: time.Now}
	return k.verify
}

func (k *clientCheck) verify(cs tls.ConnectionState) error {
	if len(cs.PeerCertificates) == 0 {
		// Under VerifyClientCertIfGiven a client may show none; rules
		// that name who may pass then refuse it (the configuration
		// already refuses "request" with rules).
		if !k.rules.empty() {
			return errClientDenied
		}
		return nil
	}
	now := k.now()
	for _, chain := range cs.VerifiedChains {
		switch res, l := k.rev.check(chain, now); res {
		case crlRevoked:
			return errClientRevoked
		case crlStale:
			if !k.staleWarn {
				k.count(eventCRLStaleRefused)
				k.logLimited(slog.LevelError, "client certificate refused: the CRL of its CA is past its NextUpdate (crl_stale = \"refuse\"); publish a fresh CRL",
					"ca", l.ca, "next_update", l.next.UTC().Format(time.RFC3339), "client", clientIdentity(&cs))
				return errCRLStale
			}
			k.count(eventCRLStaleAccepted)
			k.logLimited(slog.LevelWarn, "client certificate accepted although the CRL of its CA is past its NextUpdate (crl_stale = \"warn\")",
				"ca", l.ca, "next_update", l.next.UTC().Format(time.RFC3339), "client", clientIdentity(&cs))
		}
	}
	if k.ocsp != nil && len(cs.VerifiedChains) > 0 && len(cs.VerifiedChains[0]) > 1 {
		chain := cs.VerifiedChains[0]
		status, err := k.ocsp.status(chain[0], chain[1], now)
		switch {
		case err == nil && status == ocspRevoked:
			k.count(eventOCSPRevoked)
			return errClientRevoked
		case err != nil && k.ocsp.hard:
			k.count(eventOCSPUnreachable)
			k.logLimited(slog.LevelError, "client certificate refused: no usable OCSP answer (client_ocsp = \"hard\")",
				"client", clientIdentity(&cs), "err", err)
			return fmt.Errorf("%w: %v", errOCSPUnavailable, err)
		case err != nil:
			k.count(eventOCSPUnreachableSoft)
			k.logLimited(slog.LevelWarn, "client certificate accepted without an OCSP answer (client_ocsp = \"soft\")",
				"client", clientIdentity(&cs), "err", err)
		}
	}
	if !k.rules.Allowed(cs.PeerCertificates[0]) {
		return errClientDenied
	}
	return nil
}
