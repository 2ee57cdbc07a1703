package testenv

import (
	"os"
	"os/exec"
	"strings"
	"testing"
)

// NeedLandlock skips a test whose assertions need the kernel to enforce
// Landlock; under SEALPROXY_REQUIRE_LANDLOCK=1 (CI) it fails instead.
func NeedLandlock(t testing.TB) {
	t.Helper()
	if landlockABI() == 0 {
		if os.Getenv("SEALPROXY_REQUIRE_LANDLOCK") == "1" {
			t.Fatal("SEALPROXY_REQUIRE_LANDLOCK=1 but this kernel has no Landlock (the ABI version query failed)")
		}
		t.Skip("this kernel has no Landlock (the ABI version query failed): the sandbox cannot be enforced here")
	}
}

// RunConfinedChild re-runs the current top-level test in a child test
// binary with env added (which tells the child what to confine itself
// to): a Landlock domain cannot be left, so the test process never
// applies one. It fails the test if the child fails or its output lacks
// done, the line the child logs once its checks ran.
func RunConfinedChild(t testing.TB, env []string, done string) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^"+t.Name()+"$", "-test.v")
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("confined child: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), done) {
		t.Fatalf("the confined child ran no checks (no %q):\n%s", done, out)
	}
}
