package testenv

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/rogpeppe/go-internal/testscript"

	"github.com/sealproxy/sealproxy/unlock/tang"
)

// ScriptParams returns testscript parameters for the CLI golden tests in
// dir, with these commands besides testscript's own:
//
//	tang start NAME [DIR]   start our Tang server (the code sealgate serve
//	                        runs) on 127.0.0.1:0 over DIR (default
//	                        $WORK/tang-NAME, keys generated if it is empty)
//	                        and set $NAME_URL, $NAME_ADDR (host:port),
//	                        $NAME_THP (signing key), $NAME_KID (exchange
//	                        key), $NAME_DIR and $NAME_CFG (the tang pin config)
//	tang stop NAME          stop it: $NAME_URL now refuses connections
//	tang rotate NAME        rotate its keys (tang.Rotate) while it runs and
//	                        update $NAME_THP and $NAME_KID
//	status CODE PROG [ARGS] run PROG like exec and require exit status CODE;
//	                        its stdout and stderr are kept for cmp and stdout
//	freeport NAME           set $NAME to a free 127.0.0.1:PORT
//	advertises URL THP...   wait until URL answers, then require that its
//	                        verified advertisement lists exactly these
//	                        signing keys (! advertises: not exactly these)
//	envfrom NAME FILE       set $NAME to FILE's content without surrounding
//	                        white space (FILE may be stdout or stderr)
//	tamper PART IN OUT      copy the compact JWE IN to OUT with the first
//	                        character of PART (iv, ciphertext or tag) changed
//	gate start|wait|stop NAME
//	                        a gate that requires approval (see cmdGate)
//
// Servers are stopped when the script ends.
func ScriptParams(dir string) testscript.Params {
	return testscript.Params{
		Dir: dir,
		Setup: func(env *testscript.Env) error {
			// Under -race each command is a race-enabled binary, which
			// sleeps 1s at exit by default; with dozens of commands per
			// script that is most of the run. A race is still reported
			// (exit 66 and a report on stderr, which the goldens catch).
			if env.Getenv("GORACE") == "" {
				env.Setenv("GORACE", "atexit_sleep_ms=10")
			}
			s := &scriptState{tangs: map[string]*scriptTang{}, gates: map[string]*Gate{}}
			env.Values[scriptStateKey{}] = s
			env.Defer(s.stopAll)
			return nil
		},
		Cmds: map[string]func(ts *testscript.TestScript, neg bool, args []string){
			"tang":       cmdTang,
			"status":     cmdStatus,
			"freeport":   cmdFreeport,
			"advertises": cmdAdvertises,
			"tamper":     cmdTamper,
			"envfrom":    cmdEnvfrom,
			"gate":       cmdGate,
		},
	}
}

type scriptStateKey struct{}

type scriptState struct {
	mu    sync.Mutex
	tangs map[string]*scriptTang
	gates map[string]*Gate
}

type scriptTang struct {
	dir  string
	url  string
	srv  *http.Server
	done chan struct{}
}

func (t *scriptTang) stop() {
	if t.srv != nil {
		t.srv.Close()
		<-t.done
		t.srv = nil
		waitRefused(strings.TrimPrefix(t.url, "http://"))
	}
}

func (s *scriptState) stopAll() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, t := range s.tangs {
		t.stop()
	}
	for _, g := range s.gates {
		g.Close()
	}
}

func state(ts *testscript.TestScript) *scriptState {
	s, _ := ts.Value(scriptStateKey{}).(*scriptState)
	if s == nil {
		ts.Fatalf("testenv: use testenv.ScriptParams, whose Setup prepares the custom commands")
	}
	return s
}

func cmdTang(ts *testscript.TestScript, neg bool, args []string) {
	if neg {
		ts.Fatalf("unsupported: ! tang")
	}
	if len(args) < 2 {
		ts.Fatalf("usage: tang start NAME [DIR] | tang stop NAME | tang rotate NAME")
	}
	s := state(ts)
	s.mu.Lock()
	defer s.mu.Unlock()
	name := args[1]
	t := s.tangs[name]
	switch args[0] {
	case "start":
		if t != nil && t.srv != nil {
			ts.Fatalf("tang %s is already running", name)
		}
		dir := ts.MkAbs("tang-" + strings.ToLower(name))
		if len(args) > 2 {
			dir = ts.MkAbs(args[2])
		}
		if entries, err := os.ReadDir(dir); err != nil || len(entries) == 0 {
			_, err := tang.Keygen(dir)
			ts.Check(err)
		}
		keys, err := tang.OpenKeyDir(dir)
		ts.Check(err)
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		ts.Check(err)
		t = &scriptTang{dir: dir, url: "http://" + ln.Addr().String(), done: make(chan struct{})}
		t.srv = &http.Server{Handler: tang.NewServer(keys, nil), ReadHeaderTimeout: 10 * time.Second}
		go func(srv *http.Server, done chan struct{}) { srv.Serve(ln); close(done) }(t.srv, t.done)
		s.tangs[name] = t
		ts.Setenv(name+"_URL", t.url)
		ts.Setenv(name+"_ADDR", ln.Addr().String())
		ts.Setenv(name+"_DIR", dir)
		setTangKeys(ts, name, t)
	case "stop":
		if t == nil {
			ts.Fatalf("no tang %s", name)
		}
		t.stop()
	case "rotate":
		if t == nil {
			ts.Fatalf("no tang %s", name)
		}
		_, err := tang.Rotate(t.dir)
		ts.Check(err)
		setTangKeys(ts, name, t)
	default:
		ts.Fatalf("usage: tang start NAME [DIR] | tang stop NAME | tang rotate NAME")
	}
}

