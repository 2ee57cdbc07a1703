package gate_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
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
