package testenv

import (
	"os"
	"runtime"
	"testing"
)

// TestWine: make test-windows runs the Windows binaries under Wine and
// says so (SEALPROXY_UNDER_WINE, set by tools/wine/exec.sh); Wine must
// then be recognised, or the tests that skip only under Wine would run
// and fail, and on Windows itself it must not be.
func TestWine(t *testing.T) {
	wine := UnderWine()
	switch {
	case runtime.GOOS != "windows" && wine:
		t.Fatalf("UnderWine() on %s", runtime.GOOS)
	case os.Getenv("SEALPROXY_UNDER_WINE") == "1" && !wine:
		t.Fatal("running under Wine (SEALPROXY_UNDER_WINE=1), but UnderWine() does not see it")
	case os.Getenv("SEALPROXY_UNDER_WINE") == "" && wine:
		t.Fatal("UnderWine() outside tools/wine/exec.sh")
	}
}