// setTangKeys reads the running server's advertisement with our client and
// sets $NAME_THP, $NAME_KID and $NAME_CFG from it.
func setTangKeys(ts *testscript.TestScript, name string, t *scriptTang) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	adv, err := (&tang.Client{}).Advertisement(ctx, t.url, "")
	ts.Check(err)
	thps := adv.SigningThumbprints()
	if len(thps) != 1 {
		ts.Fatalf("tang %s advertises %d signing keys, want 1", name, len(thps))
	}
	exc, err := adv.ExchangeKey()
	ts.Check(err)
	ts.Setenv(name+"_THP", thps[0])
	ts.Setenv(name+"_KID", exc.Thumbprint())
	ts.Setenv(name+"_CFG", fmt.Sprintf(`{"url":%q,"thp":%q}`, t.url, thps[0]))
}

func cmdStatus(ts *testscript.TestScript, neg bool, args []string) {
	if neg {
		ts.Fatalf("unsupported: ! status (give the exit status instead)")
	}
	if len(args) < 2 {
		ts.Fatalf("usage: status CODE PROG [ARGS...]")
	}
	want, err := strconv.Atoi(args[0])
	if err != nil {
		ts.Fatalf("status: %q is not an exit status", args[0])
	}
	got := 0
	if err := ts.Exec(args[1], args[2:]...); err != nil {
		var exit *exec.ExitError
		if !errors.As(err, &exit) {
			ts.Fatalf("status: running %s: %v", args[1], err)
		}
		got = exit.ExitCode()
	}
	if got != want {
		ts.Fatalf("%s exited with status %d, want %d", args[1], got, want)
	}
}

func cmdFreeport(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 1 {
		ts.Fatalf("usage: freeport NAME")
	}
	addr, err := FindFreeAddr()
	ts.Check(err)
	ts.Setenv(args[0], addr)
}

func cmdAdvertises(ts *testscript.TestScript, neg bool, args []string) {
	if len(args) < 1 {
		ts.Fatalf("usage: advertises URL THP...")
	}
	url, want := args[0], slices.Sorted(slices.Values(args[1:]))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// The server may be a background process still starting: poll until it
	// answers (or the deadline passes).
	var (
		adv *tang.Advertisement
		err error
	)
	poll := time.NewTicker(20 * time.Millisecond)
	defer poll.Stop()
	for {
		adv, err = (&tang.Client{}).Advertisement(ctx, url, "")
		if !errors.Is(err, tang.ErrUnreachable) || ctx.Err() != nil {
			break
		}
		select {
		case <-ctx.Done():
		case <-poll.C:
		}
	}
	ts.Check(err)
	got := slices.Sorted(slices.Values(adv.SigningThumbprints()))
	if same := slices.Equal(got, want); same == neg {
		if neg {
			ts.Fatalf("%s advertises exactly %v", url, got)
		}
		ts.Fatalf("%s advertises %v, want %v", url, got, want)
	}
}

func cmdTamper(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 3 {
		ts.Fatalf("usage: tamper iv|ciphertext|tag IN OUT")
	}
	part := map[string]int{"iv": 2, "ciphertext": 3, "tag": 4}[args[0]]
	if part == 0 {
		ts.Fatalf("tamper: unknown part %q (iv, ciphertext or tag)", args[0])
	}
	parts := strings.Split(ts.ReadFile(args[1]), ".")
	if len(parts) != 5 || parts[part] == "" {
		ts.Fatalf("tamper: %s is not a compact JWE with a %s", args[1], args[0])
	}
	// The first character carries six whole bits of the first byte, so
	// changing it changes the decoded bytes and keeps the length.
	b := []byte(parts[part])
	if b[0] == 'A' {
		b[0] = 'B'
	} else {
		b[0] = 'A'
	}
	parts[part] = string(b)
	ts.Check(os.WriteFile(ts.MkAbs(args[2]), []byte(strings.Join(parts, ".")), 0o600))
}

func cmdEnvfrom(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 2 {
		ts.Fatalf("usage: envfrom NAME FILE")
	}
	ts.Setenv(args[0], strings.TrimSpace(ts.ReadFile(args[1])))
}
