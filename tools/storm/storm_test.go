//go:build linux

package main

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/sealproxy/sealproxy/testenv"
	"github.com/sealproxy/sealproxy/unlock/tang"
)

// TestStormSmoke runs the harness at CI size against the real sealgate
// binary and Debian's tangd: every host of the storm gets its key through
// the policy (no operator), every recovery of the throughput runs
// succeeds, and the report carries both servers' CPU.
func TestStormSmoke(t *testing.T) {
	testenv.LookTool(t, testenv.TangdPath, "tang")
	testenv.LookTool(t, "socat", "socat")
	c := config{
		sealgate: testenv.BuildCommand(t, "sealgate"),
		hosts:    100, recoveries: 40, concurrency: 8, serverCPU: -1,
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	r, err := run(ctx, c, testWriter{t})
	if err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	r.print(&out)
	t.Log(out.String())
	if r.Storm.Failed != 0 || r.Storm.Retried != 0 || r.Storm.Hosts != 100 {
		t.Errorf("storm: of %d hosts %d failed, %d retried: %v", r.Storm.Hosts, r.Storm.Failed, r.Storm.Retried, r.Storm.Errors)
	}
	if len(r.Throughput) != 2 {
		t.Fatalf("throughput runs: %d, want sealgate and tangd", len(r.Throughput))
	}
	for _, tp := range r.Throughput {
		if tp.Errors != 0 || tp.CPU <= 0 {
			t.Errorf("%s: %d errors, CPU %v", tp.Server, tp.Errors, tp.CPU)
		}
	}
}

// TestStormHostsNeedThePolicy: the storm's hosts are unlocked by the
// policy on their source network and nothing else, so the harness
// measures that path: a host outside the policy's network waits for an
// operator (here: until its context ends).
func TestStormHostsNeedThePolicy(t *testing.T) {
	bin := testenv.BuildCommand(t, "sealgate")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	url, _, stop, err := startGate(ctx, config{sealgate: bin, serverCPU: -1, policy: "127.3.0.0/16"}, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	jwe, err := seal(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := host(ctx, jwe, source(3, 1), "inside"); err != nil {
		t.Fatalf("a host of 127.3.0.0/16: %v", err)
	}
	short, cancel2 := context.WithTimeout(ctx, 3*time.Second)
	defer cancel2()
	_, err = host(short, jwe, source(4, 1), "outside")
	if !errors.Is(err, tang.ErrNotApproved) {
		t.Fatalf("a host outside the policy's network: %v, want it left waiting (tang.ErrNotApproved)", err)
	}
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}
