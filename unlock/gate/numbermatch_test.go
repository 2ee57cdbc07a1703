package gate_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/sealproxy/sealproxy/unlock"
	"github.com/sealproxy/sealproxy/unlock/gate"
)

// get calls the operator API with token and returns the raw answer.
func (f *fixture) get(t *testing.T, path, token string) (int, []byte) {
	t.Helper()
	req, err := http.NewRequestWithContext(testCtx(t), http.MethodGet, f.URL+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, body
}

// TestNumberMatching: the host shows its code; nothing the operator can
// read at the gate shows it (the pending list, the recent decisions, the
// webhook, the gate's log and audit log); typing it approves the request
// and the host gets its key.
func TestNumberMatching(t *testing.T) {
	hooks := make(chan []byte, 8)
	recv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		hooks <- body
	}))
	defer recv.Close()
	f := newFixture(t, func(c *gate.Config) { c.Webhook = &gate.Webhook{URL: recv.URL} })
	secret := []byte("typed, not clicked")
	jwe := seal(t, "tang", f.Config(), secret)
	done, pending := decryptAsync(testCtx(t), jwe, &unlock.Options{Startup: unlock.NewStartup("web-1")})
	req := f.next(t)
	shown := (<-pending).Code
	if shown != req.Code || !req.Verified || req.ID == "" {
		t.Fatalf("host shows %s; gate has %+v", shown, req)
	}
	hook := <-hooks
	status, list := f.get(t, "/gate/pending", f.Token)
	if status != http.StatusOK || !bytes.Contains(list, []byte(`"id":"`+req.ID+`"`)) || !bytes.Contains(list, []byte(`"verified":true`)) {
		t.Fatalf("GET /gate/pending: %d %s", status, list)
	}
	// A wrong code first, so the decisions list has an entry to show.
	if _, err := f.Operator(f.Token).Approve(testCtx(t), "AAAA-AAAA"); err == nil {
		t.Fatal("a random code approved something")
	}
	_, decisions := f.get(t, "/gate/decisions", f.Token)
	for name, data := range map[string][]byte{"GET /gate/pending": list, "GET /gate/decisions": decisions, "the webhook": hook} {
		if bytes.Contains(data, []byte(shown)) || bytes.Contains(data, []byte(strings.ReplaceAll(shown, "-", ""))) {
			t.Errorf("%s shows the code %s: %s", name, shown, data)
		}
	}
	if !bytes.Contains(decisions, []byte(`"outcome":"wrong code 1 of 5"`)) {
		t.Errorf("GET /gate/decisions: %s, want the wrong code", decisions)
	}
	checkNoCode := func(when string) {
		t.Helper()
		audit, _ := os.ReadFile(f.Audit)
		if strings.Contains(f.Logs.String(), shown) || bytes.Contains(audit, []byte(shown)) {
			t.Errorf("%s: the gate's log or audit log shows the code %s", when, shown)
		}
	}
	checkNoCode("pending")

	d, err := f.Operator(f.Token).Approve(testCtx(t), shown)
	if err != nil || d.Status != gate.StateApproved || d.ID != req.ID {
		t.Fatalf("approving the host's code: %+v, %v", d, err)
	}
	if r := wait(t, done); r.err != nil || !bytes.Equal(r.plain, secret) {
		t.Fatalf("Decrypt: %q, %v", r.plain, r.err)
	}
	checkNoCode("decided")
	evs, err := f.Operator(f.Token).Decisions(testCtx(t))
	if err != nil || len(evs) != 2 || evs[0].Outcome != "approved" || evs[0].ID != req.ID || evs[0].Host != "web-1" {
		t.Fatalf("recent decisions: %+v, %v; want the approval first", evs, err)
	}
}

