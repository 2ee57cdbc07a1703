// Package testenv is the one test harness: package tests, the golden
// scripts and the tools (demo, soak, bench) start what they run against
// from here, on 127.0.0.1 only. One job per file:
//
//	tang.go        Tang servers: our own (EmbeddedTang) or Debian's tangd
//	gate.go        StartGate/ServeGate: a gate with operators, audit, TLS
//	hostile.go     HostileFront: a man in the middle answering recoveries
//	echo.go        StartEcho: an echo backend, plain or TLS
//	freeaddr.go    FreeAddr: a loopback address nothing listens on;
//	               ListenAgain: listen there again after a restart
//	ca.go, pki.go  throw-away CAs and certificates; WritePKI for the tools
//	eventually.go  Eventually/Poll: wait for a condition instead of sleeping
//	syncbuffer.go  SyncBuffer: a buffer written and read at once
//	build.go       BuildCommand: go build ./cmd/NAME once per test binary;
//	               Build: the same for the tools (demo, soak)
//	landlock.go    NeedLandlock, RunConfinedChild: sandbox tests
//	clevis.go, softhsm.go, memscan_linux.go, wine_*.go
//	               external tools (clevis, jose, SoftHSM) and process scans
//	script.go      testscript commands for the CLI golden tests
//	short.go       SkipIfShort: long tests skip under go test -short
//
// Helpers that take a testing.TB fail or skip the test; the tools use the
// twins that return an error instead (GenerateCA, CA.Sign, WritePKI,
// ServeGate, ServeTang, FindFreeAddr, Build, Poll).
//
// Interop tests skip when a tool is missing, unless
// SEALPROXY_REQUIRE_INTEROP=1 (as in CI), where a missing tool fails them.
// Under go test -short, the quick check while editing, every test that
// builds a binary (BuildCommand) or runs an external program (LookTool)
// skips, as do the other long ones (SkipIfShort); make test runs them.
package testenv

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"
)

// RequireInterop reports whether missing interop tools must fail tests.
func RequireInterop() bool { return os.Getenv("SEALPROXY_REQUIRE_INTEROP") == "1" }

// LookTool returns the path of an external program a test needs. It skips
// the test when the program is missing, or fails it under
// SEALPROXY_REQUIRE_INTEROP=1. Under -short it skips too (unless
// SEALPROXY_REQUIRE_INTEROP=1): the quick check runs no external program.
func LookTool(t testing.TB, name, apt string) string {
	t.Helper()
	if !RequireInterop() {
		SkipIfShort(t, "runs "+filepath.Base(name))
	}
	if runtime.GOOS == "windows" {
		// Debian's tang, clevis, jose, socat and SoftHSM are Linux programs
		// (under Wine their files are even visible, but do not run): the
		// interop tests run in the Linux suite.
		t.Skipf("skipping interop test: %s is a Debian (Linux) program; the Linux suite runs this test", name)
	}
	path, err := exec.LookPath(name)
	if err == nil {
		return path
	}
	if _, statErr := os.Stat(name); statErr == nil {
		return name
	}
	msg := name + " is not installed (apt-get install " + apt + ")"
	if RequireInterop() {
		t.Fatalf("%s, and SEALPROXY_REQUIRE_INTEROP=1 makes interop tests mandatory", msg)
	}
	t.Skipf("skipping interop test: %s; set SEALPROXY_REQUIRE_INTEROP=1 to make this a failure", msg)
	return ""
}
