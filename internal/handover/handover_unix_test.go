//go:build unix

package handover

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// TestCollectForgetsClosed: a listener closed since (a reload removed
// it) is not passed on, so no successor keeps its port bound; an open
// one is, as is a file registered with Pass.
func TestCollectForgetsClosed(t *testing.T) {
	h := New()
	open := func(addr string) (net.Listener, error) { return net.Listen("tcp", addr) }
	kept, err := h.Listen("127.0.0.1:0", open)
	if err != nil {
		t.Fatal(err)
	}
	defer kept.Close()
	gone, err := h.Listen("[::1]:0", open)
	if err != nil {
		gone, err = h.Listen("127.0.0.2:0", open)
		if err != nil {
			t.Skip("no second loopback address")
		}
	}
	gone.Close()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	h.Pass("systemd:web", r)
	names, fds, err := h.collect()
	for _, fd := range fds {
		syscall.Close(int(fd))
	}
	if err != nil {
		t.Fatal(err)
	}
	if len(names) != 2 || !(names[0] == "127.0.0.1:0" && names[1] == "systemd:web" || names[1] == "127.0.0.1:0" && names[0] == "systemd:web") {
		t.Fatalf("passed %q, want the open listener and the systemd socket", names)
	}
}

// TestHandedKeepsUnixSocket: after a handover, closing the old process's
// unix listener leaves the socket file, which the successor serves.
func TestHandedKeepsUnixSocket(t *testing.T) {
	h := New()
	path := filepath.Join(t.TempDir(), "s.sock")
	ln, err := h.Listen("unix:"+path, func(string) (net.Listener, error) { return net.Listen("unix", path) })
	if err != nil {
		t.Fatal(err)
	}
	h.Handed()
	ln.Close()
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("socket file removed at close after the handover: %v", err)
	}
}

// TestUpgradeOneAtATime: a second Upgrade while one waits is
// ErrInProgress.
func TestUpgradeOneAtATime(t *testing.T) {
	h := New()
	h.busy.Store(true)
	if _, err := h.Upgrade(context.Background(), Options{Timeout: time.Second}); !errors.Is(err, ErrInProgress) {
		t.Fatalf("%v, want ErrInProgress", err)
	}
}

// childEnv makes the test binary, started again by Upgrade, act as a
// successor: "ready" takes over the socket "test" and answers one
// connection on it, "fail" gives up with a reason, "hang" never answers.
const childEnv = "HANDOVER_TEST_CHILD"

func TestMain(m *testing.M) {
	if mode := os.Getenv(childEnv); mode != "" && os.Getenv(Env) != "" {
		os.Exit(child(mode))
	}
	os.Exit(m.Run())
}

func child(mode string) int {
	h, err := FromEnv()
	if err != nil {
		return 3
	}
	switch mode {
	case "fail":
		h.Fail(errors.New("bad configuration: \x1b[31mred"))
		return 2
	case "hang":
		time.Sleep(time.Minute)
		return 0
	}
	ln, err := h.Listen("test", func(string) (net.Listener, error) { return nil, errors.New("not inherited") })
	if err != nil {
		h.Fail(err)
		return 1
	}
	if err := h.Ready(10 * time.Second); err != nil {
		return 4
	}
	c, err := ln.Accept()
	if err != nil {
		return 5
	}
	c.Write([]byte("successor\n"))
	c.Close()
	return 0
}

// TestUpgradeHandsOver: the successor (this test binary again) takes
// the listening socket and serves on it once the old listener is
// closed; Main gets its pid before it is told.
func TestUpgradeHandsOver(t *testing.T) {
	t.Setenv(childEnv, "ready")
	h := New()
	ln, err := h.Listen("test", func(string) (net.Listener, error) { return net.Listen("tcp", "127.0.0.1:0") })
	if err != nil {
		t.Fatal(err)
	}
	var mainPid int
	pid, err := h.Upgrade(context.Background(), Options{Timeout: time.Minute, Main: func(p int) { mainPid = p }})
	if err != nil {
		t.Fatal(err)
	}
	if pid == os.Getpid() || mainPid != pid {
		t.Fatalf("pid %d, Main got %d", pid, mainPid)
	}
	addr := ln.Addr().String()
	ln.Close() // the old process stops accepting; the socket stays the successor's
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatalf("after the handover: %v", err)
	}
	defer c.Close()
	b := make([]byte, 64)
	n, _ := c.Read(b)
	if string(b[:n]) != "successor\n" {
		t.Fatalf("read %q from the successor", b[:n])
	}
}

// TestUpgradeFails: a successor's own reason, and one that never says
// ready (killed at Timeout), are *FailedError; this process keeps its
// socket.
func TestUpgradeFails(t *testing.T) {
	for _, tt := range []struct{ mode, want string }{
		{"fail", "bad configuration: \x1b[31mred"},
		{"hang", "not ready within 500ms: killed"},
	} {
		t.Run(tt.mode, func(t *testing.T) {
			t.Setenv(childEnv, tt.mode)
			h := New()
			ln, err := h.Listen("test", func(string) (net.Listener, error) { return net.Listen("tcp", "127.0.0.1:0") })
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			pid, err := h.Upgrade(context.Background(), Options{Timeout: 500 * time.Millisecond})
			var fe *FailedError
			if !errors.As(err, &fe) || fe.Reason != tt.want || fe.Pid != pid || !errors.Is(err, ErrFailed) {
				t.Fatalf("%v, want a FailedError with %q", err, tt.want)
			}
			go func() {
				if c, err := ln.Accept(); err == nil {
					c.Close()
				}
			}()
			c, err := net.Dial("tcp", ln.Addr().String())
			if err != nil {
				t.Fatalf("the old listener after a failed upgrade: %v", err)
			}
			c.Close()
			// Passing the socket on must leave it non-blocking (the flag
			// is shared by every duplicate): else this process's accept
			// blocks in the kernel and Close cannot end it.
			rc, _ := ln.(*net.TCPListener).SyscallConn()
			var flags uintptr
			rc.Control(func(fd uintptr) {
				flags, _, _ = syscall.Syscall(syscall.SYS_FCNTL, fd, syscall.F_GETFL, 0)
			})
			if flags&syscall.O_NONBLOCK == 0 {
				t.Fatal("the listener is in blocking mode after the upgrade")
			}
		})
	}
}
