//go:build !windows

package proxy

import "syscall"

// errConnReset is the error of a read from a connection the peer reset.
var errConnReset error = syscall.ECONNRESET
