package gate

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/sealproxy/sealproxy/unlock/tang"
)

var (
	// ErrUnauthorized reports an operator token the gate refused (or none).
	ErrUnauthorized = errors.New("the gate refused the operator token")
	// ErrGateUnreachable reports a gate that could not be reached.
	ErrGateUnreachable = errors.New("gate unreachable")
)

// maxOperatorResponse bounds an operator API answer.
const maxOperatorResponse = 1 << 20

// Client calls a gate's operator API.
type Client struct {
	URL   string // the gate's base URL
	Token string
	// HTTP is the client to use; nil means one with a 10 s timeout.
	HTTP *http.Client
}

// APIError is a refusal from the operator API; it unwraps to
// ErrUnauthorized, ErrUnknownCode, ErrNotPending, ErrCodeRequired or
// ErrLocked by status.
type APIError struct {
	URL     string
	Op      string
	Status  int
	Message string
	byID    bool // the call named a request by id
}

func (e *APIError) Error() string {
	return fmt.Sprintf("gate %s: %s: %s (HTTP %d)", e.URL, e.Op, e.Message, e.Status)
}

func (e *APIError) Unwrap() error {
	switch e.Status {
	case http.StatusUnauthorized:
		return ErrUnauthorized
	case http.StatusNotFound:
		if e.byID {
			return ErrUnknownRequest
		}
		return ErrUnknownCode
	case http.StatusConflict:
		return ErrNotPending
	case http.StatusForbidden:
		return ErrCodeRequired
	case http.StatusTooManyRequests:
		return ErrLocked
	}
	return nil
}

// Pending lists the requests waiting for a decision.
func (c *Client) Pending(ctx context.Context) ([]Request, error) {
	var out struct {
		Requests []Request `json:"requests"`
	}
	if err := c.call(ctx, http.MethodGet, "/gate/pending", nil, "listing pending requests", &out); err != nil {
		return nil, err
	}
	return out.Requests, nil
}

// Decisions lists the gate's last decisions, newest first.
func (c *Client) Decisions(ctx context.Context) ([]Event, error) {
	var out struct {
		Decisions []Event `json:"decisions"`
	}
	if err := c.call(ctx, http.MethodGet, "/gate/decisions", nil, "listing decisions", &out); err != nil {
		return nil, err
	}
	return out.Decisions, nil
}

// Approve approves the request whose host shows code.
func (c *Client) Approve(ctx context.Context, code string) (*Decision, error) {
	return c.decide(ctx, "/gate/approve", "approving", code)
}

// ApproveID approves the request with id, whose host shows no code.
func (c *Client) ApproveID(ctx context.Context, id string) (*Decision, error) {
	return c.decideID(ctx, "/gate/approve", "approving", id)
}

// Deny denies the request with code.
func (c *Client) Deny(ctx context.Context, code string) (*Decision, error) {
	return c.decide(ctx, "/gate/deny", "denying", code)
}

// DenyID denies the request with id.
func (c *Client) DenyID(ctx context.Context, id string) (*Decision, error) {
	return c.decideID(ctx, "/gate/deny", "denying", id)
}

func (c *Client) decide(ctx context.Context, path, verb, code string) (*Decision, error) {
	norm, err := tang.NormalizeCode(code)
	if err != nil {
		return nil, err
	}
	body, _ := json.Marshal(map[string]string{"code": norm})
	var d Decision
	if err := c.call(ctx, http.MethodPost, path, body, verb+" "+norm, &d); err != nil {
		return nil, err
	}
	return &d, nil
}

func (c *Client) decideID(ctx context.Context, path, verb, id string) (*Decision, error) {
	if err := CheckRequestID(id); err != nil {
		return nil, err
	}
	body, _ := json.Marshal(map[string]string{"id": id})
	var d Decision
	if err := c.call(ctx, http.MethodPost, path, body, verb+" request "+id, &d); err != nil {
		if e, ok := err.(*APIError); ok {
			e.byID = true
		}
		return nil, err
	}
	return &d, nil
}

func (c *Client) call(ctx context.Context, method, path string, body []byte, op string, out any) error {
	base, err := tang.BaseURL(c.URL)
	if err != nil {
		return err
	}
	hc := c.HTTP
	if hc == nil {
		hc = &http.Client{Timeout: 10 * time.Second}
	}
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, base+path, rd)
	if err != nil {
		return err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.Token != "" {
		req.Header.Set("Authorization", "Bearer "+c.Token)
	}
	resp, err := hc.Do(req)
	if err != nil {
		return fmt.Errorf("gate %s: %s: %w: %v", base, op, ErrGateUnreachable, tang.UnwrapURLError(err))
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxOperatorResponse))
	if err != nil {
		return fmt.Errorf("gate %s: %s: %w: reading the answer: %v", base, op, ErrGateUnreachable, err)
	}
	if resp.StatusCode != http.StatusOK {
		var e struct {
			Error string `json:"error"`
		}
		msg := http.StatusText(resp.StatusCode)
		if json.Unmarshal(data, &e) == nil && e.Error != "" {
			msg = Printable(e.Error)
		}
		return &APIError{URL: base, Op: op, Status: resp.StatusCode, Message: msg}
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("gate %s: %s: the answer is not the operator API's JSON: %v", base, op, err)
	}
	return nil
}

// CheckRequestID reports whether id has the form of a request id.
func CheckRequestID(id string) error {
	if !requestID.MatchString(id) {
		return fmt.Errorf("request id %q: an id is 1 to 32 letters, digits, '-' or '_'", Printable(id))
	}
	return nil
}

// Printable is tang.Printable, the one escaping of text from a gate or a
// JWE, for the operator's side.
func Printable(s string) string { return tang.Printable(s) }
