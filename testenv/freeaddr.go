package testenv

import (
	"context"
	"net"
	"testing"
	"time"
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

// ListenAgain listens on addr, a loopback address a server of the test
// just closed (a restart on the same address, as FreeAddr's callers
// make): the port may stay busy for a moment, so it retries until
// timeout, then fails the test.
func ListenAgain(t testing.TB, addr string, timeout time.Duration) net.Listener {
	t.Helper()
	var ln net.Listener
	var err error
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if !Poll(ctx, func() bool {
		ln, err = net.Listen("tcp", addr)
		return err == nil
	}) {
		t.Fatalf("listening on %s again: %v", addr, err)
	}
	return ln
}
