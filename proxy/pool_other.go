//go:build !linux

package proxy

import (
	"context"
	"errors"
	"net"
)

// ErrPoolUnsupported: the pool passes sockets with SCM_RIGHTS and checks
// SO_PEERCRED, which this build does not implement (docs/pool.md says
// how Windows would do it: a named pipe and WSADuplicateSocket).
var ErrPoolUnsupported = errors.New("the TLS pool is available on Linux only (it passes sockets with SCM_RIGHTS and checks SO_PEERCRED)")

// Pool is unavailable here.
type Pool struct{}

// NewPool refuses: see ErrPoolUnsupported.
func NewPool(cfg *PoolConfig, opts *Options, listen func(string) (net.Listener, error)) (*Pool, error) {
	return nil, ErrPoolUnsupported
}

// Addr is nil.
func (p *Pool) Addr() net.Addr { return nil }

// Update does nothing.
func (p *Pool) Update(cfg *PoolConfig) {}

// Serve refuses.
func (p *Pool) Serve(ctx context.Context) error { return ErrPoolUnsupported }

func (p *Pool) setGlobal(*Limiter) {}

func (p *Pool) closeListener() {}
