//go:build unix

package proxy

import (
	"errors"
	"net"
	"syscall"
)

// canPeek reports that readableNow really looks at the socket.
const canPeek = true

// waitReadable blocks until c has data (or EOF or an error) to read,
// without reading it, so that no copy buffer is held while a connection
// idles. It honours c's read deadline. Connections that are not sockets
// return at once.
func waitReadable(c net.Conn) error {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return nil
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	var b [1]byte
	err = rc.Read(func(fd uintptr) bool {
		_, _, err := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		return !errors.Is(err, syscall.EAGAIN) && !errors.Is(err, syscall.EINTR)
	})
	return err
}

// readableNow reports, without blocking, whether c has data (or EOF or
// an error) to read. Connections that are not sockets always have.
func readableNow(c net.Conn) bool {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return true
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return true
	}
	ready := true
	var b [1]byte
	_ = rc.Control(func(fd uintptr) {
		_, _, err := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		ready = !errors.Is(err, syscall.EAGAIN)
	})
	return ready
}
