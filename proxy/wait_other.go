//go:build !unix

package proxy

import "net"

// canPeek reports that readableNow cannot look at the socket here.
const canPeek = false

// waitReadable returns at once where peeking at a socket is not wired up
// (Windows): the copy then parks its buffer in Read like io.Copy does.
func waitReadable(net.Conn) error { return nil }

// readableNow always says yes here: the copy then waits in Read, under
// the idle deadline it sets when canPeek is false.
func readableNow(net.Conn) bool { return true }
