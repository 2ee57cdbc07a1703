package gate

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"time"
)

// Webhook notifies a URL of each request that becomes ready for a
// decision: a POST of WebhookEvent as JSON, retried with backoff until the
// receiver answers 2xx or the attempts run out.
type Webhook struct {
	URL string
	// Secret, if set, signs each delivery: WebhookSignatureHeader is
	// "t=UNIX,v1=HEX", HEX the HMAC-SHA256 under Secret of the decimal
	// UNIX time, ".", and the body exactly as sent. Each attempt is
	// signed at its own time, so a receiver that refuses old times sees a
	// replay. See docs/approval.md, "Webhook".
	Secret []byte
	// HTTP is the client; nil means one with a 10 s timeout.
	HTTP *http.Client
	// Attempts bounds the deliveries of one event; zero means 5.
	Attempts int
	// Backoff is the wait before the first retry, doubled for each next
	// one; zero means 1 s.
	Backoff time.Duration
}

// WebhookEvent is the body a webhook receives: "pending" with the
// request (never its code), or "lock" with the operator whose approvals
// wrong codes locked.
type WebhookEvent struct {
	Event   string   `json:"event"`
	Request *Request `json:"request,omitempty"`
	Lock    *Lock    `json:"lock,omitempty"`
}

// WebhookSignatureHeader carries a delivery's signature (Webhook.Secret).
const WebhookSignatureHeader = "Sealgate-Signature"

// signWebhook is the WebhookSignatureHeader value for body sent at now.
func signWebhook(secret []byte, now time.Time, body []byte) string {
	t := strconv.FormatInt(now.Unix(), 10)
	mac := hmac.New(sha256.New, secret)
	mac.Write([]byte(t))
	mac.Write([]byte("."))
	mac.Write(body)
	return "t=" + t + ",v1=" + hex.EncodeToString(mac.Sum(nil))
}

// maxWebhooks bounds the deliveries in flight; beyond it events are
// dropped (and logged), so a dead receiver cannot pile up goroutines.
const maxWebhooks = 32

// notify sends r to the webhook in the background.
func (g *Gate) notify(r Request) {
	wh := g.cfg.Webhook
	if wh == nil {
		return
	}
	select {
	case g.hooks <- struct{}{}:
	default:
		g.log.Warn("webhook: too many deliveries in flight; dropped", "id", r.ID)
		return
	}
	g.hooksWG.Add(1)
	go func() {
		defer g.hooksWG.Done()
		defer func() { <-g.hooks }()
		body, _ := json.Marshal(WebhookEvent{Event: "pending", Request: &r})
		if err := wh.deliver(g.closing, body); err != nil {
			g.log.Error("webhook delivery failed", "id", r.ID, "err", err)
		}
	}()
}

// Close stops the gate's background work: webhook deliveries in flight
// are cancelled, and Close waits for them to end. The gate still answers
// requests (the HTTP server's shutdown ends those).
func (g *Gate) Close() {
	g.stop()
	g.hooksWG.Wait()
}

func (wh *Webhook) deliver(ctx context.Context, body []byte) error {
	hc := wh.HTTP
	if hc == nil {
		hc = &http.Client{Timeout: 10 * time.Second}
	}
	attempts, backoff := wh.Attempts, wh.Backoff
	if attempts <= 0 {
		attempts = 5
	}
	if backoff <= 0 {
		backoff = time.Second
	}
	// The URL can carry a secret (a path or query token): errors name its
	// host only.
	host := "webhook"
	if u, err := url.Parse(wh.URL); err == nil {
		host = u.Host
	}
	var last error
	for i := range attempts {
		if i > 0 {
			t := time.NewTimer(backoff)
			select {
			case <-ctx.Done():
				t.Stop()
				return ctx.Err()
			case <-t.C:
			}
			backoff *= 2
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, wh.URL, bytes.NewReader(body))
		if err != nil {
			return fmt.Errorf("webhook at %s: %v", host, err)
		}
		req.Header.Set("Content-Type", "application/json")
		if len(wh.Secret) > 0 {
			req.Header.Set(WebhookSignatureHeader, signWebhook(wh.Secret, time.Now(), body))
		}
		resp, err := hc.Do(req)
		if err != nil {
			last = fmt.Errorf("webhook at %s: attempt %d of %d: unreachable", host, i+1, attempts)
			continue
		}
		io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		resp.Body.Close()
		if resp.StatusCode/100 == 2 {
			return nil
		}
		last = fmt.Errorf("webhook at %s: attempt %d of %d: HTTP %d", host, i+1, attempts, resp.StatusCode)
	}
	return last
}
