//go:build unix

package proxy

import (
	"errors"
	"io"
	"net"
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// canPeek reports that a sock really looks at the socket.
const canPeek = true

// The readiness checks poll the socket rather than peek at it (recv with
// MSG_PEEK): a peek at a socket the peer reset returns ECONNRESET and
// clears it, so the Read that follows saw a clean EOF, and a reset was
// relayed, logged and counted as a close. poll leaves a pending error for
// the Read.

// sock is a connection's descriptor, looked up once: net.Conn's
// SyscallConn allocates on every call.
type sock struct{ rc syscall.RawConn }

// sockOf is c's descriptor; connections that are not sockets get a zero
// sock, which is always readable and reads through c.
func sockOf(c net.Conn) sock {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return sock{}
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return sock{}
	}
	return sock{rc}
}

// wait blocks until the socket has data (or EOF or an error) to read,
// without reading it, so that no copy buffer is held while a connection
// idles. It honours the connection's read deadline.
func (s sock) wait() error {
	if s.rc == nil {
		return nil
	}
	return s.rc.Read(func(fd uintptr) bool { return pollNow(fd) })
}

// readable reports, without blocking, whether the socket has data (or
// EOF or an error) to read.
func (s sock) readable() bool {
	if s.rc == nil {
		return true
	}
	ready := true
	_ = s.rc.Control(func(fd uintptr) { ready = pollNow(fd) })
	return ready
}

// read is one read(2) of what the socket holds now: errWouldBlock when it
// holds nothing, io.EOF at its end. c is read the usual way when the sock
// is zero.
func (s sock) read(c net.Conn, p []byte) (n int, err error) {
	if s.rc == nil {
		return c.Read(p)
	}
	if cerr := s.rc.Control(func(fd uintptr) {
		for {
			n, err = unix.Read(int(fd), p)
			if err != unix.EINTR {
				return
			}
		}
	}); cerr != nil {
		return 0, cerr // closed: net.ErrClosed, as Read says it
	}
	switch {
	case err == unix.EAGAIN:
		return 0, errWouldBlock
	case err != nil:
		return 0, &net.OpError{Op: "read", Net: c.LocalAddr().Network(), Source: c.LocalAddr(), Addr: c.RemoteAddr(), Err: os.NewSyscallError("read", err)}
	case n == 0 && len(p) > 0:
		return 0, io.EOF
	}
	return n, nil
}

// pollNow reports whether a read of fd would not block: data, EOF or a
// pending error. A failed poll says yes: the Read then reports it.
func pollNow(fd uintptr) bool {
	fds := [1]unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
	n, err := unix.Poll(fds[:], 0)
	if errors.Is(err, unix.EINTR) {
		return false
	}
	return err != nil || n > 0
}
