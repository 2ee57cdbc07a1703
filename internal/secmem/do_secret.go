//go:build goexperiment.runtimesecret

package secmem

import (
	"runtime"
	"runtime/secret"
)

// Do runs f and then erases the registers and stack it used; heap memory
// f allocated is erased when the garbage collector frees it.
func Do(f func()) { secret.Do(f) }

// Erasing reports whether Do erases more than the caller's own buffers.
// (secret.Do is a plain call on platforms other than linux/amd64 and arm64.)
func Erasing() bool {
	return runtime.GOOS == "linux" && (runtime.GOARCH == "amd64" || runtime.GOARCH == "arm64")
}

// Built reports whether this binary was built with
// GOEXPERIMENT=runtimesecret.
func Built() bool { return true }
