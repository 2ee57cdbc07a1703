package tang

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

var (
	// ErrUnreachable reports a Tang server that could not be reached in time.
	ErrUnreachable = errors.New("tang server unreachable")
	// ErrBadResponse reports an answer that is not what a Tang server sends.
	ErrBadResponse = errors.New("bad response from Tang server")
	// ErrRejected reports a request the server refused as malformed (400).
	ErrRejected = errors.New("tang server rejected the request")
)

// DefaultTimeout bounds one request to a Tang server when the caller's
// context has no earlier deadline.
const DefaultTimeout = 10 * time.Second

// maxRecoveryResponse bounds a /rec answer: one JWK point.
const maxRecoveryResponse = 16 << 10

// Client talks to Tang servers. The zero value is ready to use.
type Client struct {
	// HTTP is the client to use; nil means one with Timeout.
	HTTP *http.Client
	// Timeout bounds each request; zero means DefaultTimeout.
	Timeout time.Duration
}

// Error is a failed exchange with a Tang server; it names the server and
// unwraps to one of the package's sentinel errors.
type Error struct {
	URL    string
	Op     string // "fetching the advertisement", "recovering key KID"
	Status int    // HTTP status, if the server answered
	Err    error
}

// Error names the server by its URL, which comes from a JWE: escaped.
func (e *Error) Error() string { return fmt.Sprintf("tang %s: %s: %v", Printable(e.URL), e.Op, e.Err) }
func (e *Error) Unwrap() error { return e.Err }

func (c *Client) httpClient() *http.Client {
	if c.HTTP != nil {
		return c.HTTP
	}
	return defaultHTTP
}

// defaultHTTP does not keep connections alive: tangd runs one process per
// connection behind socat or systemd, and a recovery is a handful of
// requests at start-up, after which an idle pooled connection only holds a
// server process open.
var defaultHTTP = &http.Client{Transport: &http.Transport{
	Proxy:                  http.ProxyFromEnvironment,
	DisableKeepAlives:      true,
	TLSHandshakeTimeout:    DefaultTimeout,
	MaxResponseHeaderBytes: 16 << 10,
}}

func (c *Client) timeout() time.Duration {
	if c.Timeout > 0 {
		return c.Timeout
	}
	return DefaultTimeout
}

// BaseURL checks a Tang URL and drops a trailing slash, as clevis would
// otherwise request "//adv".
// Errors quote the URL with any password masked.
func BaseURL(raw string) (string, error) {
	u, err := url.Parse(raw)
	shown := raw
	switch {
	case err == nil && u.User != nil:
		shown = u.Redacted()
	case err != nil && strings.Contains(raw, "@"):
		shown = "(a URL with credentials)"
	}
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return "", fmt.Errorf("tang URL %q must look like http://host:port", shown)
	}
	if u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		return "", fmt.Errorf("tang URL %q must not carry credentials, a query or a fragment", shown)
	}
	return strings.TrimRight(raw, "/"), nil
}

// Advertisement fetches and verifies the server's advertisement. With thp it
// asks for /adv/{thp} and checks that a signing key with that thumbprint
// signed it; without, the caller decides about trust.
func (c *Client) Advertisement(ctx context.Context, tangURL, thp string) (*Advertisement, error) {
	base, err := BaseURL(tangURL)
	if err != nil {
		return nil, err
	}
	path := base + "/adv"
	if thp != "" {
		path += "/" + url.PathEscape(thp)
	}
	op := "fetching the advertisement"
	body, status, err := c.do(ctx, http.MethodGet, path, nil, maxAdvertisement)
	if err != nil {
		if thp != "" && status == http.StatusNotFound {
			// tangd answers /adv/{thp} with 404 when no signing key has
			// that thumbprint: the pinned key is not there, which is a
			// trust failure, not a missing recovery key.
			err = fmt.Errorf("%w: the server has no signing key with thumbprint %s (HTTP 404)", ErrUntrusted, thp)
		}
		return nil, &Error{URL: base, Op: op, Status: status, Err: err}
	}
	adv, err := ParseAdvertisement(body)
	if err != nil {
		return nil, &Error{URL: base, Op: op, Status: status, Err: err}
	}
	if thp != "" {
		if err := adv.Trust(thp); err != nil {
			return nil, &Error{URL: base, Op: op, Status: status, Err: err}
		}
	}
	return adv, nil
}

