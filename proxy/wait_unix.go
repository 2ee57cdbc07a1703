//go:build unix

package proxy

import (
	"errors"
	"net"
	"syscall"

	"golang.org/x/sys/unix"
)

// canPeek reports that readableNow really looks at the socket.
const canPeek = true

// The readiness checks poll the socket rather than peek at it (recv with
// MSG_PEEK): a peek at a socket the peer reset returns ECONNRESET and
// clears it, so the Read that follows saw a clean EOF, and a reset was
// relayed, logged and counted as a close. poll leaves a pending error for
// the Read.

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
	return rc.Read(func(fd uintptr) bool { return pollNow(fd) })
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
	_ = rc.Control(func(fd uintptr) { ready = pollNow(fd) })
	return ready
}

// pollNow reports whether a read of fd would not block: data, EOF or a
// pending error. A failed poll says yes: the Read then reports it.
func pollNow(fd uintptr) bool {
	fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
	n, err := unix.Poll(fds, 0)
	if errors.Is(err, unix.EINTR) {
		return false
	}
	return err != nil || n > 0
}
