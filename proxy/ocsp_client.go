package proxy

import (
	"bytes"
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"sync"
	"time"

	"golang.org/x/crypto/ocsp"
)

// clientOCSP asks the OCSP responders of client certificates, inside the
// handshake, under a deadline of its own, and caches the answers until
// their NextUpdate.
type clientOCSP struct {
	hard    bool
	url     string // configured responder; else the certificate's AIA
	timeout time.Duration
	client  *http.Client

	mu       sync.Mutex
	cache    map[string]ocspAnswer
	inflight map[string]*ocspCall
}

type ocspStatus int

const (
	ocspGood ocspStatus = iota
	ocspRevoked
)

type ocspAnswer struct {
	status ocspStatus
	err    error // a failure, remembered briefly so that handshakes do not queue on a dead responder
	until  time.Time
}

type ocspCall struct {
	done chan struct{}
	ans  ocspAnswer
}

const (
	// ocspFailMemory is how long an unreachable responder's failure is
	// remembered: soft accepts and hard refuses at once meanwhile, so a
	// dead responder costs one timeout per period, not one per handshake.
	ocspFailMemory = 30 * time.Second
	// ocspNoNextUpdate caches a response without NextUpdate this long.
	ocspNoNextUpdate = 5 * time.Minute
	// maxOCSPCache bounds the cache (only CA-issued certificates reach
	// it, but a CA may issue many).
	maxOCSPCache = 10000
)

var errOCSPNoResponder = errors.New("the certificate names no OCSP responder; set client_ocsp_responder")

func newClientOCSP(hard bool, url string, timeout time.Duration) *clientOCSP {
	return &clientOCSP{hard: hard, url: url, timeout: timeout, client: &http.Client{Timeout: timeout},
		cache: map[string]ocspAnswer{}, inflight: map[string]*ocspCall{}}
}

// status returns what the responder says of leaf (issued by issuer). One
// query per certificate is in flight at a time; concurrent handshakes of
// the same certificate wait for it, bounded by the timeout.
func (o *clientOCSP) status(leaf, issuer *x509.Certificate, now time.Time) (ocspStatus, error) {
	key := string(issuer.RawSubjectPublicKeyInfo) + "\x00" + string(leaf.SerialNumber.Bytes())
	o.mu.Lock()
	if a, ok := o.cache[key]; ok && now.Before(a.until) {
		o.mu.Unlock()
		return a.status, a.err
	}
	call, ok := o.inflight[key]
	if !ok {
		call = &ocspCall{done: make(chan struct{})}
		o.inflight[key] = call
		go o.run(key, call, leaf, issuer)
	}
	o.mu.Unlock()
	t := time.NewTimer(o.timeout)
	defer t.Stop()
	select {
	case <-call.done:
		return call.ans.status, call.ans.err
	case <-t.C:
		return 0, fmt.Errorf("OCSP responder: no answer within %v", o.timeout)
	}
}

func (o *clientOCSP) run(key string, call *ocspCall, leaf, issuer *x509.Certificate) {
	ctx, cancel := context.WithTimeout(context.Background(), o.timeout)
	defer cancel()
	st, until, err := o.query(ctx, leaf, issuer)
	now := time.Now()
	if err != nil {
		until = now.Add(ocspFailMemory)
	}
	call.ans = ocspAnswer{status: st, err: err, until: until}
	o.mu.Lock()
	delete(o.inflight, key)
	if len(o.cache) >= maxOCSPCache {
		for k, a := range o.cache {
			if !now.Before(a.until) || len(o.cache) >= maxOCSPCache {
				delete(o.cache, k)
			}
		}
	}
	o.cache[key] = call.ans
	o.mu.Unlock()
	close(call.done)
}

// query asks the responder and checks the answer: signed by the issuer
// or by a responder the issuer delegated to (id-kp-OCSPSigning), about
// this certificate, current.
func (o *clientOCSP) query(ctx context.Context, leaf, issuer *x509.Certificate) (ocspStatus, time.Time, error) {
	url := o.url
	if url == "" {
		if len(leaf.OCSPServer) == 0 {
			return 0, time.Time{}, errOCSPNoResponder
		}
		url = leaf.OCSPServer[0]
	}
	der, err := postOCSP(ctx, o.client, url, leaf, issuer)
	if err != nil {
		return 0, time.Time{}, err
	}
	r, err := checkOCSPResponse(der, leaf, issuer, time.Now())
	if err != nil {
		return 0, time.Time{}, fmt.Errorf("OCSP responder %s: %w", url, err)
	}
	until := r.NextUpdate
	if until.IsZero() {
		until = time.Now().Add(ocspNoNextUpdate)
	}
	switch r.Status {
	case ocsp.Good:
		return ocspGood, until, nil
	case ocsp.Revoked:
		return ocspRevoked, until, nil
	}
	return 0, time.Time{}, fmt.Errorf("OCSP responder %s: status unknown", url)
}

// postOCSP sends an OCSP request for leaf and returns the raw response,
// size-limited.
func postOCSP(ctx context.Context, client *http.Client, url string, leaf, issuer *x509.Certificate) ([]byte, error) {
	req, err := ocsp.CreateRequest(leaf, issuer, nil)
	if err != nil {
		return nil, err
	}
	hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(req))
	if err != nil {
		return nil, err
	}
	hreq.Header.Set("Content-Type", "application/ocsp-request")
	resp, err := client.Do(hreq)
	if err != nil {
		return nil, fmt.Errorf("OCSP responder %s: %w", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("OCSP responder %s: HTTP %s", url, resp.Status)
	}
	der, err := io.ReadAll(io.LimitReader(resp.Body, maxOCSPReponse+1))
	if err != nil {
		return nil, fmt.Errorf("OCSP responder %s: %w", url, err)
	}
	if len(der) > maxOCSPReponse {
		return nil, fmt.Errorf("OCSP responder %s: response larger than %d bytes", url, maxOCSPReponse)
	}
	return der, nil
}

// errOCSPNotAuthorized reports a response signed by a certificate the
// issuer did not delegate OCSP signing to.
var errOCSPNotAuthorized = errors.New("the response is signed by a certificate that is not an OCSP responder of the issuer (no id-kp-OCSPSigning)")

// checkOCSPResponse parses a response about leaf and checks its signer's
// authority and its validity. x/crypto/ocsp checks the signature and
// that an embedded responder certificate is signed by the issuer, but
// not that the issuer made it an OCSP responder: without that check any
// certificate of the CA (a client's own) could vouch for itself.
func checkOCSPResponse(der []byte, leaf, issuer *x509.Certificate, now time.Time) (*ocsp.Response, error) {
	r, err := ocsp.ParseResponseForCert(der, leaf, issuer)
	if err != nil {
		return nil, err
	}
	if c := r.Certificate; c != nil && !bytes.Equal(c.Raw, issuer.Raw) {
		if !slices.Contains(c.ExtKeyUsage, x509.ExtKeyUsageOCSPSigning) {
			return nil, errOCSPNotAuthorized
		}
		if now.Before(c.NotBefore) || now.After(c.NotAfter) {
			return nil, errors.New("the delegated responder's certificate is not valid now")
		}
	}
	const skew = 5 * time.Minute
	switch {
	case r.ThisUpdate.After(now.Add(skew)):
		return nil, fmt.Errorf("the response is dated in the future (%s)", r.ThisUpdate.UTC().Format(time.RFC3339))
	case !r.NextUpdate.IsZero() && now.After(r.NextUpdate):
		return nil, fmt.Errorf("the response expired at %s", r.NextUpdate.UTC().Format(time.RFC3339))
	}
	return r, nil
}
