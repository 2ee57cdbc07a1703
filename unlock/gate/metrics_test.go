package gate_test

import (
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/sealproxy/sealproxy/unlock/gate"
)

// TestMetrics: the gate counts requests, decisions, lapses and refusals,
// and serves them to operators only.
func TestMetrics(t *testing.T) {
	f := newFixture(t, func(c *gate.Config) { c.MaxPendingPerSource = 2 })
	kid, b1 := f.blind(t)
	_, b2 := f.blind(t)
	_, b3 := f.blind(t)
	_, st1 := f.postPoint(t, kid, b1, nil)
	_, st2 := f.postPoint(t, kid, b2, nil)
	f.postPoint(t, kid, b3, nil) // refused: 429
	f.Clock.Advance(30 * time.Second)
	if _, err := f.g.ApproveID(f.id(t, st1.Code), "alice", "test"); err != nil {
		t.Fatal(err)
	}
	if _, err := f.g.Deny(st2.Code, "alice", "test"); err != nil {
		t.Fatal(err)
	}
	_, b4 := f.blind(t)
	f.postPoint(t, kid, b4, nil)
	f.Clock.Advance(gate.DefaultPendingTTL + time.Second) // b4 lapses, and b1's approval

	get := func(token string) (int, string) {
		req, _ := http.NewRequest(http.MethodGet, f.URL+"/gate/metrics", nil)
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}
	if status, _ := get("sgt_nope"); status != http.StatusUnauthorized {
		t.Fatalf("metrics without a valid token: %d, want 401", status)
	}
	status, body := get(f.Token)
	if status != 200 {
		t.Fatalf("metrics: %d", status)
	}
	for _, want := range []string{
		"sealgate_requests_total 3",
		`sealgate_decisions_total{by="operator",decision="approved"} 1`,
		`sealgate_decisions_total{by="operator",decision="denied"} 1`,
		`sealgate_expired_total{state="pending"} 1`,
		`sealgate_expired_total{state="approved"} 1`,
		"sealgate_refused_total 1",
		"sealgate_requests_pending 0",
		`sealgate_decision_seconds_bucket{decision="approved",le="30"} 1`,
		`sealgate_decision_seconds_bucket{decision="approved",le="15"} 0`,
	} {
		if !strings.Contains(body, want+"\n") {
			t.Errorf("metrics lack %q", want)
		}
	}
	if t.Failed() {
		t.Log(body)
	}
}
