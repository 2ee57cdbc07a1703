//go:build !linux

package control

import (
	"errors"
	"net"
)

// peerUID is linux-only (SO_PEERCRED): elsewhere the control API refuses
// every call rather than serve callers it cannot identify.
func peerUID(*net.UnixConn) (uint32, error) {
	return 0, errors.New("the control API checks callers with SO_PEERCRED, which only linux has")
}
