package gate_test

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sealproxy/sealproxy/unlock/gate"
	"github.com/sealproxy/sealproxy/unlock/tang"
)

// TestWebhook: each request ready for a decision is POSTed to the
// webhook, retried until the receiver takes it; a session is announced
// once, when complete.
func TestWebhook(t *testing.T) {
	var calls atomic.Int32
	got := make(chan gate.WebhookEvent, 8)
	recv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := calls.Add(1)
		body, _ := io.ReadAll(r.Body)
		if n <= 2 {
			w.WriteHeader(http.StatusServiceUnavailable) // the first two deliveries fail
			return
		}
		if sig := r.Header.Get(gate.WebhookSignatureHeader); sig != "" {
			t.Errorf("a webhook without a secret sent %s: %s", gate.WebhookSignatureHeader, sig)
		}
		var ev gate.WebhookEvent
		if r.Header.Get("Content-Type") != "application/json" || json.Unmarshal(body, &ev) != nil {
			t.Errorf("webhook body %q, type %q", body, r.Header.Get("Content-Type"))
		}
		got <- ev
	}))
	defer recv.Close()
	f := newFixture(t, func(c *gate.Config) {
		c.Webhook = &gate.Webhook{URL: recv.URL + "/hook?secret=abc", Backoff: time.Millisecond}
	})
	kid, b1 := f.blind(t)
	_, b2 := f.blind(t)
	hdr := map[string]string{tang.HeaderSession: "hooked", tang.HeaderHost: "web-1", tang.HeaderKeys: "2"}
	f.postPoint(t, kid, b1, hdr)
	_, st := f.postPoint(t, kid, b2, hdr)
	var ev gate.WebhookEvent
	select {
	case ev = <-got:
	case <-testCtx(t).Done():
		t.Fatal("no webhook delivery")
	}
	if ev.Event != "pending" || ev.Request == nil || ev.Request.ID != f.id(t, st.Code) || ev.Request.Host != "web-1" || ev.Request.Keys != 2 || !ev.Request.Complete {
		t.Fatalf("webhook event %+v, want the complete session %s", ev, st.Code)
	}
	if n := calls.Load(); n != 3 {
		t.Fatalf("%d deliveries, want 3 (two failures, then success)", n)
	}
}

// TestWebhookGivesUp: a receiver that never takes the event gets the
// configured number of attempts; the failure is logged without the URL's
// secret, and the request still waits for an operator.
func TestWebhookGivesUp(t *testing.T) {
	var calls atomic.Int32
	done := make(chan struct{})
	recv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if calls.Add(1) == 3 {
			defer close(done)
		}
		w.WriteHeader(http.StatusInternalServerError)
	}))
	defer recv.Close()
	failed := make(chan struct{}, 1)
	f := newFixture(t, func(c *gate.Config) {
		c.Webhook = &gate.Webhook{URL: recv.URL + "/hook/s3cr3t", Attempts: 3, Backoff: time.Millisecond}
		c.Log = slog.New(&signalHandler{Handler: c.Log.Handler(), msg: "webhook delivery failed", ch: failed})
	})
	kid, b := f.blind(t)
	_, st := f.postPoint(t, kid, b, nil)
	select {
	case <-failed:
	case <-testCtx(t).Done():
		t.Fatal("the failed delivery was not logged")
	}
	<-done
	if list := f.g.Pending(); len(list) != 1 || list[0].Code != st.Code {
		t.Fatalf("pending = %+v", list)
	}
	if strings.Contains(f.Logs.String(), "s3cr3t") {
		t.Fatal("the webhook URL's secret path was logged")
	}
	if n := calls.Load(); n != 3 {
		t.Fatalf("%d deliveries, want 3", n)
	}
}

// signalHandler passes records on and signals when one has message msg.
type signalHandler struct {
	slog.Handler
	msg string
	ch  chan struct{}
}

func (h *signalHandler) Handle(ctx context.Context, r slog.Record) error {
	err := h.Handler.Handle(ctx, r)
	if r.Message == h.msg {
		select {
		case h.ch <- struct{}{}:
		default:
		}
	}
	return err
}

