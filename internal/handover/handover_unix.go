//go:build unix

package handover

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

const (
	statusFD = 3 // the status socket, in a successor
	firstFD  = 4 // the first inherited socket
	// msgMain is the predecessor's answer to ready: it told the service
	// manager that the successor is the main process now.
	msgMain = "main\n"
)

// Handover is one process's side of upgrades: the sockets it listens on
// (to pass on), and, in a successor, the sockets it inherited and the
// status socket to its predecessor.
type Handover struct {
	mu        sync.Mutex
	inherited map[string]*os.File     // successor: inherited, not taken yet
	open      map[string]net.Listener // what Listen returned, by name
	pass      map[string]*os.File     // passed on as they are (the service manager's sockets)
	status    *os.File                // successor: to the predecessor, until Ready or Fail
	gone      chan struct{}           // successor: closed when the predecessor has exited
	handedTo  []*os.File              // the status sockets of successors: open until this process exits
	busy      atomic.Bool
}

// Unsupported is nil: upgrades work on Unix.
func Unsupported() error { return nil }

// New returns the handover of a process that inherited nothing.
func New() *Handover {
	return &Handover{inherited: map[string]*os.File{}, open: map[string]net.Listener{}, pass: map[string]*os.File{}}
}

// FromEnv returns the process's handover: a successor's (Env set: the
// inherited sockets and the status socket) or a first process's. It
// clears Env, so that nothing this process starts mistakes itself for a
// successor.
func FromEnv() (*Handover, error) {
	h := New()
	v, ok := os.LookupEnv(Env)
	if !ok {
		return h, nil
	}
	os.Unsetenv(Env)
	names, err := parseNames(v)
	if err != nil {
		return h, err
	}
	// Inherited descriptors are not close-on-exec: mark them, so that
	// only what the next upgrade passes on reaches its successor.
	syscall.CloseOnExec(statusFD)
	_ = syscall.SetNonblock(statusFD, true) // pollable: Ready's deadline works
	h.status = os.NewFile(statusFD, "handover status")
	h.gone = make(chan struct{})
	for i, name := range names {
		syscall.CloseOnExec(firstFD + i)
		h.inherited[name] = os.NewFile(uintptr(firstFD+i), name)
	}
	return h, nil
}

