//go:build !unix

package pool

import (
	"context"
	"errors"
	"net"
)

// ErrUnsupported: the pool passes sockets with SCM_RIGHTS, which this
// system lacks (docs/pool.md says how Windows would do it).
var ErrUnsupported = errors.New("pool: not available on this system (no SCM_RIGHTS)")

// Server is unavailable here; it closes conn.
func Server(ctx context.Context, poolPath string, conn net.Conn, service string) (net.Conn, *Answer, error) {
	conn.Close()
	return nil, nil, ErrUnsupported
}

// Client is unavailable here; it closes conn.
func Client(ctx context.Context, poolPath string, conn net.Conn, service, serverName string) (net.Conn, *Answer, error) {
	conn.Close()
	return nil, nil, ErrUnsupported
}

// Do is unavailable here; it closes conn.
func Do(ctx context.Context, poolPath string, conn net.Conn, req *Request) (net.Conn, *Answer, error) {
	conn.Close()
	return nil, nil, ErrUnsupported
}
