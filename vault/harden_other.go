//go:build !linux

package vault

// disableCoreDumps is a no-op here: memguard already sets RLIMIT_CORE to 0
// on Unix at import, and Windows has no core dumps to disable (Windows
// Error Reporting dumps are a system setting).
func disableCoreDumps(bool) error { return nil }

// checkMemlock has no limit to check on this platform.
func checkMemlock(int) error { return nil }
