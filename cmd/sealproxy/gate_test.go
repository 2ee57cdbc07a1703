package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sealproxy/sealproxy/cmd/internal/cli"
	"github.com/sealproxy/sealproxy/testenv"
	"github.com/sealproxy/sealproxy/unlock"
	"github.com/sealproxy/sealproxy/unlock/gate"
)

// heldGate is a gate (the code `sealgate serve` runs with approval
// required) that holds a recovery for only 100 ms before its 202 answer,
// so a waiting start-up polls, and a decision reaches it, quickly.
var heldGate = testenv.GateOptions{Configure: func(c *gate.Config) { c.Hold = 100 * time.Millisecond }}

func (f *fixture) sealedTo(name, pinConfig string) {
	f.t.Helper()
	leaf := f.ca.Server(f.t, name+".test")
	leaf.WriteFiles(f.t, f.dir, name)
	jwe, err := unlock.Encrypt(context.Background(), "tang", []byte(pinConfig), leaf.KeyPEM(f.t), nil)
	if err != nil {
		f.t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(f.dir, name+".key.jwe"), jwe, 0o600); err != nil {
		f.t.Fatal(err)
	}
	os.Remove(filepath.Join(f.dir, name+".key"))
}

// TestStartWaitsForApproval: a key sealed to a gate; start-up reports the
// approval code in STATUS= and the log, and goes on once an operator
// approves that code.
func TestStartWaitsForApproval(t *testing.T) {
	g := testenv.StartGate(t, heldGate)
	f := newFixture(t)
	f.sealedTo("web", g.PinConfig())
	path := f.write(key("web") + f.listener("web", "127.0.0.1:0"))
	n := listenNotify(t)
	r := startDaemon(t, &daemon{}, path)

	var req gate.Request
	select {
	case req = <-g.Ready:
	case <-time.After(time.Minute):
		t.Fatalf("no request at the gate:\n%s", r.logs.String())
	}
	n.expect(t, "STATUS=unlocking keys: 0 of 1 open; web: waiting for approval (code "+req.Code+") at "+g.URL)
	if !strings.Contains(r.logs.String(), `msg="waiting for approval" key=web tang_url=`+g.URL+` code=`+req.Code) {
		t.Errorf("log lacks the approval code %s:\n%s", req.Code, r.logs.String())
	}
	if _, err := g.Approve(req.Code, "alice", "test"); err != nil {
		t.Fatal(err)
	}
	n.expect(t, "READY=1")
	f.roundTrip(r.addr("web"), "web", "approved")
}

// TestStartDenied: an operator's denial ends start-up at once with exit
// code 4 and says so.
func TestStartDenied(t *testing.T) {
	g := testenv.StartGate(t, heldGate)
	f := newFixture(t)
	f.sealedTo("web", g.PinConfig())
	path := f.write(key("web") + f.listener("web", "127.0.0.1:0"))
	go func() {
		req := <-g.Ready
		g.Deny(req.Code, "alice", "test")
	}()
	_, stderr, code := runCLI(t, "run", "--config", path)
	if code != cli.ExitDenied || !strings.Contains(stderr, `key "web": `) || !strings.Contains(stderr, "recovery denied by operator alice") ||
		!strings.Contains(stderr, "sealproxy: hint: an operator denied this start-up") {
		t.Fatalf("code %d, stderr:\n%s", code, stderr)
	}
}
