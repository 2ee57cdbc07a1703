//go:build !windows

package testenv

// UnderWine is false: Wine runs Windows programs only.
func UnderWine() bool { return false }
