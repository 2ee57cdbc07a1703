//go:build !windows

package testenv

import "syscall"

// errRefused is the error a connect to a closed port fails with.
var errRefused error = syscall.ECONNREFUSED
