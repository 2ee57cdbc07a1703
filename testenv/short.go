package testenv

import "testing"

// SkipIfShort skips a long test (it builds binaries, runs external
// suites, scans memory or drives Wine or systemd-nspawn) under
// `go test -short`, the quick check while editing; `make test`, which
// never passes -short, runs it. why says what makes it long.
func SkipIfShort(t testing.TB, why string) {
	t.Helper()
	if testing.Short() {
		t.Skipf("skipped under -short (%s); `make test` runs it", why)
	}
}
