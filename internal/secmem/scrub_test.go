package secmem

import (
	"testing"
	"time"
)

// TestUsedScrubs checks that a burst of Used calls ends in a scrub once
// the process has been quiet for ScrubIdle.
func TestUsedScrubs(t *testing.T) {
	before, next := Scrubs()
	for range 5 {
		Used()
	}
	select {
	case <-next:
	case <-time.After(10 * time.Second):
		t.Fatal("no scrub within 10s of the last use")
	}
	if n, _ := Scrubs(); n <= before {
		t.Fatalf("scrubs %d, was %d", n, before)
	}
}
