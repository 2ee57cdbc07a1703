package keyring

import (
	"context"
	"errors"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sealproxy/sealproxy/proxy/config"
	"github.com/sealproxy/sealproxy/testenv"
	"github.com/sealproxy/sealproxy/unlock"
	"github.com/sealproxy/sealproxy/unlock/gate"
	"github.com/sealproxy/sealproxy/unlock/tang"
	"github.com/sealproxy/sealproxy/vault"
	"github.com/sealproxy/sealproxy/vault/keyref"
)

// ringEnv is a configuration directory with a CA, and a ring whose
// status lines and logs the test reads.
type ringEnv struct {
	t    *testing.T
	dir  string
	ca   *testenv.CA
	cfg  *config.Config
	ring *Ring

	mu     sync.Mutex
	status []string
	logs   testenv.SyncBuffer
}

func newRingEnv(t *testing.T) *ringEnv {
	e := &ringEnv{t: t, dir: t.TempDir(), ca: testenv.NewCA(t, "test CA")}
	e.cfg = &config.Config{Dir: e.dir, AllowUnprotectedMemory: true,
		Unlock: config.Unlock{Timeout: time.Minute, RetryBackoff: 20 * time.Millisecond, RetryBackoffMax: 100 * time.Millisecond}}
	e.ring = New(Options{Log: slog.New(slog.NewTextHandler(&e.logs, nil)), Status: func(s string) {
		e.mu.Lock()
		e.status = append(e.status, s)
		e.mu.Unlock()
	}})
	t.Cleanup(e.ring.Close)
	return e
}

// seal writes NAME.crt and NAME.key.jwe sealed with the tang pin
// configuration pin, adds the key and a listener that uses it, and
// returns the key's PEM.
func (e *ringEnv) seal(name, pin string) []byte {
	e.t.Helper()
	leaf := e.ca.Server(e.t, name+".test")
	leaf.WriteFiles(e.t, e.dir, name)
	keyPEM := leaf.KeyPEM(e.t)
	jwe, err := unlock.Encrypt(context.Background(), "tang", []byte(pin), keyPEM, nil)
	if err != nil {
		e.t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(e.dir, name+".key.jwe"), jwe, 0o600); err != nil {
		e.t.Fatal(err)
	}
	os.Remove(filepath.Join(e.dir, name+".key"))
	e.cfg.Keys = append(e.cfg.Keys, config.Key{Name: name, Cert: name + ".crt", Source: keyref.Sealed(name + ".key.jwe")})
	e.cfg.Listeners = append(e.cfg.Listeners, config.Listener{Name: name, Mode: config.ModeOffload, Keys: []string{name}})
	return keyPEM
}

func (e *ringEnv) lastStatus() string {
	e.mu.Lock()
	defer e.mu.Unlock()
	if len(e.status) == 0 {
		return ""
	}
	return e.status[len(e.status)-1]
}

