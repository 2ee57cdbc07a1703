package keyring

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sealproxy/sealproxy/testenv"
	"github.com/sealproxy/sealproxy/unlock/gate"
	"github.com/sealproxy/sealproxy/unlock/tang"
)

// faultTimeout bounds every wait of these tests.
const faultTimeout = 30 * time.Second

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	testenv.Eventually(t, faultTimeout, what, cond)
}

// faultGate is a gate (the code `sealgate serve --approval required`
// runs) that can be stopped and started again on the same address over
// the same keys: a restart, which loses every pending request.
type faultGate struct {
	t     *testing.T
	keys  tang.KeySource
	ops   *gate.Operators
	addr  string
	URL   string
	Pin   string
	Token string
	ready chan gate.Request
	recs  atomic.Int64 // POST /rec requests that arrived

	srv  *http.Server
	done chan struct{}
}

func startFaultGate(t *testing.T) *faultGate {
	t.Helper()
	dir := t.TempDir()
	thp, err := tang.Keygen(dir)
	if err != nil {
		t.Fatal(err)
	}
	keys, err := tang.OpenKeyDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	ops := gate.OpenOperators(filepath.Join(dir, gate.OperatorsFile))
	token, err := ops.Add("alice")
	if err != nil {
		t.Fatal(err)
	}
	fg := &faultGate{t: t, keys: keys, ops: ops, addr: testenv.FreeAddr(t), Token: token, ready: make(chan gate.Request, 16)}
	fg.URL = "http://" + fg.addr
	fg.Pin = fmt.Sprintf(`{"url":%q,"thp":%q}`, fg.URL, thp)
	fg.start(5 * time.Second)
	t.Cleanup(fg.stop)
	return fg
}

// start serves a new gate that holds each request up to hold: nothing of
// the previous one's state is kept.
func (fg *faultGate) start(hold time.Duration) {
	fg.t.Helper()
	g := gate.New(gate.Config{Keys: fg.keys, Operators: fg.ops, Hold: hold,
		OnPending: func(r gate.Request) { fg.ready <- r }})
	ln := testenv.ListenAgain(fg.t, fg.addr, faultTimeout)
	count := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, "/rec/") {
			fg.recs.Add(1)
		}
		g.ServeHTTP(w, r)
	})
	fg.srv = &http.Server{Handler: count, ReadHeaderTimeout: 10 * time.Second}
	fg.done = make(chan struct{})
	go func(srv *http.Server, done chan struct{}) { srv.Serve(ln); close(done) }(fg.srv, fg.done)
}

func (fg *faultGate) stop() {
	if fg.srv != nil {
		fg.srv.Close()
		<-fg.done
		fg.srv = nil
	}
}

func (fg *faultGate) operator() *gate.Client { return &gate.Client{URL: fg.URL, Token: fg.Token} }

// TestGateRestartMidWait (was cmd/sealproxy TestFaultGateRestartMidWait):
// a key waits for an operator's approval when the gate restarts and
// forgets it. Open neither hangs nor fails: the held request fails, the
// key is retried with a fresh request (a new code, logged), and
// approving that one opens it.
func TestGateRestartMidWait(t *testing.T) {
	fg := startFaultGate(t)
	e := newRingEnv(t)
	e.seal("web", fg.Pin)
	e.cfg.Unlock.RetryBackoff, e.cfg.Unlock.RetryBackoffMax = 50*time.Millisecond, 200*time.Millisecond
	ctx, cancel := context.WithTimeout(context.Background(), faultTimeout)
	defer cancel()
	gen := e.ring.Begin()
	done := make(chan error, 1)
	go func() { done <- gen.Open(ctx, e.cfg) }()

	first := awaitReq(t, fg.ready)
	seen, err := fg.operator().Pending(ctx)
	if err != nil || len(seen) != 1 || seen[0].ID != first.ID || seen[0].Code != "" {
		t.Fatalf("operator sees %+v, %v; want request %s pending, without its code", seen, err, first.ID)
	}
	eventually(t, "the key to wait for approval", func() bool {
		return strings.Contains(e.logs.String(), `msg="waiting for approval" key=web tang_url=`+fg.URL+` code=`+first.Code)
	})
	// The first request is answered at once (202, respond-async); the
	// second is held (5 s): the gate goes while it holds it.
	eventually(t, "the held request", func() bool { return fg.recs.Load() >= 2 })
	fg.stop()
	eventually(t, "a retry", func() bool {
		return strings.Contains(e.logs.String(), `msg="Tang server unreachable; retrying" key=web tang_url=`+fg.URL)
	})
	select {
	case err := <-done:
		t.Fatalf("Open ended while the gate was down: %v", err)
	default:
	}
	fg.start(5 * time.Second)
	second := awaitReq(t, fg.ready)
	if second.Code == first.Code {
		t.Fatalf("after the restart the gate has code %s again: want a fresh request", second.Code)
	}
	if _, err := fg.operator().Approve(ctx, second.Code); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	gen.Commit()
	logs := e.logs.String()
	if strings.Count(logs, `msg="key unlocked"`) != 1 || strings.Contains(logs, "attempts=1\n") {
		t.Errorf("want web unlocked once, after a retry:\n%s", logs)
	}
	if !strings.Contains(logs, `msg="waiting for approval" key=web tang_url=`+fg.URL+` code=`+second.Code) {
		t.Errorf("the new code %s was not shown:\n%s", second.Code, logs)
	}
}