// TestWebhookCancelledByClose: a delivery waiting to retry a dead
// receiver ends when the gate closes, instead of outliving it.
func TestWebhookCancelledByClose(t *testing.T) {
	var calls atomic.Int32
	first := make(chan struct{})
	recv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if calls.Add(1) == 1 {
			close(first)
		}
		w.WriteHeader(http.StatusServiceUnavailable)
	}))
	defer recv.Close()
	f := newFixture(t, func(c *gate.Config) {
		c.Webhook = &gate.Webhook{URL: recv.URL, Attempts: 5, Backoff: time.Hour}
	})
	kid, b := f.blind(t)
	f.postPoint(t, kid, b, nil)
	<-first // the first attempt failed; the next waits an hour
	closed := make(chan struct{})
	go func() { f.g.Close(); close(closed) }()
	select {
	case <-closed:
	case <-testCtx(t).Done():
		t.Fatal("Close did not end the delivery waiting to retry")
	}
	if n := calls.Load(); n != 1 {
		t.Fatalf("%d deliveries, want 1", n)
	}
}

// TestWebhookSigned: with a secret, each delivery carries
// Sealgate-Signature: t=UNIX,v1=HEX, where HEX is HMAC-SHA256 under the
// secret of "UNIX.BODY" (docs/approval.md). The receiver here verifies it
// as the docs tell a receiver to, independently of the gate's code; the
// same signature does not verify a body changed by one byte, nor another
// time, and each retry is signed anew.
func TestWebhookSigned(t *testing.T) {
	secret := []byte("c2VjcmV0IHNoYXJlZCB3aXRoIHRoZSByZWNlaXZlcg")
	type delivery struct {
		sig  string
		body []byte
		at   time.Time
	}
	got := make(chan delivery, 8)
	var calls atomic.Int32
	recv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		got <- delivery{r.Header.Get(gate.WebhookSignatureHeader), body, time.Now()}
		if calls.Add(1) == 1 {
			w.WriteHeader(http.StatusServiceUnavailable) // a retry follows
		}
	}))
	defer recv.Close()
	f := newFixture(t, func(c *gate.Config) {
		c.Webhook = &gate.Webhook{URL: recv.URL, Secret: secret, Backoff: 1100 * time.Millisecond}
	})
	kid, b := f.blind(t)
	f.postPoint(t, kid, b, nil)

	verify := func(sig string, body []byte) (time.Time, bool) {
		ts, mac, ok := strings.Cut(sig, ",")
		ts, ok1 := strings.CutPrefix(ts, "t=")
		mac, ok2 := strings.CutPrefix(mac, "v1=")
		unix, err := strconv.ParseInt(ts, 10, 64)
		if !ok || !ok1 || !ok2 || err != nil {
			return time.Time{}, false
		}
		want, err := hex.DecodeString(mac)
		h := hmac.New(sha256.New, secret)
		h.Write([]byte(ts + "." + string(body)))
		return time.Unix(unix, 0), err == nil && hmac.Equal(h.Sum(nil), want)
	}
	var sigs []string
	for i := range 2 {
		var d delivery
		select {
		case d = <-got:
		case <-testCtx(t).Done():
			t.Fatalf("delivery %d did not come", i+1)
		}
		at, ok := verify(d.sig, d.body)
		if !ok {
			t.Fatalf("delivery %d: signature %q does not verify body %s", i+1, d.sig, d.body)
		}
		if skew := d.at.Sub(at); skew < 0 || skew > 5*time.Second {
			t.Fatalf("delivery %d signed at %v, received at %v", i+1, at, d.at)
		}
		tampered := bytes.Replace(d.body, []byte(`"pending"`), []byte(`"pendinG"`), 1)
		if bytes.Equal(tampered, d.body) {
			t.Fatalf("nothing to tamper with in %s", d.body)
		}
		if _, ok := verify(d.sig, tampered); ok {
			t.Fatalf("delivery %d: the signature verifies a tampered body", i+1)
		}
		ts, rest, _ := strings.Cut(d.sig, ",")
		if _, ok := verify(ts+"1,"+rest, d.body); ok {
			t.Fatalf("delivery %d: the signature verifies another time", i+1)
		}
		sigs = append(sigs, d.sig)
	}
	if sigs[0] == sigs[1] {
		t.Fatalf("the retry carries the first attempt's signature %q", sigs[0])
	}
}