// Recover sends the blinded point to /rec/{kid} and unblinds the answer,
// returning z = K.x. The caller wipes z; b can be reused for a retry.
// At a gate that holds the request for approval it keeps waiting (see
// RecoverWith).
func (c *Client) Recover(ctx context.Context, tangURL, kid string, b *Blind) ([]byte, error) {
	return c.RecoverWith(ctx, tangURL, kid, b, nil)
}

// RecoverOptions are the choices of one recovery at a gate.
type RecoverOptions struct {
	// Group puts this recovery with the others of one start-up at this
	// gate; nil makes a group of this recovery alone.
	Group *ApprovalGroup
	// OnPending is called when the gate confirmed the session's code and
	// holds the recovery for approval (once per recovery).
	OnPending func(Pending)
}

// minPoll is the shortest interval between two requests while a gate
// reports a recovery pending: a gate that does not hold requests must not
// be asked in a busy loop.
const minPoll = time.Second

// RecoverWith is Recover at a gate. Every request carries the session's
// commitment (HeaderCommit). While the gate answers 202 (pending) it asks
// again with the same point; once the gate sent its nonce it reveals its
// own (HeaderReveal), computes the session's code, and reports it through
// o.OnPending when the gate shows the same code. It ends when the gate
// answers, denies (ErrDenied), shows another code or refuses the nonce
// (ErrCodeMismatch), or ctx ends (ErrNotApproved). A plain Tang server
// ignores the headers and answers at once.
func (c *Client) RecoverWith(ctx context.Context, tangURL, kid string, b *Blind, o *RecoverOptions) ([]byte, error) {
	base, err := BaseURL(tangURL)
	if err != nil {
		return nil, err
	}
	if o == nil {
		o = &RecoverOptions{}
	}
	op := "recovering with key " + Printable(kid) // from the JWE
	req, err := json.Marshal(b.Request())
	if err != nil {
		return nil, err
	}
	s := ApprovalGroup{ID: NewSessionID(), Keys: 1}
	if o.Group != nil {
		s = *o.Group
	}
	if s.Exchange == nil {
		if s.Keys > 1 {
			return nil, fmt.Errorf("tang %s: %s: a session of %d keys needs its exchange over all of them", base, op, s.Keys)
		}
		s.Exchange = NewExchange(b.Point())
	}
	hdr := http.Header{}
	hdr.Set(HeaderSession, s.ID)
	if s.Host != "" {
		hdr.Set(HeaderHost, s.Host)
	}
	if s.Keys > 0 {
		hdr.Set(HeaderKeys, strconv.Itoa(s.Keys))
	}
	hdr.Set(HeaderCommit, s.Exchange.Commitment())
	// RFC 7240 preferences for a gate: hold a request at most this long,
	// so that our own per-request timeout does not cut its answer off;
	// and when the answer moves the exchange on (the first request, the
	// one that reveals our nonce), say at once that it waits, so that the
	// code is shown without delay. A plain Tang server ignores both.
	wait := "wait=" + strconv.Itoa(max(1, int(c.timeout()*3/4/time.Second)))
	var (
		ng    []byte // the gate's nonce, once it sent it
		code  string // the session's code, once ng is known
		shown bool   // the gate confirmed code, and OnPending was told
		async = true
		sent  int
	)
	fail := func(status int, err error) ([]byte, error) {
		return nil, &Error{URL: base, Op: op, Status: status, Err: err}
	}
	stillPending := func() error {
		if code == "" {
			return fmt.Errorf("%w: the gate has not received all %d keys of this session: %v", ErrNotApproved, max(1, s.Keys), ctx.Err())
		}
		return fmt.Errorf("%w: code %s is still pending: %v", ErrNotApproved, code, ctx.Err())
	}
	for {
		if async {
			hdr.Set("Prefer", "respond-async, "+wait)
		} else {
			hdr.Set("Prefer", wait)
		}
		started := time.Now()
		sent++
		body, status, err := c.doWith(ctx, http.MethodPost, base+"/rec/"+url.PathEscape(kid), req, hdr, maxRecoveryResponse)
		if err != nil {
			switch {
			case errors.Is(err, ErrUnknownKey):
				err = fmt.Errorf("%w: the Tang server no longer has key %s: was it deleted?", ErrUnknownKey, Printable(kid))
			case ng != nil && status == http.StatusConflict:
				// The gate refused our nonce: the points or the commitment
				// it received are not ours.
				err = fmt.Errorf("%w: the gate refused this host's nonce: what it received is not what this host sent: %w", ErrCodeMismatch, err)
			case sent > 1 && ctx.Err() != nil:
				err = stillPending()
			}
			return fail(status, err)
		}
		if status != http.StatusAccepted {
			var y JWK
			if err := json.Unmarshal(body, &y); err != nil {
				return fail(status, fmt.Errorf("%w: answer is not a JWK", ErrBadResponse))
			}
			z, err := b.Unblind(&y)
			if err != nil {
				return fail(status, fmt.Errorf("%w: %w", ErrBadResponse, err))
			}
			return z, nil
		}
		var st Status
		if json.Unmarshal(body, &st) != nil || st.Status != "pending" {
			return fail(status, fmt.Errorf("%w: HTTP 202 without a pending status", ErrBadResponse))
		}
		if st.Code != "" && !IsCode(st.Code) {
			// Never shown: it could be anything, escapes included.
			return fail(status, fmt.Errorf("%w: HTTP 202 with a code that is not XXXX-XXXX", ErrBadResponse))
		}
		first := async
		async = false
		if st.Nonce != "" {
			n, err := DecodeNonce(st.Nonce)
			switch {
			case err != nil:
				return fail(status, fmt.Errorf("%w: the gate's nonce: %v", ErrBadResponse, err))
			case ng != nil && !bytes.Equal(n, ng):
				// Our nonce is out: taking another gate nonce for the same
				// commitment would let whoever saw it grind the code.
				return fail(status, fmt.Errorf("%w: it sent a new nonce (restarted, or the request expired)", ErrSessionLost))
			case ng == nil:
				ng, code = n, s.Exchange.Code(n)
				hdr.Set(HeaderReveal, s.Exchange.Reveal())
				async, first = true, true // reveal now, and hear the code at once
			}
		}
		if st.Code != "" {
			switch {
			case code == "":
				// A code before the exchange: not a gate of this protocol,
				// or our headers were removed on the way.
				return fail(status, fmt.Errorf("%w: the gate shows a code without the committed exchange (is it an older sealgate, or is something in the middle?)", ErrCodeMismatch))
			case st.Code != code:
				return fail(status, fmt.Errorf("%w: the gate shows code %s, this host %s: do not approve %s", ErrCodeMismatch, st.Code, code, st.Code))
			case !shown && o.OnPending != nil:
				o.OnPending(Pending{URL: base, Kid: kid, Code: code, Keys: st.Keys, Arrived: st.Arrived})
			}
			shown = true
		}
		// An answer that moved the exchange on came at once
		// (respond-async); later ones come after the gate held the
		// request, unless it does not.
		if wait := minPoll - time.Since(started); wait > 0 && !first {
			t := time.NewTimer(wait)
			select {
			case <-ctx.Done():
				t.Stop()
				return fail(status, stillPending())
			case <-t.C:
			}
		}
	}
}