// TestRetryAfterGateUnreachable (was in cmd/sealproxy): the gate is down
// at start-up. A retry cannot reuse the request group's blinded points,
// so each key's retry is a request of its own, approved on its own.
func TestRetryAfterGateUnreachable(t *testing.T) {
	fg := startFaultGate(t)
	e := newRingEnv(t)
	e.seal("web", fg.Pin)
	e.seal("api", fg.Pin)
	fg.stop() // the gate goes down once the keys are sealed
	gen := e.ring.Begin()
	done := make(chan error, 1)
	go func() { done <- gen.Open(context.Background(), e.cfg) }()
	e.waitStatus("api: " + fg.URL + " unreachable (attempt ")
	e.waitStatus("web: " + fg.URL + " unreachable (attempt ")
	fg.start(100 * time.Millisecond)
	for range 2 {
		req := awaitReq(t, fg.ready)
		if req.Keys != 1 || req.Arrived != 1 {
			t.Errorf("request %+v, want one key per retry's request", req)
		}
		if _, err := fg.operator().Approve(context.Background(), req.Code); err != nil {
			t.Fatalf("approving %s: %v", req.Code, err)
		}
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	gen.Commit()
	if got := e.lastStatus(); got != "unlocking keys: 2 of 2 open" {
		t.Errorf("last status %q", got)
	}
}

// hostileTang is a Tang server behind a man in the middle that answers
// every POST /rec with status and body; it returns the pin configuration
// to seal to it.
func hostileTang(t *testing.T, status int, body string) string {
	t.Helper()
	real := testenv.EmbeddedTang(t)
	return strings.Replace(real.Config(), real.URL, testenv.HostileFront(t, real.URL, status, body), 1)
}

// TestGateFullRetried: a gate that refuses new requests because it is
// full is retried and reported as full, not as an unreachable server;
// the failure matches ErrGateFull and not ErrUnreachable (the command's
// hint depends on it: TestStartGateFull).
func TestGateFullRetried(t *testing.T) {
	e := newRingEnv(t)
	e.seal("web", hostileTang(t, 503, `{"error":"too many pending requests"}`))
	e.cfg.Unlock.Timeout = time.Second
	e.cfg.Unlock.RetryBackoff, e.cfg.Unlock.RetryBackoffMax = 10*time.Millisecond, 50*time.Millisecond
	err := e.ring.Begin().Open(context.Background(), e.cfg)
	if !errors.Is(err, ErrGateFull) || errors.Is(err, ErrUnreachable) {
		t.Fatalf("got %v", err)
	}
	logs := e.logs.String()
	if !strings.Contains(logs, "the gate refuses new requests: it is full (flooded?); retrying") || strings.Contains(logs, "Tang server unreachable") {
		t.Errorf("logs:\n%s", logs)
	}
	if !strings.Contains(strings.Join(e.status, "\n"), " full (attempt 2), retrying") {
		t.Errorf("no status line says full:\n%s", strings.Join(e.status, "\n"))
	}
}

func awaitReq(t *testing.T, ready <-chan gate.Request) gate.Request {
	t.Helper()
	select {
	case req := <-ready:
		return req
	case <-time.After(time.Minute):
		t.Fatal("no request at the gate")
	}
	return gate.Request{}
}
