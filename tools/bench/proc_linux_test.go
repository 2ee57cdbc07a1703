//go:build linux

package main

import (
	"os"
	"testing"
)

func TestProcReaders(t *testing.T) {
	pid := os.Getpid()
	// Burn some CPU so the figure cannot be zero however coarse the clock.
	x := 0
	for i := range 50_000_000 {
		x ^= i
	}
	_ = x
	cpu, err := cpuTime(pid)
	if err != nil || cpu <= 0 {
		t.Errorf("cpuTime = %v, %v", cpu, err)
	}
	rss, err := rssKiB(pid)
	if err != nil || rss < 1024 {
		t.Errorf("rssKiB = %d, %v", rss, err)
	}
}
