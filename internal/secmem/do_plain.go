//go:build !goexperiment.runtimesecret

package secmem

// Do runs f. This build lacks GOEXPERIMENT=runtimesecret, so registers,
// stack and heap allocations made by f are not erased; only the buffers
// callers wipe themselves are.
func Do(f func()) { f() }

// Erasing reports whether Do erases more than the caller's own buffers.
func Erasing() bool { return false }

// Built reports whether this binary was built with
// GOEXPERIMENT=runtimesecret.
func Built() bool { return false }
