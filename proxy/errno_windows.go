package proxy

import "golang.org/x/sys/windows"

// errConnReset is the error of a read from a connection the peer reset:
// Winsock's own code, which syscall.ECONNRESET (a Unix errno Go invents on
// Windows) never matches.
var errConnReset error = windows.WSAECONNRESET
