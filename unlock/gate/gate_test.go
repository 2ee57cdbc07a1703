package gate_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/sealproxy/sealproxy/unlock"
	"github.com/sealproxy/sealproxy/unlock/gate"
	"github.com/sealproxy/sealproxy/unlock/tang"
)

type result struct {
	plain []byte
	err   error
}

// decryptAsync runs unlock.Decrypt in the background and reports what the
// client was told while it waited.
func decryptAsync(ctx context.Context, jwe []byte, opts *unlock.Options) (<-chan result, <-chan tang.Pending) {
	pending := make(chan tang.Pending, 16)
	if opts == nil {
		opts = &unlock.Options{}
	}
	opts.OnPending = func(p tang.Pending) { pending <- p }
	done := make(chan result, 1)
	go func() {
		buf, err := unlock.Decrypt(ctx, jwe, opts)
		if err != nil {
			done <- result{err: err}
			return
		}
		defer buf.Destroy()
		done <- result{plain: bytes.Clone(buf.Bytes())}
	}()
	return done, pending
}

func wait(t *testing.T, done <-chan result) result {
	t.Helper()
	select {
	case r := <-done:
		return r
	case <-testCtx(t).Done():
		t.Fatal("Decrypt did not return")
	}
	return result{}
}

func seal(t *testing.T, pin, cfg string, secret []byte) []byte {
	t.Helper()
	jwe, err := unlock.Encrypt(testCtx(t), pin, []byte(cfg), secret, nil)
	if err != nil {
		t.Fatal(err)
	}
	return jwe
}

// TestApprove: a recovery waits; the client and the gate show the same
// code; an operator approves it over the API; the secret comes back; the
// audit log records the request, the decision and the answer.
func TestApprove(t *testing.T) {
	f := newFixture(t, nil)
	secret := []byte("correct horse battery staple")
	jwe := seal(t, "tang", f.Config(), secret)

	done, pending := decryptAsync(testCtx(t), jwe, nil)
	req := f.next(t)
	p := <-pending
	if p.Code != req.Code || p.URL != f.URL {
		t.Fatalf("client reports %+v, gate has code %s", p, req.Code)
	}
	// Our client always runs the committed exchange, in a session of its
	// own when the caller gave none.
	if req.State != gate.StatePending || !req.Session || !req.Verified || req.Source != "127.0.0.1" || !req.Complete || len(req.Kids) != 1 {
		t.Fatalf("pending request %+v", req)
	}
	list, err := f.Operator(f.Token).Pending(testCtx(t))
	if err != nil || len(list) != 1 || list[0].ID != req.ID || list[0].Code != "" || !list[0].Verified {
		t.Fatalf("Pending: %v, %+v", err, list)
	}
	d, err := f.Operator(f.Token).Approve(testCtx(t), strings.ToLower(strings.ReplaceAll(req.Code, "-", "")))
	if err != nil {
		t.Fatal(err)
	}
	if d.Operator != "alice" || d.Status != gate.StateApproved || d.Code != req.Code || d.ID != req.ID {
		t.Fatalf("decision %+v", d)
	}
	r := wait(t, done)
	if r.err != nil || !bytes.Equal(r.plain, secret) {
		t.Fatalf("Decrypt = %q, %v", r.plain, r.err)
	}
	events := f.wantEvents(t, "request:pending", "code:agreed", "approve:approved", "release:answered")
	for _, e := range events {
		// Events name the request by id; none carries the code, which
		// the operator must read on the host.
		if e.ID != req.ID || e.Source != "127.0.0.1" || e.Time.IsZero() {
			t.Errorf("audit event %+v: want id %s, source and time", e, req.ID)
		}
		if strings.Contains(string(mustJSON(e)), req.Code) {
			t.Errorf("audit event %+v carries the code %s", e, req.Code)
		}
	}
	if list, _ := f.Operator(f.Token).Pending(testCtx(t)); len(list) != 0 {
		t.Fatalf("after the answer, pending = %+v", list)
	}
}

