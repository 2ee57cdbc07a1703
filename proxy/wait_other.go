//go:build !unix

package proxy

import "net"

// canPeek reports that a sock cannot look at the socket here.
const canPeek = false

// sock does nothing here (Windows): the copy then parks its buffer in
// Read like io.Copy does, under the idle deadline it sets when canPeek is
// false.
type sock struct{}

func sockOf(net.Conn) sock { return sock{} }

func (sock) wait() error { return nil }

func (sock) readable() bool { return true }

func (sock) read(c net.Conn, p []byte) (int, error) { return c.Read(p) }
