package main

import (
	"net"
	"sync"
	"sync/atomic"
)

// DefaultMaxConnections bounds serve's open connections: twice the
// gate's bound on held recoveries (gate.DefaultMaxHeld), so holds alone
// cannot take every slot from operators and plain Tang clients.
const DefaultMaxConnections = 8192

// limitListener refuses connections beyond max at once, with a reset,
// instead of leaving them in the kernel's backlog: a flood costs the
// server an accept and a close each, never a goroutine.
type limitListener struct {
	net.Listener
	max     int64
	open    atomic.Int64
	refused atomic.Int64
}

func (l *limitListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if l.open.Add(1) > l.max {
			l.open.Add(-1)
			l.refused.Add(1)
			if tc, ok := c.(*net.TCPConn); ok {
				_ = tc.SetLinger(0)
			}
			_ = c.Close()
			continue
		}
		return &limitedConn{Conn: c, l: l}, nil
	}
}

type limitedConn struct {
	net.Conn
	l    *limitListener
	once sync.Once
}

func (c *limitedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() { c.l.open.Add(-1) })
	return err
}
