package testenv

import "golang.org/x/sys/windows"

// errRefused is the error a connect to a closed port fails with: Winsock
// has its own code, which syscall.ECONNREFUSED (a Unix errno Go invents on
// Windows) never matches.
var errRefused error = windows.WSAECONNREFUSED
