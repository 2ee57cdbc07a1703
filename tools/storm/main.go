//go:build linux

// Command storm measures one sealgate under a fleet's start-up: its
// recoveries per second per core, side by side with Debian's tangd, and
// how long N hosts that start at once, each from its own loopback address
// (all of 127/8 reaches lo on Linux) and approved by a policy on their
// source network, take to all have their key. Each host does what
// sealproxy's start-up does: unlock.Decrypt of a sealed key with a
// Startup (one approval session), over its own HTTP client bound to its
// own source address. See docs/fleet.md, "Capacity".
//
//	make build && taskset -c 1 go run ./tools/storm -sealgate bin/sealgate -server-cpu 0
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"time"
)

func main() {
	var c config
	flag.StringVar(&c.sealgate, "sealgate", "", "the sealgate `binary` (default: build ./cmd/sealgate)")
	flag.IntVar(&c.hosts, "hosts", 1000, "hosts that start at once")
	flag.IntVar(&c.recoveries, "recoveries", 2000, "recoveries per server in the throughput run")
	flag.IntVar(&c.concurrency, "concurrency", 16, "recoveries in flight in the throughput run")
	flag.IntVar(&c.serverCPU, "server-cpu", 0, "pin the servers to this `CPU` with taskset (-1: do not pin)")
	flag.IntVar(&c.maxConns, "max-connections", 0, "sealgate serve --max-connections (0: its default)")
	flag.BoolVar(&c.noTangd, "no-tangd", false, "skip the tangd peer")
	flag.Parse()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	r, err := run(ctx, c, os.Stderr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "storm: error:", err)
		os.Exit(1)
	}
	r.print(os.Stdout)
	if r.Storm.Failed > 0 {
		os.Exit(1)
	}
}