// Successor reports whether this process was started by an upgrade and
// has not said yet whether it is ready.
func (h *Handover) Successor() bool {
	if h == nil {
		return false
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.status != nil
}

// Listen returns the socket inherited under name, or opens one; either
// way the socket is passed on by the next upgrade while it is open.
func (h *Handover) Listen(name string, open func(string) (net.Listener, error)) (net.Listener, error) {
	h.mu.Lock()
	f := h.inherited[name]
	delete(h.inherited, name)
	h.mu.Unlock()
	var (
		ln  net.Listener
		err error
	)
	if f != nil {
		ln, err = net.FileListener(f)
		f.Close()
		if err != nil {
			return nil, fmt.Errorf("listen %s: the socket the previous process passed: %w", name, err)
		}
		if ul, ok := ln.(*net.UnixListener); ok {
			ul.SetUnlinkOnClose(true) // ours now: removed when this process stops for good
		}
	} else if ln, err = open(name); err != nil {
		return nil, err
	}
	h.mu.Lock()
	h.open[name] = ln
	h.mu.Unlock()
	return ln, nil
}

// Pass registers a socket to pass on as it is under name (the caller
// keeps it open); Inherited returns them in a successor.
func (h *Handover) Pass(name string, f *os.File) {
	h.mu.Lock()
	h.pass[name] = f
	h.mu.Unlock()
}

// Inherited takes the inherited sockets whose names start with prefix,
// by name without it.
func (h *Handover) Inherited(prefix string) map[string]*os.File {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := map[string]*os.File{}
	for name, f := range h.inherited {
		if rest, ok := strings.CutPrefix(name, prefix); ok {
			out[rest] = f
			delete(h.inherited, name)
		}
	}
	return out
}

// Status sends a progress line to the predecessor while this successor
// starts; elsewhere it does nothing. The line must be printable (the
// caller escapes it): a newline is replaced.
func (h *Handover) Status(line string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.status == nil {
		return
	}
	line = strings.ReplaceAll(line, "\n", " ")
	if len(line) > maxStatus-len(msgStatus)-1 {
		line = line[:maxStatus-len(msgStatus)-1]
	}
	_, _ = io.WriteString(h.status, msgStatus+line+"\n")
}

// Ready tells the predecessor that this successor serves, and waits up
// to wait for its answer that it made this process the service
// manager's main process (so that this process's notifications count).
// The inherited sockets not taken are closed.
func (h *Handover) Ready(wait time.Duration) error {
	h.mu.Lock()
	status := h.status
	h.status = nil
	for name, f := range h.inherited {
		f.Close()
		delete(h.inherited, name)
	}
	h.mu.Unlock()
	if status == nil {
		return nil
	}
	// The predecessor keeps its end open until it exits: the end of the
	// stream says it is gone.
	defer func() {
		go func() {
			_ = status.SetReadDeadline(time.Time{})
			_, _ = io.Copy(io.Discard, status)
			status.Close()
			close(h.gone)
		}()
	}()
	if _, err := io.WriteString(status, msgReady); err != nil {
		return fmt.Errorf("telling the previous process this one is ready: %w", err)
	}
	_ = status.SetReadDeadline(time.Now().Add(wait))
	buf := make([]byte, len(msgMain))
	if _, err := io.ReadFull(status, buf); err != nil || string(buf) != msgMain {
		return fmt.Errorf("the previous process did not answer this one's ready (%v)", err)
	}
	return nil
}

// PredecessorGone is closed once the process this successor took over
// from has exited (after Ready); nil in a first process. The successor
// is then the service manager's own child (PID 1 adopts orphans), which
// it could not be while its predecessor lived.
func (h *Handover) PredecessorGone() <-chan struct{} {
	if h == nil {
		return nil
	}
	return h.gone
}

// Fail tells the predecessor why this successor gives up, if it is one
// that has not said ready.
func (h *Handover) Fail(err error) {
	h.mu.Lock()
	status := h.status
	h.status = nil
	h.mu.Unlock()
	if status == nil || err == nil {
		return
	}
	msg := msgError + err.Error()
	if len(msg) > maxStatus {
		msg = msg[:maxStatus]
	}
	_, _ = io.WriteString(status, msg)
	status.Close()
}

// Handed is called once a successor serves: the unix sockets it took
// over must stay in place when this process closes them.
func (h *Handover) Handed() {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, ln := range h.open {
		if ul, ok := ln.(*net.UnixListener); ok {
			ul.SetUnlinkOnClose(false)
		}
	}
}

// Options of one upgrade.
type Options struct {
	// Timeout bounds the wait for the successor's ready; then it is
	// killed.
	Timeout time.Duration
	// Started, if set, is called with the successor's pid once started.
	Started func(pid int)
	// Main, if set, is called once the successor is ready, before it is
	// told so: the daemon tells the service manager the new main pid.
	Main func(pid int)
	// Progress, if set, gets the successor's status lines while it
	// starts (which gate code it waits for): it may not speak to the
	// service manager itself before it is the main process.
	Progress func(line string)
}

// Upgrade starts the executable at this process's path now (a binary
// replaced there is the new one) with this process's arguments,
// environment and open sockets, and waits until it says it is ready; it
// returns its pid. A successor that fails, exits or times out is a
// *FailedError (ErrFailed), and this process keeps its sockets; a
// second Upgrade while one waits is ErrInProgress.
func (h *Handover) Upgrade(ctx context.Context, o Options) (int, error) {
	if !h.busy.CompareAndSwap(false, true) {
		return 0, ErrInProgress
	}
	defer h.busy.Store(false)
	exe, err := os.Executable()
	if err != nil {
		return 0, fmt.Errorf("finding this program's path: %w", err)
	}
	names, files, err := h.collect()
	defer func() {
		for _, fd := range files {
			syscall.Close(int(fd))
		}
	}()
	if err != nil {
		return 0, err
	}
	enc, err := json.Marshal(names)
	if err != nil {
		return 0, err
	}
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return 0, fmt.Errorf("status socket: %w", err)
	}
	mine, theirs := os.NewFile(uintptr(fds[0]), "handover status"), fds[1]
	handed := false
	defer func() {
		if handed {
			// Open until this process exits: its end tells the
			// successor that this one is gone.
			h.mu.Lock()
			h.handedTo = append(h.handedTo, mine)
			h.mu.Unlock()
			return
		}
		mine.Close()
	}()
	env := []string{}
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, Env+"=") {
			env = append(env, kv)
		}
	}
	// syscall.ForkExec with the descriptors as numbers: os/exec and
	// os.StartProcess take *os.File and call Fd(), which puts a socket in
	// blocking mode, and that flag is shared by every duplicate: this
	// process's own listeners would then block in accept(2) and could
	// not be closed.
	pid, err := syscall.ForkExec(exe, os.Args, &syscall.ProcAttr{
		Env:   append(env, Env+"="+string(enc)),
		Files: append([]uintptr{0, 1, 2, uintptr(theirs)}, files...),
	})
	syscall.Close(theirs)
	if err != nil {
		return 0, fmt.Errorf("starting %s: %w", exe, err)
	}
	proc, err := os.FindProcess(pid)
	if err != nil {
		return 0, err
	}
	if o.Started != nil {
		o.Started(pid)
	}
	exited := make(chan error, 1)
	go func() { // reaps it whenever it ends
		st, err := proc.Wait()
		if err == nil && !st.Success() {
			err = errors.New(st.String())
		}
		exited <- err
	}()
	type status struct {
		ready  bool
		reason string
	}
	said := make(chan status, 1)
	go func() {
		ready, reason := readStatus(mine, o.Progress)
		said <- status{ready, reason}
	}()

	timeout := time.NewTimer(o.Timeout)
	defer timeout.Stop()
	fail := func(reason string) (int, error) {
		return pid, &FailedError{Pid: pid, Reason: reason}
	}
	select {
	case st := <-said:
		if ready, reason := st.ready, st.reason; ready {
			if o.Main != nil {
				o.Main(pid)
			}
			_, _ = io.WriteString(mine, msgMain)
			handed = true
			return pid, nil
		} else if reason != "" {
			<-exited
			return fail(reason)
		}
		return fail(exitReason(<-exited))
	case err := <-exited:
		// Its reason was written before it exited, but the exit may be
		// seen first: read what it said (its end of the socket is
		// closed now, so this does not wait long).
		select {
		case st := <-said:
			if !st.ready && st.reason != "" {
				return fail(st.reason)
			}
		case <-time.After(time.Second):
		}
		return fail(exitReason(err))
	case <-timeout.C:
		_ = proc.Kill()
		<-exited
		return fail(fmt.Sprintf("not ready within %s: killed", o.Timeout))
	case <-ctx.Done():
		_ = proc.Kill()
		<-exited
		return fail("upgrade abandoned: " + ctx.Err().Error())
	}
}

