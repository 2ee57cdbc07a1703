package testenv

import (
	"net"
	"testing"
	"time"
)

// TestRefused checks that a connect to a closed port is recognised as
// refused on this platform, so waitRefused returns at once instead of
// waiting out its deadline on every Tang stop.
func TestRefused(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	_, err = net.DialTimeout("tcp", addr, 2*time.Second)
	if err == nil {
		t.Fatalf("connect to closed %s succeeded", addr)
	}
	if !isRefused(err) {
		t.Fatalf("connect to closed %s: %v (%#v): not recognised as refused", addr, err, err)
	}
	if isRefused(net.ErrClosed) {
		t.Fatal("net.ErrClosed recognised as refused")
	}
}
