package gate_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sealproxy/sealproxy/testenv"
	"github.com/sealproxy/sealproxy/unlock"
	"github.com/sealproxy/sealproxy/unlock/gate"
)

// TestHeldRequestsBounded: a source that keeps polling a pending
// recovery gets at most MaxHeldPerSource requests held open; the rest
// are answered 202 at once (counted), and the held ones are released
// when the decision comes.
func TestHeldRequestsBounded(t *testing.T) {
	f := newFixture(t, func(c *gate.Config) {
		c.MaxHeldPerSource = 2
		c.Hold = time.Minute // only the decision ends a hold in this test
	})
	kid, b := f.blind(t)
	_, st := f.postPoint(t, kid, b, nil) // pending, not held
	<-f.Ready

	body, _ := json.Marshal(b.Request())
	poll := func() (int, time.Duration) {
		start := time.Now()
		req, err := http.NewRequestWithContext(testCtx(t), http.MethodPost, f.URL+"/rec/"+kid, bytes.NewReader(body))
		if err != nil {
			t.Error(err)
			return 0, 0
		}
		req.Header.Set("Content-Type", "application/jwk+json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Error(err)
			return 0, 0
		}
		defer resp.Body.Close()
		_, _ = io.Copy(io.Discard, resp.Body)
		return resp.StatusCode, time.Since(start)
	}
	held := make(chan int, 2)
	for range 2 {
		go func() { status, _ := poll(); held <- status }()
	}
	waitMetric(t, f, "sealgate_requests_held 2")

	// A third poll from the same source is not held.
	if status, took := poll(); status != http.StatusAccepted || took > 20*time.Second {
		t.Fatalf("third poll: %d after %v, want 202 at once", status, took)
	}
	waitMetric(t, f, "sealgate_unheld_total 1")
	select {
	case s := <-held:
		t.Fatalf("a held poll returned %d before the decision", s)
	default:
	}

	if _, err := f.g.ApproveID(f.id(t, st.Code), "alice", "test"); err != nil {
		t.Fatal(err)
	}
	// Both held polls wake: one collects the answer; for the other the
	// point was already answered, so it is a new request, pending (202).
	got := []int{<-held, <-held}
	slices.Sort(got)
	if !slices.Equal(got, []int{http.StatusOK, http.StatusAccepted}) {
		t.Fatalf("held polls after approval: %v, want [200 202]", got)
	}
	waitMetric(t, f, "sealgate_requests_held 0")
}

// waitMetric polls the gate's metrics until one line equals want.
func waitMetric(t *testing.T, f *fixture, want string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var last string
	scrape := func() bool {
		req, _ := http.NewRequest(http.MethodGet, f.URL+"/gate/metrics", nil)
		req.Header.Set("Authorization", "Bearer "+f.Token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		data, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		last = string(data)
		return slices.Contains(strings.Split(last, "\n"), want)
	}
	if !testenv.Poll(ctx, scrape) {
		t.Fatalf("metrics never showed %q; last scrape:\n%s", want, last)
	}
}

// TestUnauthorizedFloodAuditedInSummary: a flood of unauthorized operator
// calls from one source writes its first ten audit lines, then one
// summary line per minute, not one fsynced line per call.
func TestUnauthorizedFloodAuditedInSummary(t *testing.T) {
	f := newFixture(t, nil)
	get := func() {
		req, _ := http.NewRequest(http.MethodGet, f.URL+"/gate/pending", nil)
		req.Header.Set("Authorization", "Bearer sgt_wrong")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("wrong token: %d, want 401", resp.StatusCode)
		}
	}
	for range 25 {
		get()
	}
	count := func(event string) int {
		n := 0
		for _, e := range f.auditEvents(t) {
			if e.Event == event {
				n++
			}
		}
		return n
	}
	if n := count("unauthorized"); n != 10 {
		t.Fatalf("%d unauthorized lines in the audit log after 25 calls, want 10", n)
	}
	waitMetric(t, f, "sealgate_audit_suppressed_total 15")
	f.Clock.Advance(time.Minute + time.Second)
	get() // a new window: written, after the summary of the last one
	f.wantEvents(t, `suppressed:15 more "unauthorized" events from this source in 1m0s after 10 written`, "unauthorized:GET /gate/pending")
	if n := count("unauthorized"); n != 11 {
		t.Fatalf("%d unauthorized lines, want 11", n)
	}
}

// TestWideSSSSession: an sss node with more shares at one gate than a
// client recovers at once outside a session (32) still completes its
// session: every point must arrive before the gate can approve it.
func TestWideSSSSession(t *testing.T) {
	f := newFixture(t, nil)
	const shares = 40
	cfgs := strings.TrimSuffix(strings.Repeat(f.Config()+",", shares), ",")
	secret := []byte("wide secret")
	jwe := seal(t, "sss", fmt.Sprintf(`{"t":%d,"pins":{"tang":[%s]}}`, shares, cfgs), secret)
	done, _ := decryptAsync(testCtx(t), jwe, &unlock.Options{Startup: unlock.NewStartup("web-1")})
	req := f.next(t)
	if req.Keys != shares || req.Arrived != shares {
		t.Fatalf("session request %+v, want all %d points arrived", req, shares)
	}
	if _, err := f.Operator(f.Token).Approve(testCtx(t), req.Code); err != nil {
		t.Fatal(err)
	}
	if r := wait(t, done); r.err != nil || !bytes.Equal(r.plain, secret) {
		t.Fatalf("Decrypt: %v", r.err)
	}
}
