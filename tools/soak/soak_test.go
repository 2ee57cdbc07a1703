//go:build linux

package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/sealproxy/sealproxy/testenv"
)

// TestSoakShort runs every scenario in its short form against the real
// sealproxy binary and fails with each property that did not hold: errors
// on held connections, flood connections not refused or not counted,
// silent ones not closed by the handshake timeout, writes not blocked by
// slow readers, hostile input not recognised, resources not back to
// baseline, the proxy not alive or its log showing a panic. Latencies are
// only recorded: this machine's speed is no property of the proxy.
func TestSoakShort(t *testing.T) {
	testenv.SkipIfShort(t, "builds and runs sealproxy with thousands of connections")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	var out, progress bytes.Buffer
	r, err := run(ctx, []string{"-short"}, &out, &progress)
	t.Log("\n" + out.String())
	if err != nil {
		t.Logf("progress:\n%s", progress.String())
		t.Fatalf("the soak suite could not run: %v", err)
	}
	for _, s := range allScenarios {
		ran := map[string]bool{"hold": r.Hold != nil, "flood": r.Flood != nil, "silent": r.Silent != nil,
			"slowread": r.SlowRead != nil, "hostile": r.Hostile != nil}[s]
		if !ran {
			t.Errorf("scenario %s did not run", s)
		}
	}
	for _, p := range r.Problems {
		t.Errorf("%s", p)
	}
	if t.Failed() {
		t.Logf("progress:\n%s", progress.String())
	}
	if !strings.Contains(out.String(), "go run ./tools/soak -short") {
		t.Errorf("the table does not show the command line")
	}
}
