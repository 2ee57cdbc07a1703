package gate_test

import (
	"bytes"
	"fmt"
	"testing"
	"time"

	"github.com/sealproxy/sealproxy/unlock"
	"github.com/sealproxy/sealproxy/unlock/gate"
)

// TestOneOfTwoGates is docs/fleet.md's availability promise: a key sealed
// with sss 1 of 2 over two independent gates opens once an operator at
// either gate approves, and opens while one gate is down. The other
// gate's request stays listed until it expires: the host cannot tell it
// that it no longer needs it (docs/fleet.md says so).
func TestOneOfTwoGates(t *testing.T) {
	secret := []byte("one of two gates")
	for _, approveAt := range []int{0, 1} {
		t.Run(fmt.Sprintf("approve at gate %d", approveAt), func(t *testing.T) {
			gates := []*fixture{newFixture(t, nil), newFixture(t, nil)}
			jwe := seal(t, "sss", fmt.Sprintf(`{"t":1,"pins":{"tang":[%s,%s]}}`, gates[0].Config(), gates[1].Config()), secret)
			done, _ := decryptAsync(testCtx(t), jwe, &unlock.Options{Startup: unlock.NewStartup("web-1")})
			reqs := []gate.Request{gates[0].next(t), gates[1].next(t)} // both gates hold it
			f := gates[approveAt]
			if _, err := f.Operator(f.Token).Approve(testCtx(t), reqs[approveAt].Code); err != nil {
				t.Fatal(err)
			}
			if r := wait(t, done); r.err != nil || !bytes.Equal(r.plain, secret) {
				t.Fatalf("Decrypt: %v", r.err)
			}
			other := gates[1-approveAt]
			if list := other.g.Pending(); len(list) != 1 || list[0].ID != reqs[1-approveAt].ID {
				t.Errorf("the other gate lists %+v, want its request still pending", list)
			}
		})
	}
	t.Run("one gate down", func(t *testing.T) {
		up, down := newFixture(t, nil), newFixture(t, nil)
		jwe := seal(t, "sss", fmt.Sprintf(`{"t":1,"pins":{"tang":[%s,%s]}}`, down.Config(), up.Config()), secret)
		down.Close()
		done, _ := decryptAsync(testCtx(t), jwe, &unlock.Options{Startup: unlock.NewStartup("web-1")})
		req := up.next(t)
		if _, err := up.Operator(up.Token).Approve(testCtx(t), req.Code); err != nil {
			t.Fatal(err)
		}
		select {
		case r := <-done:
			if r.err != nil || !bytes.Equal(r.plain, secret) {
				t.Fatalf("Decrypt: %v", r.err)
			}
		case <-time.After(30 * time.Second):
			t.Fatal("Decrypt waited for the gate that is down")
		}
	})
}
