package testenv

import (
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/rogpeppe/go-internal/testscript"

	"github.com/sealproxy/sealproxy/unlock/gate"
	"github.com/sealproxy/sealproxy/unlock/tang"
)

// scriptGate is a gate started by the `gate` script command.
type scriptGate struct {
	srv   *http.Server
	done  chan struct{}
	ready chan gate.Request
	audit *gate.FileAudit
}

func (g *scriptGate) stop() {
	if g.srv != nil {
		g.srv.Close()
		<-g.done
		g.audit.Close()
		g.srv = nil
	}
}

// cmdGate runs a gate (unlock/gate, the code `sealgate serve --approval
// required` runs) for a script:
//
//	gate start NAME     serve $WORK/gate-NAME (keys generated) on
//	                    127.0.0.1:0 with one operator, alice; set $NAME_URL,
//	                    $NAME_THP, $NAME_CFG, $NAME_TOKEN (a file holding
//	                    alice's token) and $NAME_AUDIT (the audit log)
//	gate wait NAME      wait for the next request ready for a decision and
//	                    set $NAME_CODE to its code (which the host shows,
//	                    not the gate) and $NAME_ID to its request id
//	gate stop NAME      stop it
func cmdGate(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 2 {
		ts.Fatalf("usage: gate start|wait|stop NAME")
	}
	s := state(ts)
	name := args[1]
	s.mu.Lock()
	g := s.gates[name]
	s.mu.Unlock()
	switch args[0] {
	case "start":
		if g != nil && g.srv != nil {
			ts.Fatalf("gate %s is already running", name)
		}
		dir := ts.MkAbs("gate-" + strings.ToLower(name))
		thp, err := tang.Keygen(dir)
		ts.Check(err)
		keys, err := tang.OpenKeyDir(dir)
		ts.Check(err)
		ops := gate.OpenOperators(filepath.Join(dir, gate.OperatorsFile))
		token, err := ops.Add("alice")
		ts.Check(err)
		tokenFile := ts.MkAbs(strings.ToLower(name) + ".token")
		ts.Check(os.WriteFile(tokenFile, []byte(token+"\n"), 0o600))
		auditFile := ts.MkAbs(strings.ToLower(name) + "-audit.jsonl")
		audit, err := gate.OpenAudit(auditFile)
		ts.Check(err)
		g = &scriptGate{done: make(chan struct{}), ready: make(chan gate.Request, 64), audit: audit}
		gt := gate.New(gate.Config{
			Keys: keys, Operators: ops, Audit: audit,
			OnPending: func(r gate.Request) { g.ready <- r },
		})
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		ts.Check(err)
		g.srv = &http.Server{Handler: gt, ReadHeaderTimeout: 10 * time.Second}
		go func(srv *http.Server, done chan struct{}) { srv.Serve(ln); close(done) }(g.srv, g.done)
		s.mu.Lock()
		s.gates[name] = g
		s.mu.Unlock()
		url := "http://" + ln.Addr().String()
		ts.Setenv(name+"_URL", url)
		ts.Setenv(name+"_THP", thp)
		ts.Setenv(name+"_CFG", `{"url":"`+url+`","thp":"`+thp+`"}`)
		ts.Setenv(name+"_TOKEN", tokenFile)
		ts.Setenv(name+"_AUDIT", auditFile)
	case "wait":
		if g == nil {
			ts.Fatalf("no gate %s", name)
		}
		select {
		case r := <-g.ready:
			ts.Setenv(name+"_CODE", r.Code) // what the host shows, as an operator reads it there
			ts.Setenv(name+"_ID", r.ID)
		case <-time.After(30 * time.Second):
			ts.Fatalf("gate %s: no request became ready for a decision in 30s", name)
		}
	case "stop":
		if g == nil {
			ts.Fatalf("no gate %s", name)
		}
		g.stop()
	default:
		ts.Fatalf("usage: gate start|wait|stop NAME")
	}
}