// TestWrongCodesLock: five wrong codes within the window lock the
// operator's approvals (even with the right code), audited and sent to
// the webhook; another operator is not affected, denying still works, and
// the lock lifts after LockTime.
func TestWrongCodesLock(t *testing.T) {
	hooks := make(chan gate.WebhookEvent, 8)
	recv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var ev gate.WebhookEvent
		json.NewDecoder(r.Body).Decode(&ev)
		hooks <- ev
	}))
	defer recv.Close()
	f := newFixture(t, func(c *gate.Config) {
		c.Webhook = &gate.Webhook{URL: recv.URL}
		c.PendingTTL = time.Hour // outlives the clock's jumps
	})
	bob, err := f.Ops.Add("bob")
	if err != nil {
		t.Fatal(err)
	}
	jwe := seal(t, "tang", f.Config(), []byte("k"))
	done, pending := decryptAsync(testCtx(t), jwe, nil)
	f.next(t)
	code := (<-pending).Code
	<-hooks // pending

	// Wrong codes spread over more than the window do not add up.
	op := f.Operator(f.Token)
	for range gate.WrongCodes - 1 {
		_, err := op.Approve(testCtx(t), "AAAA-AAAA")
		wantIs(t, err, gate.ErrUnknownCode)
	}
	f.Clock.Advance(gate.WrongCodeWindow)
	for i := range gate.WrongCodes {
		_, err := op.Approve(testCtx(t), "BBBB-BBBB")
		var apiErr *gate.APIError
		if !errors.As(err, &apiErr) || apiErr.Status != http.StatusNotFound {
			t.Fatalf("wrong code %d: %v, want 404", i+1, err)
		}
		if i == gate.WrongCodes-1 {
			mustContain(t, err.Error(), "approvals by alice are locked until")
		}
	}
	_, err = op.Approve(testCtx(t), code)
	wantIs(t, err, gate.ErrLocked)
	if list := f.g.Pending(); len(list) != 1 || list[0].State != gate.StatePending {
		t.Fatalf("after a locked approval: %+v, want still pending", list)
	}
	select {
	case ev := <-hooks:
		if ev.Event != "lock" || ev.Lock == nil || ev.Lock.Operator != "alice" || !ev.Lock.Until.Equal(f.Clock.Now().Add(gate.LockTime)) {
			t.Fatalf("webhook %+v, want alice's lock", ev)
		}
	case <-testCtx(t).Done():
		t.Fatal("no webhook for the lock")
	}
	want := []string{"request:pending", "code:agreed"}
	for i := range gate.WrongCodes - 1 {
		want = append(want, "approve:wrong code "+string(rune('1'+i))+" of 5")
	}
	for i := range gate.WrongCodes {
		want = append(want, "approve:wrong code "+string(rune('1'+i))+" of 5")
	}
	want = append(want, "lock:5 wrong codes within 10m0s: approvals locked until "+f.Clock.Now().Add(gate.LockTime).UTC().Format(time.RFC3339), "approve:locked")
	f.wantEvents(t, want...)

	// The lock lifts after LockTime; bob was never locked.
	f.Clock.Advance(gate.LockTime - time.Second)
	_, err = op.Approve(testCtx(t), code)
	wantIs(t, err, gate.ErrLocked)
	f.Clock.Advance(time.Second)
	if _, err := f.Operator(bob).Approve(testCtx(t), "CCCC-CCCC"); !errors.Is(err, gate.ErrUnknownCode) {
		t.Fatalf("bob's wrong code: %v", err)
	}
	if _, err := op.Approve(testCtx(t), code); err != nil {
		t.Fatalf("after the lock: %v", err)
	}
	if r := wait(t, done); r.err != nil {
		t.Fatal(r.err)
	}
}

// TestRequireCode: with RequireCode, a request whose host shows no code
// (stock clevis) cannot be approved, by id or by its code; it can be
// denied by id.
func TestRequireCode(t *testing.T) {
	f := newFixture(t, func(c *gate.Config) { c.RequireCode = true })
	kid, b := f.blind(t)
	_, st := f.postPoint(t, kid, b, nil)
	req := f.next(t)
	_, err := f.Operator(f.Token).ApproveID(testCtx(t), req.ID)
	wantIs(t, err, gate.ErrCodeRequired)
	mustContain(t, err.Error(), "--require-code")
	_, err = f.Operator(f.Token).Approve(testCtx(t), st.Code)
	wantIs(t, err, gate.ErrUnknownCode)
	d, err := f.Operator(f.Token).DenyID(testCtx(t), req.ID)
	if err != nil || d.Status != gate.StateDenied || d.Code != "" {
		t.Fatalf("deny by id: %+v, %v", d, err)
	}
	if status, _ := f.postPoint(t, kid, b, nil); status != http.StatusForbidden {
		t.Fatalf("after the denial: %d, want 403", status)
	}
	f.wantEvents(t, "request:pending", "approve:code required", "approve:wrong code 1 of 5", "deny:denied")

	// Bodies that name no request, or both ways, are refused.
	for _, body := range []string{`{}`, `{"code":"AAAA-AAAA","id":"x"}`, `{"id":""}`} {
		req, _ := http.NewRequest(http.MethodPost, f.URL+"/gate/deny", strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+f.Token)
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("deny %s: %d, want 400", body, resp.StatusCode)
		}
	}
}