// TestDeny: a denial reaches the client as tang.ErrDenied naming the
// operator, and the same point stays denied.
func TestDeny(t *testing.T) {
	f := newFixture(t, nil)
	kid, b := f.blind(t)
	status, st := f.postPoint(t, kid, b, nil)
	if status != http.StatusAccepted || st.Status != "pending" || st.Code != tang.ApprovalCode(b.Point()) {
		t.Fatalf("POST /rec: %d %+v, want 202 pending with code %s", status, st, tang.ApprovalCode(b.Point()))
	}
	f.next(t)
	if _, err := f.Operator(f.Token).Deny(testCtx(t), st.Code); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		status, st = f.postPoint(t, kid, b, nil)
		if status != http.StatusForbidden || st.Status != "denied" || st.Operator != "alice" || st.Time.IsZero() {
			t.Fatalf("after denial: %d %+v, want 403 denied by alice", status, st)
		}
	}
	// A decided request takes no second decision.
	_, err := f.Operator(f.Token).Deny(testCtx(t), st.Code)
	wantIs(t, err, gate.ErrNotPending)
	f.wantEvents(t, "request:pending", "deny:denied", "deny:already decided")

	// Our client, denied, gets a *tang.DeniedError with the code.
	_, b2 := f.blind(t)
	errc := make(chan error, 1)
	go func() {
		_, err := (&tang.Client{}).Recover(testCtx(t), f.URL, kid, b2)
		errc <- err
	}()
	req := f.next(t)
	if _, err := f.Operator(f.Token).Deny(testCtx(t), req.Code); err != nil {
		t.Fatal(err)
	}
	err = <-errc
	wantIs(t, err, tang.ErrDenied)
	mustContain(t, err.Error(), "recovery denied by operator alice at ")
	mustContain(t, err.Error(), f.URL)
	var de *tang.DeniedError
	if !errors.As(err, &de) || de.Code != req.Code {
		t.Fatalf("err = %#v, want a *tang.DeniedError with code %s", err, req.Code)
	}
}

// TestDenyEndToEnd: Decrypt of a denied JWE fails with ErrDenied.
func TestDenyEndToEnd(t *testing.T) {
	f := newFixture(t, nil)
	jwe := seal(t, "tang", f.Config(), []byte("secret"))
	done, _ := decryptAsync(testCtx(t), jwe, nil)
	req := f.next(t)
	if _, err := f.Operator(f.Token).Deny(testCtx(t), req.Code); err != nil {
		t.Fatal(err)
	}
	r := wait(t, done)
	wantIs(t, r.err, tang.ErrDenied)
	if r.plain != nil {
		t.Fatal("plaintext after denial")
	}
}

// TestRejoin: retries with the same point join the same request.
func TestRejoin(t *testing.T) {
	f := newFixture(t, nil)
	kid, b := f.blind(t)
	_, first := f.postPoint(t, kid, b, nil)
	_, again := f.postPoint(t, kid, b, nil)
	if first.Code != again.Code {
		t.Fatalf("codes %s and %s for the same point", first.Code, again.Code)
	}
	if list := f.g.Pending(); len(list) != 1 {
		t.Fatalf("pending = %+v, want one request", list)
	}
	f.wantEvents(t, "request:pending")
	if n := len(f.auditEvents(t)); n != 1 {
		t.Fatalf("%d audit events, want 1: a retry is not a new request", n)
	}
}

// TestApprovalExpiresAndIsSingleUse: an approval not collected in time
// lapses and the same point needs a new one; an approval answers once;
// replayed approvals are refused.
func TestApprovalExpiresAndIsSingleUse(t *testing.T) {
	f := newFixture(t, nil)
	kid, b := f.blind(t)
	_, st := f.postPoint(t, kid, b, nil)
	id := f.id(t, st.Code)
	if _, err := f.Operator(f.Token).ApproveID(testCtx(t), id); err != nil {
		t.Fatal(err)
	}
	_, err := f.Operator(f.Token).ApproveID(testCtx(t), id)
	wantIs(t, err, gate.ErrNotPending)

	f.Clock.Advance(gate.DefaultApprovalTTL + time.Second)
	status, again := f.postPoint(t, kid, b, nil)
	if status != http.StatusAccepted || again.Status != "pending" {
		t.Fatalf("after the approval expired: %d %+v, want 202 pending", status, again)
	}
	f.wantEvents(t, "request:pending", "approve:approved", "approve:already decided", "expire:approval expired before it was used", "request:pending")

	id = f.id(t, st.Code)
	if _, err := f.Operator(f.Token).ApproveID(testCtx(t), id); err != nil {
		t.Fatal(err)
	}
	if status, _ := f.postPoint(t, kid, b, nil); status != http.StatusOK {
		t.Fatalf("approved: %d, want 200", status)
	}
	// Answered once: the approval is spent, the id unknown, and the same
	// point waits for a new decision.
	_, err = f.Operator(f.Token).ApproveID(testCtx(t), id)
	wantIs(t, err, gate.ErrUnknownRequest)
	if status, _ := f.postPoint(t, kid, b, nil); status != http.StatusAccepted {
		t.Fatalf("the same point after its answer: %d, want 202", status)
	}
}

