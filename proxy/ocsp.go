package proxy

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync/atomic"
	"time"

	"golang.org/x/crypto/ocsp"
)

// stapler keeps a fresh OCSP response for one certificate, fetched from
// its responder. Handshakes read the current staple; a handshake that
// finds it past half its validity starts one background refresh, so no
// goroutine or timer needs stopping when a reload drops the certificate.
type stapler struct {
	leaf, issuer *x509.Certificate
	url          string
	client       *http.Client
	log          *slog.Logger
	now          func() time.Time

	cur     atomic.Pointer[staple]
	busy    atomic.Bool
	nextTry atomic.Int64 // unix nanoseconds before which no refresh is tried
	retry   atomic.Int64 // the current backoff
}

type staple struct {
	der                []byte
	refreshAt, expires time.Time
}

const (
	ocspTimeout    = 10 * time.Second
	ocspRetry      = time.Minute
	ocspRetryMax   = 30 * time.Minute
	maxOCSPReponse = 64 << 10

	ocspNoNextUpdateRefresh = time.Hour
	ocspNoNextUpdateMaxAge  = 24 * time.Hour
)

func newStapler(leaf, issuer *x509.Certificate, url string, log *slog.Logger) (*stapler, error) {
	if url == "" {
		if len(leaf.OCSPServer) == 0 {
			return nil, errors.New("the certificate names no OCSP responder; set ocsp_responder")
		}
		url = leaf.OCSPServer[0]
	}
	if issuer == nil {
		return nil, errors.New("OCSP needs the issuer: put it second in the certificate chain")
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &stapler{leaf: leaf, issuer: issuer, url: url, log: log,
		client: &http.Client{Timeout: ocspTimeout}, now: time.Now}, nil
}

// errOwnRevoked reports that the responder says the server's own
// certificate is revoked.
var errOwnRevoked = errors.New("the responder says this certificate is REVOKED: replace it")

// fetch asks the responder and installs a good response. A "revoked"
// answer drops the staple in hand at once: a good response fetched
// earlier must not keep vouching for a certificate revoked since.
func (s *stapler) fetch(ctx context.Context) error {
	der, err := postOCSP(ctx, s.client, s.url, s.leaf, s.issuer)
	if err != nil {
		return err
	}
	now := s.now()
	r, err := checkOCSPResponse(der, s.leaf, s.issuer, now)
	if err != nil {
		return fmt.Errorf("OCSP responder %s: %w", s.url, err)
	}
	switch r.Status {
	case ocsp.Good:
	case ocsp.Revoked:
		s.cur.Store(nil)
		return fmt.Errorf("OCSP responder %s: %w", s.url, errOwnRevoked)
	default:
		return fmt.Errorf("OCSP responder %s: the certificate's status is unknown to it", s.url)
	}
	st := &staple{der: der, expires: r.NextUpdate}
	if r.NextUpdate.IsZero() {
		// No NextUpdate: ask again on a fixed interval, and stop stapling
		// a response nobody has confirmed for a day.
		st.refreshAt = now.Add(ocspNoNextUpdateRefresh)
		st.expires = now.Add(ocspNoNextUpdateMaxAge)
	} else {
		st.refreshAt = r.ThisUpdate.Add(r.NextUpdate.Sub(r.ThisUpdate) / 2)
	}
	s.cur.Store(st)
	s.retry.Store(0)
	return nil
}

// get returns the staple to send now (nil when none is valid) and starts
// a refresh when one is due.
func (s *stapler) get() []byte {
	st := s.cur.Load()
	now := s.now()
	if st == nil || now.After(st.refreshAt) {
		s.refreshAsync(now)
	}
	if st == nil || now.After(st.expires) {
		return nil
	}
	return st.der
}

// backoff schedules the next attempt after a failure: ocspRetry,
// doubling up to ocspRetryMax.
func (s *stapler) backoff() time.Duration {
	d := min(max(2*time.Duration(s.retry.Load()), ocspRetry), ocspRetryMax)
	s.retry.Store(int64(d))
	s.nextTry.Store(s.now().Add(d).UnixNano())
	return d
}

func (s *stapler) refreshAsync(now time.Time) {
	if now.UnixNano() < s.nextTry.Load() || !s.busy.CompareAndSwap(false, true) {
		return
	}
	go func() {
		defer s.busy.Store(false)
		ctx, cancel := context.WithTimeout(context.Background(), ocspTimeout)
		defer cancel()
		if err := s.fetch(ctx); err != nil {
			d := s.backoff()
			if errors.Is(err, errOwnRevoked) {
				s.log.Error("this server's certificate is revoked; handshakes go without a staple",
					"cert", s.leaf.Subject.CommonName, "err", err, "retry_in", d)
				return
			}
			s.log.Warn("OCSP staple refresh failed; serving the previous one while it is valid",
				"cert", s.leaf.Subject.CommonName, "err", err, "retry_in", d)
		}
	}()
}
