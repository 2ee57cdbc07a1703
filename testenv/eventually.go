package testenv

import (
	"context"
	"testing"
	"time"
)

// PollInterval is how often Poll and Eventually check their condition.
const PollInterval = 10 * time.Millisecond

// Poll checks cond every PollInterval until it holds (true) or ctx ends
// (false). It needs no *testing.T, so tools and tests that print their
// own failure use it.
func Poll(ctx context.Context, cond func() bool) bool {
	tick := time.NewTicker(PollInterval)
	defer tick.Stop()
	for !cond() {
		select {
		case <-ctx.Done():
			return cond()
		case <-tick.C:
		}
	}
	return true
}

// Eventually polls cond until it holds, and fails the test with what
// once timeout has passed.
func Eventually(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if !Poll(ctx, cond) {
		t.Fatalf("timed out after %v waiting for %s", timeout, what)
	}
}
