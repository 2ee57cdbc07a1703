package gate_test

import (
	"bytes"
	"net/http"
	"strings"
	"testing"

	"github.com/sealproxy/sealproxy/unlock/gate"
)

// TestTwoPersonRule: with two approvers, one operator's approval leaves
// the request waiting, the same operator cannot approve twice, a second
// operator's approval opens it; each must type the code (the request's id
// is not enough); one denial is enough.
func TestTwoPersonRule(t *testing.T) {
	f := newFixture(t, func(c *gate.Config) { c.Approvers = 2 })
	bobToken, err := f.Ops.Add("bob")
	if err != nil {
		t.Fatal(err)
	}
	secret := []byte("two keys to the vault")
	jwe := seal(t, "tang", f.Config(), secret)
	done, _ := decryptAsync(testCtx(t), jwe, nil)
	req := f.next(t)

	d, err := f.Operator(f.Token).Approve(testCtx(t), req.Code)
	if err != nil || d.Status != gate.StatePending || d.Approvals != 1 || d.Needed != 2 {
		t.Fatalf("first approval: %+v, %v; want pending, 1 of 2", d, err)
	}
	_, err = f.Operator(f.Token).Approve(testCtx(t), req.Code)
	wantIs(t, err, gate.ErrNotPending)
	mustContain(t, err.Error(), "alice already approved")
	if list := f.g.Pending(); len(list) != 1 || len(list[0].Approvals) != 1 || list[0].Approvals[0] != "alice" {
		t.Fatalf("pending after one approval: %+v", list)
	}
	select {
	case r := <-done:
		t.Fatalf("Decrypt returned after one of two approvals: %v", r.err)
	default:
	}
	// The second operator cannot ride on the first's typing: the pending
	// list has no code, and the id does not approve.
	list, err := f.Operator(bobToken).Pending(testCtx(t))
	if err != nil || len(list) != 1 || list[0].Code != "" {
		t.Fatalf("bob's pending list: %+v, %v", list, err)
	}
	_, err = f.Operator(bobToken).ApproveID(testCtx(t), list[0].ID)
	wantIs(t, err, gate.ErrCodeRequired)
	if evs, err := f.Operator(bobToken).Decisions(testCtx(t)); err != nil || len(evs) == 0 || strings.Contains(string(mustJSON(evs)), req.Code) {
		t.Fatalf("bob's recent decisions: %+v, %v; want alice's approval without the code %s", evs, err, req.Code)
	}
	d, err = f.Operator(bobToken).Approve(testCtx(t), req.Code)
	if err != nil || d.Status != gate.StateApproved || d.Operator != "bob" || d.Approvals != 2 {
		t.Fatalf("second approval: %+v, %v", d, err)
	}
	if r := wait(t, done); r.err != nil || !bytes.Equal(r.plain, secret) {
		t.Fatalf("Decrypt: %v", r.err)
	}
	f.wantEvents(t, "request:pending", "approve:approval 1 of 2", "approve:same operator again", "approve:code required", "approve:approved", "release:answered")

	kid, b := f.blind(t)
	_, st := f.postPoint(t, kid, b, nil)
	if _, err := f.Operator(f.Token).ApproveID(testCtx(t), f.id(t, st.Code)); err != nil {
		t.Fatal(err)
	}
	if _, err := f.Operator(bobToken).Deny(testCtx(t), st.Code); err != nil {
		t.Fatal(err)
	}
	if status, st := f.postPoint(t, kid, b, nil); status != http.StatusForbidden || st.Operator != "bob" {
		t.Fatalf("after one approval and a denial: %d %+v, want 403 by bob", status, st)
	}
}
