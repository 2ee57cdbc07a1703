package main

import (
	"fmt"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sealproxy/sealproxy/cmd/internal/cli"
	"github.com/sealproxy/sealproxy/testenv"
	"github.com/sealproxy/sealproxy/unlock/gate"
)

// awaitRequest returns the next request ready for a decision at a gate.
func awaitRequest(t *testing.T, ready <-chan gate.Request, r *running) gate.Request {
	t.Helper()
	select {
	case req := <-ready:
		return req
	case <-time.After(time.Minute):
		logs := ""
		if r != nil {
			logs = r.logs.String()
		}
		t.Fatalf("no request at the gate:\n%s", logs)
	}
	return gate.Request{}
}

// checkOneSession checks that the gate holds exactly one pending request:
// req, a complete session of n keys.
func checkOneSession(t *testing.T, g *gate.Gate, req gate.Request, n int) {
	t.Helper()
	if !req.Session || req.Keys != n || req.Arrived != n || !req.Complete || len(req.Kids) == 0 {
		t.Errorf("request %+v, want a complete session of %d keys", req, n)
	}
	if p := g.Pending(); len(p) != 1 || p[0].Code != req.Code {
		t.Errorf("pending at the gate: %+v, want only %s", p, req.Code)
	}
}

var waitingRE = regexp.MustCompile(`msg="waiting for approval" key=(\S+) tang_url=(\S+) code=(\S+)`)

// TestThreeKeysOneSession: three keys sealed to one gate are one approval
// session of one start-up: one pending request, whose code the daemon
// logged once and shows for every key, and one approval opens them all.
func TestThreeKeysOneSession(t *testing.T) {
	g := testenv.StartGate(t, heldGate)
	url, pin := g.URL, g.PinConfig()
	f := newFixture(t)
	names := []string{"web", "api", "db"}
	cfg := ""
	for _, n := range names {
		f.sealedTo(n, pin)
		cfg += key(n)
	}
	for _, n := range names {
		cfg += f.listener(n, "127.0.0.1:0")
	}
	path := f.write(cfg)
	n := listenNotify(t)
	r := startDaemon(t, &daemon{}, path)

	req := awaitRequest(t, g.Ready, r)
	checkOneSession(t, g.Gate, req, 3)
	want := "STATUS=unlocking keys: 0 of 3 open"
	for _, k := range []string{"api", "db", "web"} { // sorted
		want += "; " + k + ": waiting for approval (code " + req.Code + ") at " + url
	}
	n.expect(t, want)
	m := waitingRE.FindAllStringSubmatch(r.logs.String(), -1)
	if len(m) != 1 || m[0][1] != "web,api,db" || m[0][2] != url || m[0][3] != req.Code {
		t.Errorf("want one waiting line for web,api,db at %s with code %s, got %q:\n%s", url, req.Code, m, r.logs.String())
	}

	if _, err := g.Approve(req.Code, "alice", "test"); err != nil {
		t.Fatal(err)
	}
	n.expect(t, "READY=1", "serving 3 listener(s)")
	for _, k := range names {
		f.roundTrip(r.addr(k), k, "one approval for "+k)
	}
	select {
	case extra := <-g.Ready:
		t.Errorf("a second request at the gate: %+v", extra)
	default:
	}
	logs := r.logs.String()
	if strings.Contains(logs, "unlocking key failed") || strings.Count(logs, `msg="key unlocked"`) != 3 ||
		strings.Contains(logs, "attempts=2") {
		t.Errorf("want each key unlocked at its first attempt:\n%s", logs)
	}

	// A reload that needs new sealed keys asks for them in one new
	// session; the open keys are kept.
	f.sealedTo("mail", pin)
	f.sealedTo("dns", pin)
	cfg2 := cfg + key("mail") + key("dns") + f.listener("mail", "127.0.0.1:0") + f.listener("dns", "127.0.0.1:0")
	f.write(cfg2)
	r.sigs <- syscall.SIGHUP
	req2 := awaitRequest(t, g.Ready, r)
	checkOneSession(t, g.Gate, req2, 2)
	if _, err := g.Approve(req2.Code, "alice", "test"); err != nil {
		t.Fatal(err)
	}
	n.expect(t, "READY=1", "serving 5 listener(s)")
	f.roundTrip(r.addr("dns"), "dns", "reloaded")
	m = waitingRE.FindAllStringSubmatch(r.logs.String(), -1)
	if len(m) != 2 || m[1][1] != "mail,dns" || m[1][3] != req2.Code {
		t.Errorf("want a waiting line for mail,dns with code %s, got %q", req2.Code, m)
	}
}

// TestThreeKeysDenied: denying the start-up's session ends it at once
// with exit code 4, every key denied or abandoned.
func TestThreeKeysDenied(t *testing.T) {
	g := testenv.StartGate(t, heldGate)
	pin := g.PinConfig()
	f := newFixture(t)
	cfg := ""
	for _, n := range []string{"web", "api", "db"} {
		f.sealedTo(n, pin)
		cfg += key(n) + f.listener(n, "127.0.0.1:0")
	}
	path := f.write(cfg)
	errc := make(chan error, 1)
	go func() {
		req := <-g.Ready
		if req.Keys != 3 || req.Arrived != 3 {
			errc <- fmt.Errorf("request %+v, want a session of 3 keys", req)
			return
		}
		_, err := g.Deny(req.Code, "alice", "test")
		errc <- err
	}()
	_, stderr, code := runCLI(t, "run", "--config", path)
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	if code != cli.ExitDenied || !strings.Contains(stderr, "3 key(s) still locked") ||
		!strings.Contains(stderr, "recovery denied by operator alice") ||
		!strings.Contains(stderr, "sealproxy: hint: an operator denied this start-up") {
		t.Fatalf("code %d, stderr:\n%s", code, stderr)
	}
	for _, n := range []string{"web", "api", "db"} {
		if !strings.Contains(stderr, `key "`+n+`"`) {
			t.Errorf("stderr does not name key %q:\n%s", n, stderr)
		}
	}
}

// TestThreeKeysNotApproved: nobody decides; the [unlock] timeout names
// each key still waiting, with the session's code.
func TestThreeKeysNotApproved(t *testing.T) {
	g := testenv.StartGate(t, heldGate)
	pin := g.PinConfig()
	f := newFixture(t)
	cfg := "[unlock]\ntimeout = \"1s\"\n\n"
	for _, n := range []string{"web", "api", "db"} {
		f.sealedTo(n, pin)
		cfg += key(n) + f.listener(n, "127.0.0.1:0")
	}
	path := f.write(cfg)
	_, stderr, code := runCLI(t, "run", "--config", path)
	req := awaitRequest(t, g.Ready, nil)
	if code != exitUnlock || !strings.Contains(stderr, "gave up unlocking after 1s ([unlock] timeout): 3 key(s) still locked") {
		t.Fatalf("code %d, stderr:\n%s", code, stderr)
	}
	for _, n := range []string{"web", "api", "db"} {
		if !strings.Contains(stderr, `key "`+n+`"`) {
			t.Errorf("stderr does not name key %q:\n%s", n, stderr)
		}
	}
	if !strings.Contains(stderr, req.Code) {
		t.Errorf("stderr lacks the code %s:\n%s", req.Code, stderr)
	}
}
