package testenv

import (
	"os"
	"strings"
	"time"

	"github.com/rogpeppe/go-internal/testscript"
)

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
		lower := strings.ToLower(name)
		g, err := ServeGate(GateOptions{
			Dir: ts.MkAbs("gate-" + lower), Operators: []string{"alice"},
			AuditFile: ts.MkAbs(lower + "-audit.jsonl"),
		})
		ts.Check(err)
		tokenFile := ts.MkAbs(lower + ".token")
		if err := os.WriteFile(tokenFile, []byte(g.Tokens["alice"]+"\n"), 0o600); err != nil {
			g.Close()
			ts.Fatalf("%v", err)
		}
		s.mu.Lock()
		s.gates[name] = g
		s.mu.Unlock()
		ts.Setenv(name+"_URL", g.URL)
		ts.Setenv(name+"_THP", g.Thp)
		ts.Setenv(name+"_CFG", g.PinConfig())
		ts.Setenv(name+"_TOKEN", tokenFile)
		ts.Setenv(name+"_AUDIT", g.AuditFile)
	case "wait":
		if g == nil {
			ts.Fatalf("no gate %s", name)
		}
		r, err := g.Wait(30 * time.Second)
		ts.Check(err)
		ts.Setenv(name+"_CODE", r.Code) // what the host shows, as an operator reads it there
		ts.Setenv(name+"_ID", r.ID)
	case "stop":
		if g == nil {
			ts.Fatalf("no gate %s", name)
		}
		g.Close()
	default:
		ts.Fatalf("usage: gate start|wait|stop NAME")
	}
}
