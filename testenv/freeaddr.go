package testenv

import (
	"net"
	"testing"
)

// FreeAddr returns a 127.0.0.1:PORT nothing listens on, for a process
// the test starts to listen on (or for a connection that must be
// refused). Another process may take the port first; on loopback in a
// test run that is rare enough.
func FreeAddr(t testing.TB) string {
	t.Helper()
	addr, err := FindFreeAddr()
	if err != nil {
		t.Fatal(err)
	}
	return addr
}

// FindFreeAddr is FreeAddr for callers without a *testing.T.
func FindFreeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}
