//go:build unix

package proxy

import (
	"context"
	"errors"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// serveAdmin serves AdminHandler with reload on a unix socket and returns
// its unix: address.
func serveAdmin(t *testing.T, reload func(context.Context) error) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "adm") // short: unix socket paths are bounded
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	path := filepath.Join(dir, "admin.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: AdminHandler(prometheus.NewRegistry(), func() bool { return true }, reload)}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return "unix:" + path
}

// RequestReload reports the daemon's outcome: nil once applied, the
// daemon's reason (escaped) when it kept the old configuration, and
// distinct errors when reload is not served or nobody listens.
func TestRequestReload(t *testing.T) {
	ctx := context.Background()
	reloaded := 0
	ok := serveAdmin(t, func(context.Context) error { reloaded++; return nil })
	if err := RequestReload(ctx, ok); err != nil || reloaded != 1 {
		t.Fatalf("good reload: %v (reloads %d)", err, reloaded)
	}

	bad := serveAdmin(t, func(context.Context) error {
		return errors.New("sealproxy.toml:3: unknown setting \x1b[31mred")
	})
	err := RequestReload(ctx, bad)
	if !errors.Is(err, ErrReloadFailed) {
		t.Fatalf("failed reload: %v, want ErrReloadFailed", err)
	}
	if !strings.Contains(err.Error(), "sealproxy.toml:3: unknown setting") || strings.Contains(err.Error(), "\x1b") {
		t.Errorf("failed reload's error %q: want the reason, without control characters", err)
	}

	off := serveAdmin(t, nil)
	if err := RequestReload(ctx, off); !errors.Is(err, ErrReloadDisabled) {
		t.Fatalf("reload not served: %v, want ErrReloadDisabled", err)
	}

	gone := filepath.Join(t.TempDir(), "none.sock")
	err = RequestReload(ctx, "unix:"+gone)
	if !errors.Is(err, syscall.ENOENT) || !strings.Contains(err.Error(), gone) || strings.Contains(err.Error(), "http://") {
		t.Fatalf("nobody listening: %v, want ENOENT naming the socket", err)
	}
}

// TestRequestReloadTCP: `sealproxy reload --admin 127.0.0.1:PORT` is
// answered. The admin listener refuses a Host that does not name it (a
// browser's DNS rebinding), so the command must send the address it
// dials, not a made-up name: with "sealproxy" as Host it got 403.
func TestRequestReloadTCP(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	reloaded := 0
	srv := &http.Server{Handler: AdminHandler(prometheus.NewRegistry(), func() bool { return true },
		func(context.Context) error { reloaded++; return nil })}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	if err := RequestReload(context.Background(), ln.Addr().String()); err != nil || reloaded != 1 {
		t.Fatalf("reload over TCP: %v (reloads %d)", err, reloaded)
	}
}
