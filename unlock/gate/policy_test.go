package gate_test

import (
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/sealproxy/sealproxy/unlock/gate"
	"github.com/sealproxy/sealproxy/unlock/tang"
)

func TestParsePolicy(t *testing.T) {
	rules, err := gate.ParsePolicy([]byte(`
[[rule]]
name = "office"
action = "approve"
sources = ["127.0.0.0/8", "::1"]
hosts = ["web-*"]
window = "22:00-06:00"
max = 2
per = "1h"

[[rule]]
action = "deny"
hosts = ["evil*"]
`))
	if err != nil {
		t.Fatal(err)
	}
	if len(rules) != 2 || rules[0].Name != "office" || rules[0].Action != gate.StateApproved || len(rules[0].Sources) != 2 ||
		*rules[0].Window != (gate.Window{From: 22 * 60, To: 6 * 60}) || rules[0].Max != 2 || rules[0].Per != time.Hour ||
		rules[1].Name != "2" || rules[1].Action != gate.StateDenied {
		t.Fatalf("rules = %+v", rules)
	}
	for name, bad := range map[string]string{
		"unknown key":            "[[rule]]\naction = \"approve\"\nsource = [\"10.0.0.0/8\"]\n",
		"action":                 "[[rule]]\naction = \"allow\"\n",
		"source":                 "[[rule]]\naction = \"approve\"\nsources = [\"10.0.0.0/33\"]\n",
		"host pattern":           "[[rule]]\naction = \"approve\"\nhosts = [\"[\"]\n",
		"window":                 "[[rule]]\naction = \"approve\"\nwindow = \"8-18\"\n",
		"max without per":        "[[rule]]\naction = \"approve\"\nmax = 3\n",
		"per":                    "[[rule]]\naction = \"approve\"\nmax = 3\nper = \"soon\"\n",
		"max on deny":            "[[rule]]\naction = \"deny\"\nmax = 3\nper = \"1h\"\n",
		"not TOML":               "[[rule]\n",
		"approve anyone":         "[[rule]]\naction = \"approve\"\nhosts = [\"web-*\"]\n",
		"any_source and sources": "[[rule]]\naction = \"approve\"\nany_source = true\nsources = [\"10.0.0.0/8\"]\n",
		"any_source on deny":     "[[rule]]\naction = \"deny\"\nany_source = true\n",
		"reserved source":        "reserved_sources = [\"10.0.0.0/33\"]\n",
	} {
		if _, err := gate.ParsePolicy([]byte(bad)); !errors.Is(err, gate.ErrBadPolicy) {
			t.Errorf("%s: err = %v, want ErrBadPolicy", name, err)
		}
	}
}

// TestPolicyAnySource: an approve rule without sources approves anyone
// who holds a sealed key and reaches the gate, so it must say so.
func TestPolicyAnySource(t *testing.T) {
	_, err := gate.ParsePolicy([]byte("[[rule]]\nname = \"web\"\naction = \"approve\"\nhosts = [\"web-*\"]\n"))
	if !errors.Is(err, gate.ErrApproveAnySource) || !errors.Is(err, gate.ErrBadPolicy) ||
		err.Error() != "bad policy: rule 1 (web): an approve rule without sources approves anyone who can reach the gate with a sealed key" {
		t.Fatalf("approve rule without sources: %v", err)
	}
	p, err := gate.ParsePolicyFile([]byte("reserved_sources = [\"10.2.0.0/16\", \"192.0.2.7\"]\n[[rule]]\naction = \"approve\"\nany_source = true\nhosts = [\"web-*\"]\n"))
	if err != nil || len(p.Rules) != 1 || !p.Rules[0].AnySource || len(p.Rules[0].Sources) != 0 ||
		len(p.Reserved) != 2 || p.Reserved[1].String() != "192.0.2.7/32" {
		t.Fatalf("any_source = true: %+v, %v", p, err)
	}
}

// TestPolicies: rules approve or deny without an operator, by source,
// host label, time window and count; what no rule decides waits.
func TestPolicies(t *testing.T) {
	rules, err := gate.ParsePolicy([]byte(`
[[rule]]
name = "evil"
action = "deny"
hosts = ["evil-*"]

[[rule]]
name = "web at night"
action = "approve"
sources = ["127.0.0.1/32"]
hosts = ["web-*"]
window = "22:00-06:00"
max = 2
per = "1h"
`))
	if err != nil {
		t.Fatal(err)
	}
	f := newFixture(t, func(c *gate.Config) { c.Rules = rules })
	night := time.Date(2026, 11, 23, 23, 30, 0, 0, time.UTC)
	f.Clock.mu.Lock()
	f.Clock.now = night
	f.Clock.mu.Unlock()
	kid, _ := f.blind(t)
	try := func(host string) (int, tang.Status) {
		_, b := f.blind(t)
		return f.postPoint(t, kid, b, map[string]string{tang.HeaderSession: tang.NewSessionID(), tang.HeaderHost: host, tang.HeaderKeys: "1"})
	}
	if status, _ := try("web-1"); status != http.StatusOK {
		t.Fatalf("web-1 at night: %d, want 200 (approved by policy)", status)
	}
	if status, st := try("evil-1"); status != http.StatusForbidden || st.Operator != "policy:evil" {
		t.Fatalf("evil-1: %d %+v, want 403 by policy:evil", status, st)
	}
	if status, _ := try("db-1"); status != http.StatusAccepted {
		t.Fatalf("db-1: %d, want 202 (no rule: an operator decides)", status)
	}
	if status, _ := try("web-2"); status != http.StatusOK {
		t.Fatalf("web-2: %d, want 200", status)
	}
	if status, _ := try("web-3"); status != http.StatusAccepted {
		t.Fatalf("web-3, beyond max 2 per hour: %d, want 202", status)
	}
	f.Clock.Advance(time.Hour)
	if status, _ := try("web-4"); status != http.StatusOK {
		t.Fatalf("web-4 an hour later: %d, want 200", status)
	}
	f.Clock.Advance(6 * time.Hour) // 06:30: outside the window
	if status, _ := try("web-5"); status != http.StatusAccepted {
		t.Fatalf("web-5 in the morning: %d, want 202", status)
	}
	events := f.wantEvents(t, "approve:approved", "deny:denied", "approve:approved", "approve:approved")
	for _, e := range events {
		if e.Event == "approve" && e.Operator != "policy:web at night" {
			t.Errorf("auto-approval by %q, want policy:web at night", e.Operator)
		}
	}
}
