package gate_test

import (
	"bytes"
	"testing"
	"time"

	"github.com/sealproxy/sealproxy/testenv"
	"github.com/sealproxy/sealproxy/unlock/gate"
)

// TestInteropClevisThroughGate: stock `clevis decrypt` (no session, no
// Prefer header) is held by the gate until an operator approves while
// its request waits; then it opens the JWE like any Tang would. A denial
// makes it fail.
func TestInteropClevisThroughGate(t *testing.T) {
	f := newFixture(t, func(c *gate.Config) { c.Hold = time.Minute })
	secret := []byte("clevis through the gate")
	jwe := testenv.ClevisEncrypt(t, "tang", f.Config(), secret)

	run := func() <-chan testenv.ToolResult {
		done := make(chan testenv.ToolResult, 1)
		go func() { done <- testenv.Clevis(t, jwe, "decrypt") }()
		return done
	}

	done := run()
	req := f.next(t)
	if req.Session || len(req.Kids) != 1 {
		t.Fatalf("clevis's request: %+v", req)
	}
	// Clevis shows no code: its request is approved by id.
	if _, err := f.Operator(f.Token).ApproveID(testCtx(t), req.ID); err != nil {
		t.Fatal(err)
	}
	r := <-done
	if r.Code != 0 || !bytes.Equal(r.Stdout, secret) {
		t.Fatalf("clevis decrypt through the gate: exit %d, stdout %q, stderr:\n%s", r.Code, r.Stdout, r.Stderr)
	}

	done = run()
	req = f.next(t)
	if _, err := f.Operator(f.Token).Deny(testCtx(t), req.Code); err != nil {
		t.Fatal(err)
	}
	if r := <-done; r.Code == 0 {
		t.Fatalf("clevis decrypt after a denial exited 0")
	}
	f.wantEvents(t, "request:pending", "approve:approved", "release:answered", "request:pending", "deny:denied")
}
