package proxy

import (
	"bytes"
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
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
}

type staple struct {
	der                []byte
	refreshAt, expires time.Time
}

const (
	ocspTimeout    = 10 * time.Second
	ocspRetry      = time.Minute
	maxOCSPReponse = 64 << 10
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

// fetch asks the responder and installs a good response.
func (s *stapler) fetch(ctx context.Context) error {
	req, err := ocsp.CreateRequest(s.leaf, s.issuer, nil)
	if err != nil {
		return err
	}
	hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, s.url, bytes.NewReader(req))
	if err != nil {
		return err
	}
	hreq.Header.Set("Content-Type", "application/ocsp-request")
	resp, err := s.client.Do(hreq)
	if err != nil {
		return fmt.Errorf("OCSP responder %s: %w", s.url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("OCSP responder %s: HTTP %s", s.url, resp.Status)
	}
	der, err := io.ReadAll(io.LimitReader(resp.Body, maxOCSPReponse+1))
	if err != nil {
		return fmt.Errorf("OCSP responder %s: %w", s.url, err)
	}
	if len(der) > maxOCSPReponse {
		return fmt.Errorf("OCSP responder %s: response larger than %d bytes", s.url, maxOCSPReponse)
	}
	r, err := ocsp.ParseResponseForCert(der, s.leaf, s.issuer)
	if err != nil {
		return fmt.Errorf("OCSP responder %s: %w", s.url, err)
	}
	if r.Status != ocsp.Good {
		return fmt.Errorf("OCSP responder %s: the certificate is not good (status %d)", s.url, r.Status)
	}
	st := &staple{der: der, expires: r.NextUpdate}
	if r.NextUpdate.IsZero() {
		st.refreshAt = s.now().Add(time.Hour)
	} else {
		st.refreshAt = r.ThisUpdate.Add(r.NextUpdate.Sub(r.ThisUpdate) / 2)
	}
	s.cur.Store(st)
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
	if st == nil || (!st.expires.IsZero() && now.After(st.expires)) {
		return nil
	}
	return st.der
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
			s.nextTry.Store(s.now().Add(ocspRetry).UnixNano())
			s.log.Warn("OCSP staple refresh failed; serving the previous one while it is valid",
				"cert", s.leaf.Subject.CommonName, "err", err)
		}
	}()
}
