package main

import (
	"errors"
	"slices"
	"testing"

	"github.com/sealproxy/sealproxy/cmd/internal/cli"
)

// TestServiceRunArgs: what `service install` registers, `service run`
// reads back with the same name, which is the Event Log source, so an
// instance installed with --name logs under its own name.
func TestServiceRunArgs(t *testing.T) {
	for _, name := range []string{"sealproxy", "bad", "edge 2"} {
		args := serviceArgs(name, `C:\ProgramData\sealproxy\edge.toml`)
		if !slices.Equal(args[:2], []string{"service", "run"}) {
			t.Fatalf("install registers %q: not the explicit service mode", args)
		}
		got, run, err := parseServiceRun(args[2:])
		if err != nil {
			t.Fatal(err)
		}
		if got != name {
			t.Errorf("installed as %q, runs (and logs) as %q", name, got)
		}
		if want := []string{"run", "--config", `C:\ProgramData\sealproxy\edge.toml`}; !slices.Equal(run, want) {
			t.Errorf("runs %q, want %q", run, want)
		}
	}
}

func TestServiceRunBadArgs(t *testing.T) {
	for _, args := range [][]string{
		{"--name", "x"},                        // no configuration
		{"--config", "a.toml", "extra"},        // stray argument
		{"--config", "a.toml", "--nosuchflag"}, // unknown flag
	} {
		_, _, err := parseServiceRun(args)
		var ce *cli.Error
		if !errors.As(err, &ce) || ce.Code != cli.ExitUsage {
			t.Errorf("parseServiceRun(%q) = %v, want a usage error", args, err)
		}
	}
}