// TestPendingExpires: an undecided request lapses.
func TestPendingExpires(t *testing.T) {
	f := newFixture(t, nil)
	kid, b := f.blind(t)
	_, st := f.postPoint(t, kid, b, nil)
	id := f.id(t, st.Code)
	f.Clock.Advance(gate.DefaultPendingTTL + time.Second)
	_, err := f.Operator(f.Token).ApproveID(testCtx(t), id)
	wantIs(t, err, gate.ErrUnknownRequest)
	f.wantEvents(t, "request:pending", "expire:pending request expired", "approve:unknown id")
}

// TestSecondDecryptNeedsNewApproval: each Decrypt blinds afresh, so its
// code is new and the first approval does not carry over.
func TestSecondDecryptNeedsNewApproval(t *testing.T) {
	f := newFixture(t, nil)
	secret := []byte("s3cret")
	jwe := seal(t, "tang", f.Config(), secret)
	var codes []string
	for range 2 {
		done, _ := decryptAsync(testCtx(t), jwe, nil)
		req := f.next(t)
		codes = append(codes, req.Code)
		if _, err := f.Operator(f.Token).Approve(testCtx(t), req.Code); err != nil {
			t.Fatal(err)
		}
		if r := wait(t, done); r.err != nil || !bytes.Equal(r.plain, secret) {
			t.Fatalf("Decrypt: %v", r.err)
		}
	}
	if codes[0] == codes[1] {
		t.Fatalf("two start-ups had the same code %s", codes[0])
	}
}

// TestSSSSession: two shares at one gate, sent as one session, wait as one
// request with one code, which the client computes too; one approval
// opens both.
func TestSSSSession(t *testing.T) {
	f := newFixture(t, nil)
	secret := []byte("shared secret")
	jwe := seal(t, "sss", fmt.Sprintf(`{"t":2,"pins":{"tang":[%s,%s]}}`, f.Config(), f.Config()), secret)
	done, pending := decryptAsync(testCtx(t), jwe, &unlock.Options{Startup: unlock.NewStartup("web-1")})
	req := f.next(t)
	if !req.Session || req.Keys != 2 || req.Arrived != 2 || req.Host != "web-1" {
		t.Fatalf("session request %+v", req)
	}
	p := <-pending
	if p.Code != req.Code {
		t.Fatalf("client shows %s, gate %s", p.Code, req.Code)
	}
	if list := f.g.Pending(); len(list) != 1 {
		t.Fatalf("pending = %+v, want the session alone", list)
	}
	if _, err := f.Operator(f.Token).Approve(testCtx(t), req.Code); err != nil {
		t.Fatal(err)
	}
	if r := wait(t, done); r.err != nil || !bytes.Equal(r.plain, secret) {
		t.Fatalf("Decrypt: %v", r.err)
	}
	f.wantEvents(t, "request:pending", "request:pending", "approve:approved", "release:answered", "release:answered")
	select {
	case p := <-pending:
		t.Fatalf("a second report %+v: the session's code is shown once", p)
	default:
	}
}