func (e *ringEnv) waitStatus(want string) {
	e.t.Helper()
	deadline := time.Now().Add(time.Minute)
	for !strings.Contains(e.lastStatus(), want) {
		if time.Now().After(deadline) {
			e.t.Fatalf("no status line with %q; last %q\n%s", want, e.lastStatus(), e.logs.String())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// startGate serves a gate that holds each recovery for an operator
// (100 ms per long poll).
func startGate(t *testing.T) *testenv.Gate {
	return testenv.StartGate(t, testenv.GateOptions{Operators: []string{"alice"},
		Configure: func(c *gate.Config) { c.Hold = 100 * time.Millisecond }})
}

// TestOneRequestGroup: the sealed keys of one Open are one approval
// request at a gate, shown with one code in every key's status and one
// log line; one approval opens them all, each at its first attempt.
func TestOneRequestGroup(t *testing.T) {
	g := startGate(t)
	url, pin := g.URL, g.PinConfig()
	e := newRingEnv(t)
	names := []string{"web", "api", "db", "k3", "k4", "k5"} // more than MaxConcurrentOpens
	for _, n := range names {
		e.seal(n, pin)
	}
	gen := e.ring.Begin()
	done := make(chan error, 1)
	go func() { done <- gen.Open(context.Background(), e.cfg) }()
	req := g.Next(t, time.Minute)
	if !req.Session || req.Keys != len(names) || req.Arrived != len(names) || !req.Complete {
		t.Errorf("request %+v, want a complete group of %d keys", req, len(names))
	}
	want := "unlocking keys: 0 of 6 open"
	sorted := slices.Clone(names)
	slices.Sort(sorted)
	for _, k := range sorted {
		want += "; " + k + ": waiting for approval (code " + req.Code + ") at " + url
	}
	e.waitStatus(want)
	if n := strings.Count(e.logs.String(), `msg="waiting for approval"`); n != 1 ||
		!strings.Contains(e.logs.String(), `key=web,api,db,k3,k4,k5 tang_url=`+url+` code=`+req.Code) {
		t.Errorf("want one waiting line naming every key:\n%s", e.logs.String())
	}
	if _, err := g.Approve(req.Code, "alice", "test"); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	for i := range e.cfg.Keys {
		if _, err := gen.Signer(context.Background(), e.cfg, &e.cfg.Keys[i]); err != nil {
			t.Errorf("key %s: %v", e.cfg.Keys[i].Name, err)
		}
	}
	gen.Commit()
	if logs := e.logs.String(); strings.Count(logs, `msg="key unlocked"`) != len(names) || strings.Contains(logs, "attempts=2") {
		t.Errorf("want each key unlocked at its first attempt:\n%s", logs)
	}
	if got := e.lastStatus(); got != "unlocking keys: 6 of 6 open" {
		t.Errorf("last status %q", got)
	}
	select {
	case extra := <-g.Ready:
		t.Errorf("a second request at the gate: %+v", extra)
	default:
	}
}

// TestDeniedGroup: an operator's denial fails every key at once: the
// error is an *UnlockError that matches ErrDenied, the denied keys first.
func TestDeniedGroup(t *testing.T) {
	g := startGate(t)
	e := newRingEnv(t)
	e.seal("web", g.PinConfig())
	e.seal("api", g.PinConfig())
	go func() {
		if req, err := g.Wait(time.Minute); err == nil {
			g.Deny(req.Code, "alice", "test")
		}
	}()
	gen := e.ring.Begin()
	err := gen.Open(context.Background(), e.cfg)
	gen.Discard()
	var ue *UnlockError
	if !errors.As(err, &ue) || !errors.Is(err, ErrDenied) || !errors.Is(err, tang.ErrDenied) || ue.After != 0 || len(ue.Locked) != 2 {
		t.Fatalf("got %v", err)
	}
	if !strings.Contains(err.Error(), "recovery denied by operator alice") {
		t.Errorf("error %q does not name the operator", err)
	}
}

// TestRetryUntilReachable: a Tang server down at start-up is retried
// with backoff, reported in the status line, and the key opens once it
// is back; a timeout gives an *UnlockError with the time waited.
func TestRetryUntilReachable(t *testing.T) {
	srv := testenv.EmbeddedTang(t)
	e := newRingEnv(t)
	e.seal("web", srv.Config())
	srv.Stop()
	gen := e.ring.Begin()
	done := make(chan error, 1)
	go func() { done <- gen.Open(context.Background(), e.cfg) }()
	e.waitStatus("web: " + srv.URL + " unreachable (attempt 2), retrying")
	srv.Start()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	gen.Commit()
	if !strings.Contains(e.logs.String(), "Tang server unreachable; retrying") {
		t.Errorf("no retry logged:\n%s", e.logs.String())
	}

	// Down for good: the [unlock] timeout ends it.
	e2 := newRingEnv(t)
	e2.seal("api", srv.Config())
	srv.Stop()
	e2.cfg.Unlock.Timeout = 300 * time.Millisecond
	err := e2.ring.Begin().Open(context.Background(), e2.cfg)
	var ue *UnlockError
	if !errors.As(err, &ue) || ue.After != 300*time.Millisecond || !errors.Is(err, ErrUnreachable) || ue.Locked[0].Attempts < 2 {
		t.Fatalf("got %#v", err)
	}
	if !strings.HasPrefix(err.Error(), "gave up unlocking after 300ms ([unlock] timeout): 1 key(s) still locked: key \"api\"") {
		t.Errorf("error %q", err)
	}
}

// TestSealedFileReadOnce: Open reads each sealed file once, and what it
// recovers is what it read: a file replaced after that read (by a key
// sealed elsewhere) does not change which key opens.
func TestSealedFileReadOnce(t *testing.T) {
	srv := testenv.EmbeddedTang(t)
	e := newRingEnv(t)
	e.seal("web", srv.Config())
	e.seal("api", srv.Config())
	e.cfg.Unlock.Timeout = 10 * time.Second // a recovery from the replacement never ends
	other := testenv.EmbeddedTang(t)        // the replacement is sealed to another server
	replacement, err := unlock.Encrypt(context.Background(), "tang", []byte(other.Config()), e.ca.Server(t, "other.test").KeyPEM(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	other.Stop()

	var mu sync.Mutex
	reads := map[string]int{}
	read := e.ring.readSealed
	e.ring.readSealed = func(ref string, opts *vault.Options) ([]byte, bool, error) {
		mu.Lock()
		reads[ref]++
		mu.Unlock()
		return read(ref, opts)
	}
	open := e.ring.open
	e.ring.open = func(ctx context.Context, source string, opts *vault.Options) (vault.Key, error) {
		// Between the ring's read and the recovery, the file changes.
		r, _ := keyref.Parse(source)
		if err := os.WriteFile(filepath.Join(e.dir, r.Path), replacement, 0o600); err != nil {
			t.Error(err)
		}
		return open(ctx, source, opts)
	}
	gen := e.ring.Begin()
	if err := gen.Open(context.Background(), e.cfg); err != nil {
		t.Fatalf("the replaced file was read again: %v", err)
	}
	for _, k := range e.cfg.Keys {
		if reads[k.Source] != 1 {
			t.Errorf("%s read %d times, want 1", k.Source, reads[k.Source])
		}
	}
	// The keys opened are the ones first read: they match their
	// certificates.
	for _, k := range e.cfg.Keys {
		leaf, err := readLeaf(filepath.Join(e.dir, k.Cert))
		if err != nil {
			t.Fatal(err)
		}
		matched := 0
		for _, key := range e.ring.keys {
			if vault.CheckCertificate(key, leaf) == nil {
				matched++
			}
		}
		if matched != 1 {
			t.Errorf("%d open keys match %s's certificate, want 1", matched, k.Name)
		}
	}
	gen.Commit()
}

// TestJitterSpreadsRetries: a fleet's hosts that failed together must
// not retry together. Every wait lies in [d/2, d], and 200 draws are
// not all alike (they would be without the jitter).
func TestJitterSpreadsRetries(t *testing.T) {
	for _, d := range []time.Duration{time.Second, 30 * time.Second, 3 * time.Nanosecond} {
		seen := map[time.Duration]bool{}
		for range 200 {
			w := jitter(d)
			if w < d/2 || w > d {
				t.Fatalf("jitter(%v) = %v, outside [%v, %v]", d, w, d/2, d)
			}
			seen[w] = true
		}
		if len(seen) < 2 {
			t.Errorf("jitter(%v): 200 waits all %v: hosts would retry in step", d, slices.Collect(maps.Keys(seen)))
		}
	}
	if got := jitter(0); got != 0 {
		t.Errorf("jitter(0) = %v", got)
	}
}
