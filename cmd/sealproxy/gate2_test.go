package main

import (
	"strings"
	"testing"
	"time"
)

// TestTwoKeysOneGate: two keys sealed to one gate each wait for an
// approval (one per key: see openWithRetry), and start-up completes once
// both are approved.
func TestTwoKeysOneGate(t *testing.T) {
	g, _, pin, ready := startGate(t)
	f := newFixture(t)
	f.sealedTo("web", pin)
	f.sealedTo("api", pin)
	path := f.write(key("web") + key("api") + f.listener("web", "127.0.0.1:0") + f.listener("api", "127.0.0.1:0"))
	n := listenNotify(t)
	r := startDaemon(t, &daemon{}, path)
	for i := range 2 {
		select {
		case req := <-ready:
			if _, err := g.Approve(req.Code, "alice", "test"); err != nil {
				t.Fatalf("approving %s: %v", req.Code, err)
			}
		case <-time.After(time.Minute):
			t.Fatalf("%d requests at the gate, want 2:\n%s", i, r.logs.String())
		}
	}
	n.expect(t, "READY=1", "serving 2 listener(s)")
	f.roundTrip(r.addr("api"), "api", "both approved")
	if strings.Contains(r.logs.String(), "unlocking key failed") {
		t.Errorf("a key failed:\n%s", r.logs.String())
	}
}