// TestSessionIncomplete: a session cannot be approved before all its keys
// arrived, and a session's keys cannot come from elsewhere.
func TestSessionIncomplete(t *testing.T) {
	f := newFixture(t, nil)
	kid, b1 := f.blind(t)
	_, b2 := f.blind(t)
	hdr := map[string]string{tang.HeaderSession: "sess1", tang.HeaderHost: "db-1", tang.HeaderKeys: "2"}
	status, st := f.postPoint(t, kid, b1, hdr)
	if status != http.StatusAccepted || st.Keys != 2 || st.Arrived != 1 {
		t.Fatalf("first key: %d %+v", status, st)
	}
	_, err := f.Operator(f.Token).ApproveID(testCtx(t), f.id(t, st.Code))
	wantIs(t, err, gate.ErrNotPending)
	mustContain(t, err.Error(), "1 of its 2 keys")

	other := map[string]string{tang.HeaderSession: "sess1", tang.HeaderHost: "evil", tang.HeaderKeys: "2"}
	if status, _ := f.postPoint(t, kid, b2, other); status != http.StatusConflict {
		t.Fatalf("another host label in the session: %d, want 409", status)
	}
	status, st = f.postPoint(t, kid, b2, hdr)
	if want := tang.ApprovalCode(b2.Point(), b1.Point()); status != http.StatusAccepted || st.Code != want || st.Arrived != 2 {
		t.Fatalf("second key: %d %+v, want code %s", status, st, want)
	}
	_, b3 := f.blind(t)
	if status, _ := f.postPoint(t, kid, b3, hdr); status != http.StatusConflict {
		t.Fatalf("a third key in a two-key session: %d, want 409", status)
	}
	if _, err := f.Operator(f.Token).ApproveID(testCtx(t), f.id(t, st.Code)); err != nil {
		t.Fatal(err)
	}
	for _, b := range []*tang.Blind{b1, b2} {
		if status, _ := f.postPoint(t, kid, b, hdr); status != http.StatusOK {
			t.Fatalf("approved session: %d, want 200", status)
		}
		if status, _ := f.postPoint(t, kid, b, hdr); status != http.StatusConflict && status != http.StatusAccepted {
			t.Fatalf("approved session, replayed point: %d, want a refusal", status)
		}
	}
}

// TestNotApprovedInTime: a client that stops waiting gets ErrNotApproved
// with the code.
func TestNotApprovedInTime(t *testing.T) {
	f := newFixture(t, func(c *gate.Config) { c.Hold = 50 * time.Millisecond })
	kid, b := f.blind(t)
	ctx, cancel := context.WithTimeout(testCtx(t), 1500*time.Millisecond)
	defer cancel()
	_, err := (&tang.Client{}).Recover(ctx, f.URL, kid, b)
	wantIs(t, err, tang.ErrNotApproved)
	mustContain(t, err.Error(), "code "+f.next(t).Code+" is still pending")
}

// TestOperatorAuth: a missing, a wrong and a removed operator's token get
// the same 401; nothing is decided.
func TestOperatorAuth(t *testing.T) {
	f := newFixture(t, nil)
	kid, b := f.blind(t)
	_, st := f.postPoint(t, kid, b, nil)
	bob, err := f.Ops.Add("bob")
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Ops.Remove("bob"); err != nil {
		t.Fatal(err)
	}
	var bodies []string
	for name, token := range map[string]string{"missing": "", "wrong": "sgt_" + strings.Repeat("A", 43), "removed": bob, "alice's with a suffix": f.Token + "x"} {
		_, err := f.Operator(token).Approve(testCtx(t), st.Code)
		if !errors.Is(err, gate.ErrUnauthorized) {
			t.Errorf("%s token: %v, want ErrUnauthorized", name, err)
		}
		_, err = f.Operator(token).Pending(testCtx(t))
		wantIs(t, err, gate.ErrUnauthorized)
		status, body := f.post(t, "/gate/deny", []byte(`{"code":"`+st.Code+`"}`), map[string]string{"Authorization": "Bearer " + token})
		if status != http.StatusUnauthorized {
			t.Errorf("%s token: deny answered %d", name, status)
		}
		bodies = append(bodies, string(body))
	}
	for _, b := range bodies[1:] {
		if b != bodies[0] {
			t.Errorf("401 bodies differ: %q vs %q", b, bodies[0])
		}
	}
	if list := f.g.Pending(); len(list) != 1 || list[0].State != gate.StatePending {
		t.Fatalf("after refused calls: %+v", list)
	}
	f.wantEvents(t, "unauthorized:POST /gate/approve", "unauthorized:GET /gate/pending")
}

