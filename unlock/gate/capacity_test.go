package gate_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"

	"github.com/sealproxy/sealproxy/unlock/gate"
	"github.com/sealproxy/sealproxy/unlock/tang"
)

// recFrom sends a recovery to the gate's handler as if from addr (the
// handler's own seam: http.Request.RemoteAddr), as a session of keys
// keys, answered at once.
func (f *fixture) recFrom(t *testing.T, addr, kid string, body []byte, session string, keys int) (int, string) {
	t.Helper()
	r := httptest.NewRequest(http.MethodPost, "/rec/"+kid, bytes.NewReader(body))
	r.RemoteAddr = addr
	r.Header.Set("Prefer", "respond-async")
	if session != "" {
		r.Header.Set(tang.HeaderSession, session)
		r.Header.Set(tang.HeaderKeys, fmt.Sprint(keys))
	}
	w := httptest.NewRecorder()
	f.g.ServeHTTP(w, r)
	return w.Code, w.Body.String()
}

// TestPendingPerNetwork: undecided requests are bounded per /24 (IPv4)
// and /64 (IPv6), not only per address, so one network's many addresses
// cannot fill the gate; another network still gets in.
func TestPendingPerNetwork(t *testing.T) {
	f := newFixture(t, func(c *gate.Config) { c.MaxPendingPerNetwork = 20 })
	kid, b := f.blind(t)
	body, _ := json.Marshal(b.Request())
	for k, tc := range []struct{ addrs, net, other string }{
		{"10.9.8.%d", "10.9.8.0/24", "10.9.9.1"},
		{"2001:db8:1:2::%d", "2001:db8:1:2::/64", "2001:db8:1:3::1"},
	} {
		accepted, refused := 0, 0
		for i := 1; i <= 3; i++ {
			addr := netip.MustParseAddr(fmt.Sprintf(tc.addrs, i))
			for j := range gate.DefaultMaxPendingPerSource {
				status, answer := f.recFrom(t, netip.AddrPortFrom(addr, 4000).String(), kid, body, fmt.Sprintf("s%d-%d-%d", k, i, j), 2)
				switch status {
				case http.StatusAccepted:
					accepted++
				case http.StatusTooManyRequests:
					refused++
					mustContain(t, answer, "20 requests from this source's network "+tc.net+" are already pending")
				default:
					t.Fatalf("%s: %d %s", addr, status, answer)
				}
			}
		}
		if accepted != 20 || refused != 4 {
			t.Errorf("%s: %d accepted, %d refused; want 20 and 4", tc.net, accepted, refused)
		}
		if status, answer := f.recFrom(t, netip.AddrPortFrom(netip.MustParseAddr(tc.other), 4000).String(), kid, body, fmt.Sprint("other-", k), 2); status != http.StatusAccepted {
			t.Errorf("another network (%s): %d %s", tc.other, status, answer)
		}
	}
	// An IPv4-mapped IPv6 address is its IPv4 network.
	if status, answer := f.recFrom(t, "[::ffff:10.9.8.200]:4000", kid, body, "s-mapped", 2); status != http.StatusTooManyRequests {
		t.Errorf("::ffff:10.9.8.200: %d %s, want 429", status, answer)
	}
}

// TestReservedCapacity: when requests from elsewhere have filled the
// gate, sources that Config.Reserved lists or an approve rule names still
// get requests in (a pool of their own), and a request a rule decides as
// it arrives needs no room at all. A full gate's 503 says the gate is
// full.
func TestReservedCapacity(t *testing.T) {
	rules := []gate.Rule{{Name: "known", Action: gate.StateApproved, Sources: []netip.Prefix{netip.MustParsePrefix("198.51.100.7/32")}}}
	f := newFixture(t, func(c *gate.Config) {
		c.MaxPending, c.MaxPendingReserved = 10, 3
		c.Reserved = []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")}
		c.Rules = rules
	})
	kid, b := f.blind(t)
	body, _ := json.Marshal(b.Request())
	for i := range 10 {
		if status, answer := f.recFrom(t, fmt.Sprintf("10.0.%d.1:4000", i), kid, body, fmt.Sprintf("flood-%d", i), 2); status != http.StatusAccepted {
			t.Fatalf("flood request %d: %d %s", i, status, answer)
		}
	}
	status, answer := f.recFrom(t, "10.0.99.1:4000", kid, body, "flood-full", 2)
	if status != http.StatusServiceUnavailable || !strings.Contains(answer, `"error":"gate full: 10 requests are waiting for a decision;`) {
		t.Fatalf("past MaxPending: %d %s, want 503 saying the gate is full", status, answer)
	}
	// The reserved pool: a listed network, and a rule's source whose
	// session waits for its second key.
	for i, addr := range []string{"192.0.2.5:4000", "192.0.2.6:4000", "198.51.100.7:4000"} {
		if status, answer := f.recFrom(t, addr, kid, body, fmt.Sprint("known-", i), 2); status != http.StatusAccepted {
			t.Fatalf("reserved source %s while the gate is full: %d %s, want 202", addr, status, answer)
		}
	}
	status, answer = f.recFrom(t, "192.0.2.9:4000", kid, body, "known-full", 2)
	if status != http.StatusServiceUnavailable || !strings.Contains(answer, "gate full: 3 requests from reserved sources") {
		t.Fatalf("past MaxPendingReserved: %d %s", status, answer)
	}
	// Both pools full: a recovery the rule approves as it arrives is
	// answered at once.
	if status, answer := f.recFrom(t, "198.51.100.7:4000", kid, body, "", 0); status != http.StatusOK {
		t.Fatalf("a recovery a rule approves, both pools full: %d %s, want 200", status, answer)
	}
	if n := len(f.g.Pending()); n != 13 {
		t.Fatalf("%d pending, want 13", n)
	}
}
