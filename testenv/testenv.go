// Package testenv starts the real components that tests run against, on
// 127.0.0.1 only: Tang servers (our own, or Debian's tangd behind socat)
// and the command-line tools they are checked against (clevis, jose).
//
// Interop tests skip when a tool is missing, unless
// SEALPROXY_REQUIRE_INTEROP=1 (as in CI), where a missing tool fails them.
package testenv

import (
	"os"
	"os/exec"
	"runtime"
	"testing"
)

// RequireInterop reports whether missing interop tools must fail tests.
func RequireInterop() bool { return os.Getenv("SEALPROXY_REQUIRE_INTEROP") == "1" }

// LookTool returns the path of an external program a test needs. It skips
// the test when the program is missing, or fails it under
// SEALPROXY_REQUIRE_INTEROP=1.
func LookTool(t testing.TB, name, apt string) string {
	t.Helper()
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