func exitReason(err error) string {
	if err == nil {
		return "exited (status 0) before it was ready"
	}
	return "exited before it was ready: " + err.Error()
}

// collect duplicates the sockets to pass on (close-on-exec descriptor
// numbers), by name; listeners closed since (a reload removed them) are
// forgotten.
func (h *Handover) collect() ([]string, []uintptr, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	var (
		names []string
		fds   []uintptr
	)
	for name, ln := range h.open {
		sc, ok := ln.(syscall.Conn)
		if !ok {
			return names, fds, fmt.Errorf("listener %s: %T cannot be passed on", name, ln)
		}
		fd, err := dup(sc)
		if errors.Is(err, net.ErrClosed) {
			delete(h.open, name)
			continue
		}
		if err != nil {
			return names, fds, fmt.Errorf("listener %s: %w", name, err)
		}
		names, fds = append(names, name), append(fds, fd)
	}
	for name, f := range h.pass {
		if _, ok := h.open[name]; ok {
			continue
		}
		fd, err := dup(f)
		if err != nil {
			return names, fds, fmt.Errorf("socket %s: %w", name, err)
		}
		names, fds = append(names, name), append(fds, fd)
	}
	return names, fds, nil
}

// dup duplicates c's descriptor without touching its flags.
func dup(c syscall.Conn) (uintptr, error) {
	sc, err := c.SyscallConn()
	if err != nil {
		return 0, err
	}
	var (
		nfd  int
		derr error
	)
	if err := sc.Control(func(fd uintptr) {
		nfd, derr = syscall.Dup(int(fd))
		if derr == nil {
			syscall.CloseOnExec(nfd)
		}
	}); err != nil {
		return 0, err
	}
	if derr != nil {
		return 0, derr
	}
	return uintptr(nfd), nil
}