// TestBadInput: what the gate refuses before anything waits.
func TestBadInput(t *testing.T) {
	f := newFixture(t, func(c *gate.Config) { c.MaxPendingPerSource = 3 })
	kid, b := f.blind(t)
	good := b.Request()
	x := *good
	x.X = x.Y // off the curve
	adv, err := (&tang.Client{}).Advertisement(testCtx(t), f.URL, f.Thp)
	if err != nil {
		t.Fatal(err)
	}
	sigKid := adv.SigningThumbprints()[0]
	for _, tc := range []struct {
		name, kid, body string
		hdr             map[string]string
		want            int
	}{
		{"not JSON", kid, "{", nil, 400},
		{"off the curve", kid, mustMarshal(x), nil, 400},
		{"private key", kid, strings.Replace(mustMarshal(*good), `"kty"`, `"d":"AAAA","kty"`, 1), nil, 400},
		{"wrong alg", kid, strings.Replace(mustMarshal(*good), `"ECMR"`, `"ES512"`, 1), nil, 400},
		{"wrong curve", kid, strings.Replace(mustMarshal(*good), `"P-521"`, `"P-256"`, 1), nil, 400},
		{"oversized", kid, `{"kty":"EC","x":"` + strings.Repeat("A", 5000) + `"}`, nil, 400},
		{"unknown kid", "nope", mustMarshal(*good), nil, 404},
		{"signing key", sigKid, mustMarshal(*good), nil, 403},
		{"bad session id", kid, mustMarshal(*good), map[string]string{tang.HeaderSession: "a b"}, 400},
		{"bad key count", kid, mustMarshal(*good), map[string]string{tang.HeaderSession: "s", tang.HeaderKeys: "0"}, 400},
		{"too many keys", kid, mustMarshal(*good), map[string]string{tang.HeaderSession: "s", tang.HeaderKeys: "65"}, 400},
		{"long host label", kid, mustMarshal(*good), map[string]string{tang.HeaderSession: "s", tang.HeaderHost: strings.Repeat("h", 65)}, 400},
	} {
		hdr := map[string]string{"Prefer": "wait=0"}
		for k, v := range tc.hdr {
			hdr[k] = v
		}
		if status, body := f.post(t, "/rec/"+tc.kid, []byte(tc.body), hdr); status != tc.want {
			t.Errorf("%s: %d %s, want %d", tc.name, status, body, tc.want)
		}
	}
	if list := f.g.Pending(); len(list) != 0 {
		t.Fatalf("bad requests left pending requests: %+v", list)
	}

	// Operator API: unknown and malformed codes, bad and oversized bodies.
	op := f.Operator(f.Token)
	_, err = op.Approve(testCtx(t), "AAAA-AAAA")
	wantIs(t, err, gate.ErrUnknownCode)
	auth := map[string]string{"Authorization": "Bearer " + f.Token, "Content-Type": "application/json"}
	for _, tc := range []struct {
		name, body string
		want       int
	}{
		{"malformed code", `{"code":"0000-0000"}`, 404},
		{"no code", `{}`, 400},
		{"unknown field", `{"code":"AAAA-AAAA","all":true}`, 400},
		{"not JSON", `code=AAAA-AAAA`, 400},
		{"oversized", `{"code":"` + strings.Repeat("A", 2000) + `"}`, 413},
	} {
		if status, body := f.post(t, "/gate/approve", []byte(tc.body), auth); status != tc.want {
			t.Errorf("approve, %s: %d %s, want %d", tc.name, status, body, tc.want)
		}
	}

	// Too many pending from one source.
	for i := range 3 {
		_, bi := f.blind(t)
		if status, _ := f.postPoint(t, kid, bi, nil); status != http.StatusAccepted {
			t.Fatalf("pending request %d: %d", i+1, status)
		}
	}
	_, extra := f.blind(t)
	if status, _ := f.postPoint(t, kid, extra, nil); status != http.StatusTooManyRequests {
		t.Fatalf("fourth pending request from one source: %d, want 429", status)
	}
	f.wantEvents(t, "refuse:3 requests from this source are already pending")
}

func mustMarshal(k tang.JWK) string {
	return string(mustJSON(k))
}

// failingAudit fails for one kind of event.
type failingAudit struct{ event string }

func (a failingAudit) Record(e gate.Event) error {
	if e.Event == a.event {
		return errors.New("disk full")
	}
	return nil
}

