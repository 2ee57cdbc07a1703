//go:build !linux

package secmem

// NoDumps does nothing here: memguard already sets RLIMIT_CORE to 0 on
// Unix at import, and Windows has no core dumps to disable (Windows Error
// Reporting dumps are a system setting).
func NoDumps(bool) error { return nil }