// do performs one request and maps HTTP failures to sentinel errors. The
// response body is read through a limit and always closed.
func (c *Client) do(ctx context.Context, method, target string, body []byte, limit int64) ([]byte, int, error) {
	return c.doWith(ctx, method, target, body, nil, limit)
}

// doWith is do with extra request headers. Besides 200 it passes a gate's
// 202 (pending) through, and turns a gate's 403 with a denial into a
// *DeniedError.
func (c *Client) doWith(ctx context.Context, method, target string, body []byte, hdr http.Header, limit int64) ([]byte, int, error) {
	ctx, cancel := context.WithTimeout(ctx, c.timeout())
	defer cancel()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, target, rd)
	if err != nil {
		return nil, 0, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/jwk+json")
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	resp, err := c.httpClient().Do(req)
	if err != nil {
		return nil, 0, fmt.Errorf("%w: %v", ErrUnreachable, UnwrapURLError(err))
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		return nil, resp.StatusCode, fmt.Errorf("%w: reading the answer: %v", ErrUnreachable, err)
	}
	switch {
	case resp.StatusCode == http.StatusOK:
	case resp.StatusCode == http.StatusAccepted && method == http.MethodPost:
	case resp.StatusCode == http.StatusNotFound:
		return nil, resp.StatusCode, fmt.Errorf("%w (HTTP 404)", ErrUnknownKey)
	case resp.StatusCode == http.StatusForbidden:
		var st Status
		if int64(len(data)) <= limit && json.Unmarshal(data, &st) == nil && st.Status == "denied" {
			return nil, resp.StatusCode, &DeniedError{Operator: st.Operator, At: st.Time, Code: st.Code}
		}
		return nil, resp.StatusCode, fmt.Errorf("%w (HTTP 403)", ErrWrongKeyUse)
	case resp.StatusCode == http.StatusBadRequest:
		return nil, resp.StatusCode, fmt.Errorf("%w (HTTP 400)%s", ErrRejected, gateError(data, limit))
	case resp.StatusCode == http.StatusTooManyRequests,
		resp.StatusCode == http.StatusServiceUnavailable && gateError(data, limit) != "":
		// A gate's refusal of new requests (a plain Tang server sends
		// neither), not a server that is down.
		return nil, resp.StatusCode, fmt.Errorf("%w (HTTP %d)%s", ErrGateFull, resp.StatusCode, gateError(data, limit))
	case resp.StatusCode >= 500:
		return nil, resp.StatusCode, fmt.Errorf("%w: HTTP %d", ErrUnreachable, resp.StatusCode)
	default:
		return nil, resp.StatusCode, fmt.Errorf("%w: HTTP %d%s", ErrBadResponse, resp.StatusCode, gateError(data, limit))
	}
	if int64(len(data)) > limit {
		return nil, resp.StatusCode, fmt.Errorf("%w: answer larger than %d bytes", ErrBadResponse, limit)
	}
	return data, resp.StatusCode, nil
}

// gateError is ": MESSAGE" for a gate's JSON error answer
// ({"error":MESSAGE}), escaped, or "" for any other body.
func gateError(data []byte, limit int64) string {
	var e struct {
		Error string `json:"error"`
	}
	if int64(len(data)) > limit || json.Unmarshal(data, &e) != nil || e.Error == "" {
		return ""
	}
	const maxShown = 200
	msg := []rune(e.Error)
	if len(msg) > maxShown {
		msg = append(msg[:maxShown], []rune("...")...)
	}
	return ": " + Printable(string(msg))
}

// UnwrapURLError drops the *url.Error wrapper of a transport failure,
// whose text repeats the URL that our errors already name.
func UnwrapURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		if ue.Timeout() {
			return errors.New("timed out")
		}
		return ue.Err
	}
	return err
}