// TestAuditFailureRefuses: no decision and no answer without its record.
func TestAuditFailureRefuses(t *testing.T) {
	f := newFixture(t, func(c *gate.Config) { c.Audit = failingAudit{"approve"} })
	kid, b := f.blind(t)
	_, st := f.postPoint(t, kid, b, nil)
	id := f.id(t, st.Code)
	_, err := f.Operator(f.Token).ApproveID(testCtx(t), id)
	var apiErr *gate.APIError
	if !errors.As(err, &apiErr) || apiErr.Status != http.StatusInternalServerError {
		t.Fatalf("approve with a failing audit log: %v, want HTTP 500", err)
	}
	if _, err := f.g.ApproveID(id, "alice", "test"); !errors.Is(err, gate.ErrAudit) {
		t.Fatalf("Approve: %v, want ErrAudit", err)
	}
	if list := f.g.Pending(); len(list) != 1 || list[0].State != gate.StatePending {
		t.Fatalf("still pending? %+v", list)
	}
	if status, _ := f.postPoint(t, kid, b, nil); status != http.StatusAccepted {
		t.Fatalf("recovery after a refused approval: %d, want 202", status)
	}

	f = newFixture(t, func(c *gate.Config) { c.Audit = failingAudit{"release"} })
	kid, b = f.blind(t)
	_, st = f.postPoint(t, kid, b, nil)
	if _, err := f.g.ApproveID(f.id(t, st.Code), "alice", "test"); err != nil {
		t.Fatal(err)
	}
	if status, _ := f.postPoint(t, kid, b, nil); status != http.StatusInternalServerError {
		t.Fatalf("release with a failing audit log: %d, want 500", status)
	}
}

// TestTokensNeverLogged: operator tokens are stored as hashes only, and
// appear in no log, audit line or error, right or wrong.
func TestTokensNeverLogged(t *testing.T) {
	f := newFixture(t, nil)
	wrong := "sgt_" + strings.Repeat("Q", 43)
	kid, b := f.blind(t)
	_, st := f.postPoint(t, kid, b, nil)
	var errs []string
	id := f.id(t, st.Code)
	_, err := f.Operator(wrong).ApproveID(testCtx(t), id)
	errs = append(errs, err.Error(), fmt.Sprintf("%#v", err))
	if _, err := f.Operator(f.Token).ApproveID(testCtx(t), id); err != nil {
		t.Fatal(err)
	}
	_, err = f.Operator(f.Token).ApproveID(testCtx(t), id)
	errs = append(errs, err.Error(), fmt.Sprintf("%#v", err))
	stored, err := os.ReadFile(f.Ops.Path())
	if err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(f.Ops.Path()); fi.Mode().Perm() != 0o600 && !isWindows() {
		t.Errorf("operators file mode %v, want 0600", fi.Mode().Perm())
	}
	audit, _ := os.ReadFile(f.Audit)
	all := f.Logs.String() + string(audit) + strings.Join(errs, "\n") + string(stored)
	if !strings.Contains(f.Logs.String(), "/gate/approve") || len(audit) == 0 {
		t.Fatal("the test saw too little")
	}
	for _, tok := range []string{f.Token, wrong, f.Token[len("sgt_"):], wrong[len("sgt_"):]} {
		if strings.Contains(all, tok) {
			t.Errorf("a token appears in logs, audit, errors or the operators file")
		}
	}
	mustContain(t, string(stored), `"token_sha256"`)
}

// TestPreparedSession: the keys of one start-up, in separate JWEs, are one
// session once prepared together: one code for both, which the gate shows
// once both arrived and the host revealed its nonce, and one approval
// opens them all.
func TestPreparedSession(t *testing.T) {
	f := newFixture(t, nil)
	a, b := []byte("key one"), []byte("key two")
	ja, jb := seal(t, "tang", f.Config(), a), seal(t, "tang", f.Config(), b)
	sess := unlock.NewStartup("proxy-1")
	sess.Prepare(ja, jb)
	defer sess.Close()
	doneA, pendingA := decryptAsync(testCtx(t), ja, &unlock.Options{Startup: sess})
	doneB, pendingB := decryptAsync(testCtx(t), jb, &unlock.Options{Startup: sess})
	req := f.next(t)
	code := req.Code
	if req.Keys != 2 || req.Arrived != 2 || !req.Complete || !req.Verified || req.Host != "proxy-1" {
		t.Fatalf("request %+v, want a verified session of 2 keys", req)
	}
	// The session reports the gate once, through whichever Decrypt's
	// request was held first.
	var p tang.Pending
	select {
	case p = <-pendingA:
	case p = <-pendingB:
	case <-testCtx(t).Done():
		t.Fatal("no pending report")
	}
	if p.Code != code {
		t.Fatalf("client reports %s, want %s", p.Code, code)
	}
	if _, err := f.Operator(f.Token).Approve(testCtx(t), code); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		done <-chan result
		want []byte
	}{{doneA, a}, {doneB, b}} {
		if r := wait(t, c.done); r.err != nil || !bytes.Equal(r.plain, c.want) {
			t.Fatalf("Decrypt: %q, %v", r.plain, r.err)
		}
	}
}
