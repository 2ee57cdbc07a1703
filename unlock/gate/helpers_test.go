package gate_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

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

type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// fixture is a gate on 127.0.0.1 over a fresh key directory, with one
// operator (alice), an audit file and a channel of requests that became
// ready for a decision.
type fixture struct {
	g       *gate.Gate
	URL     string
	Dir     string
	Thp     string
	Token   string
	Audit   string
	Ready   chan gate.Request
	Clock   *clock
	Logs    *syncBuffer
	Ops     *gate.Operators
	auditor *gate.FileAudit
}

func newFixture(t *testing.T, mod func(*gate.Config)) *fixture {
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
	auditPath := filepath.Join(t.TempDir(), "audit.jsonl")
	audit, err := gate.OpenAudit(auditPath)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { audit.Close() })
	f := &fixture{
		Dir: dir, Thp: thp, Token: token, Audit: auditPath, Ready: make(chan gate.Request, 64),
		Clock: &clock{now: time.Now()}, Logs: &syncBuffer{}, Ops: ops, auditor: audit,
	}
	cfg := gate.Config{
		Keys: keys, Operators: ops, Audit: audit,
		Log:       slog.New(slog.NewJSONHandler(f.Logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		OnPending: func(r gate.Request) { f.Ready <- r },
		Now:       f.Clock.Now,
	}
	if mod != nil {
		mod(&cfg)
	}
	f.g = gate.New(cfg)
	srv := httptest.NewServer(f.g)
	t.Cleanup(srv.Close)
	f.URL = srv.URL
	return f
}

func (f *fixture) Config() string { return fmt.Sprintf(`{"url":%q,"thp":%q}`, f.URL, f.Thp) }

func (f *fixture) Operator(token string) *gate.Client {
	return &gate.Client{URL: f.URL, Token: token}
}

// next waits for the next request that is ready for a decision.
func (f *fixture) next(t *testing.T) gate.Request {
	t.Helper()
	select {
	case r := <-f.Ready:
		return r
	case <-testCtx(t).Done():
		t.Fatal("no request became ready for a decision")
	}
	return gate.Request{}
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
