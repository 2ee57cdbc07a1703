package gate_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sealproxy/sealproxy/testenv"
	"github.com/sealproxy/sealproxy/unlock/gate"
	"github.com/sealproxy/sealproxy/unlock/tang"
)

func testCtx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return c
}

// clock is a settable clock for expiry; holds use real timers.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// fixture is a gate on 127.0.0.1 over a fresh key directory, with one
// operator (alice), an audit file and a channel of requests that became
// ready for a decision.
type fixture struct {
	*testenv.Gate
	g     *gate.Gate
	Token string // alice's
	Audit string
	Clock *clock
	Ops   *gate.Operators
}

func newFixture(t *testing.T, mod func(*gate.Config)) *fixture {
	t.Helper()
	c := &clock{now: time.Now()}
	tg := testenv.StartGate(t, testenv.GateOptions{
		Operators: []string{"alice"},
		AuditFile: filepath.Join(t.TempDir(), "audit.jsonl"),
		Configure: func(cfg *gate.Config) {
			cfg.Now = c.Now
			if mod != nil {
				mod(cfg)
			}
		},
	})
	return &fixture{Gate: tg, g: tg.Gate, Token: tg.Tokens["alice"], Audit: tg.AuditFile, Clock: c, Ops: tg.Operators}
}

func (f *fixture) Config() string { return f.PinConfig() }

func (f *fixture) Operator(token string) *gate.Client {
	return &gate.Client{URL: f.URL, Token: token}
}

// next waits for the next request that is ready for a decision.
func (f *fixture) next(t *testing.T) gate.Request {
	t.Helper()
	return f.Next(t, time.Minute)
}

// id returns the id of the pending request with code, read in process
// (the operator API never shows codes).
func (f *fixture) id(t *testing.T, code string) string {
	t.Helper()
	for _, r := range f.g.Pending() {
		if r.Code == code {
			return r.ID
		}
	}
	t.Fatalf("no pending request has code %s", code)
	return ""
}

// auditEvents reads the audit log.
func (f *fixture) auditEvents(t *testing.T) []gate.Event {
	t.Helper()
	data, err := os.ReadFile(f.Audit)
	if err != nil {
		t.Fatal(err)
	}
	var out []gate.Event
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		var e gate.Event
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			t.Fatalf("audit line %q: %v", sc.Text(), err)
		}
		out = append(out, e)
	}
	return out
}

// wantEvents checks that the audit log has these events (name and
// outcome) in this order, among others.
func (f *fixture) wantEvents(t *testing.T, want ...string) []gate.Event {
	t.Helper()
	events := f.auditEvents(t)
	i := 0
	for _, e := range events {
		if i < len(want) && e.Event+":"+e.Outcome == want[i] {
			i++
		}
	}
	if i < len(want) {
		var got []string
		for _, e := range events {
			got = append(got, e.Event+":"+e.Outcome)
		}
		t.Fatalf("audit log has %q, want in order %q (missing %q)", got, want, want[i])
	}
	return events
}

// blind makes a recovery request (a blinded point) for the gate's key.
func (f *fixture) blind(t *testing.T) (kid string, b *tang.Blind) {
	t.Helper()
	adv, err := (&tang.Client{}).Advertisement(testCtx(t), f.URL, f.Thp)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := adv.ExchangeKey()
	if err != nil {
		t.Fatal(err)
	}
	epk, z, err := tang.Bind(srv)
	if err != nil {
		t.Fatal(err)
	}
	clear(z)
	b, err = tang.NewBlind(srv, epk)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Wipe)
	return srv.Thumbprint(), b
}

// post sends body to path with headers and returns status and body.
func (f *fixture) post(t *testing.T, path string, body []byte, hdr map[string]string) (int, []byte) {
	t.Helper()
	req, err := http.NewRequestWithContext(testCtx(t), http.MethodPost, f.URL+path, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, data
}

// postPoint sends b's point to /rec/kid without waiting (Prefer: wait=0).
func (f *fixture) postPoint(t *testing.T, kid string, b *tang.Blind, hdr map[string]string) (int, tang.Status) {
	t.Helper()
	body, _ := json.Marshal(b.Request())
	h := map[string]string{"Prefer": "wait=0", "Content-Type": "application/jwk+json"}
	for k, v := range hdr {
		h[k] = v
	}
	status, data := f.post(t, "/rec/"+kid, body, h)
	var st tang.Status
	if status != http.StatusOK {
		json.Unmarshal(data, &st)
	}
	return status, st
}

func wantIs(t *testing.T, err, want error) {
	t.Helper()
	if !errors.Is(err, want) {
		t.Fatalf("err = %v, want %v", err, want)
	}
}

func mustContain(t *testing.T, s, sub string) {
	t.Helper()
	if !strings.Contains(s, sub) {
		t.Fatalf("%q does not contain %q", s, sub)
	}
}

func mustJSON(v any) []byte {
	out, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return out
}

func isWindows() bool { return filepath.Separator == '\\' }
