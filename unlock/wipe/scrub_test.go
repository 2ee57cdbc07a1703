package wipe

import (
	"testing"
	"time"
)

// TestUsedScrubs checks that a burst of Used calls ends in one scrub once
// the process has been quiet for ScrubIdle.
func TestUsedScrubs(t *testing.T) {
	before := Scrubs()
	for range 5 {
		Used()
	}
	deadline := time.Now().Add(10 * time.Second)
	for Scrubs() == before {
		if time.Now().After(deadline) {
			t.Fatal("no scrub within 10s of the last use")
		}
		time.Sleep(10 * time.Millisecond)
	}
}
