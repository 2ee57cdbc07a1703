//go:build !unix

package handover

import (
	"context"
	"fmt"
	"net"
	"os"
	"time"
)

// Handover on Windows passes nothing on: a process cannot hand its
// listening sockets to a successor the way fork and exec do, so upgrades
// are refused and Listen just opens.
type Handover struct{}

// New returns the no-op handover.
func New() *Handover { return &Handover{} }

// FromEnv returns the no-op handover.
func FromEnv() (*Handover, error) { return &Handover{}, nil }

// Successor is always false.
func (h *Handover) Successor() bool { return false }

// Listen opens the socket.
func (h *Handover) Listen(name string, open func(string) (net.Listener, error)) (net.Listener, error) {
	return open(name)
}

// Pass does nothing.
func (h *Handover) Pass(string, *os.File) {}

// Inherited is empty.
func (h *Handover) Inherited(string) map[string]*os.File { return nil }

// Ready does nothing.
func (h *Handover) Ready(time.Duration) error { return nil }

// PredecessorGone is nil: there is no predecessor.
func (h *Handover) PredecessorGone() <-chan struct{} { return nil }

// Fail does nothing.
func (h *Handover) Fail(error) {}

// Handed does nothing.
func (h *Handover) Handed() {}

// Options of one upgrade.
type Options struct {
	Timeout  time.Duration
	Started  func(pid int)
	Main     func(pid int)
	Progress func(line string)
}

// Status does nothing.
func (h *Handover) Status(string) {}

// Unsupported says why upgrades are refused here, with what to do.
func Unsupported() error {
	return fmt.Errorf("%w: Windows cannot pass listening sockets to a new process; restart the service instead ('sealproxy service stop', then 'sealproxy service start')", ErrUnsupported)
}

// Upgrade is refused: ErrUnsupported.
func (h *Handover) Upgrade(context.Context, Options) (int, error) {
	return 0, Unsupported()
}
