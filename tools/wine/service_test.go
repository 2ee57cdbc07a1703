//go:build linux

package wine

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/sealproxy/sealproxy/testenv"
)

// TestServiceUnderWine installs sealproxy.exe as a Windows service in
// Wine's service manager and drives it from the Linux side: sc start, a
// TLS round trip to the service, a start that fails with its exit code,
// sc stop with exit code 0, uninstall. tools/wine/run.sh (make
// test-windows) builds the .exe and sets up the Wine prefix.
func TestServiceUnderWine(t *testing.T) {
	testenv.SkipIfShort(t, "drives sealproxy.exe under Wine's service manager")
	exe := os.Getenv("SEALPROXY_WINE_SEALPROXY")
	if exe == "" {
		t.Skip("runs from make test-windows (tools/wine/run.sh), which builds sealproxy.exe and a Wine prefix")
	}
	if os.Getenv("WINEPREFIX") == "" {
		t.Fatal("SEALPROXY_WINE_SEALPROXY is set but WINEPREFIX is not: run tools/wine/run.sh")
	}
	dir := t.TempDir()
	ca := testenv.NewCA(t, "wine test CA")
	ca.Server(t, "web.test").WriteFiles(t, dir, "web")
	backend := testenv.StartEcho(t, nil).Addr

	ok := filepath.Join(dir, "ok.toml")
	okAddr := testenv.FreeAddr(t)
	writeConfig(t, ok, okAddr, backend)
	// The failing instance's port is held here, so it installs (the
	// configuration is valid) but cannot start.
	held, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	bad := filepath.Join(dir, "bad.toml")
	writeConfig(t, bad, held.Addr().String(), backend)

	const okName, badName = "sealproxy-wine-ok", "sealproxy-wine-bad"
	out := wine(t, 0, exe, "service", "install", "--name", okName, "--config", winPath(ok))
	want := fmt.Sprintf("installed service %s: ", okName)
	if !strings.Contains(out, want) || !strings.Contains(out, "service run --name "+okName+" --config ") {
		t.Fatalf("install said %q, want %q with the explicit service mode", out, want)
	}
	t.Cleanup(func() { wineRun(context.Background(), exe, "service", "uninstall", "--name", okName) })
	wine(t, 2, exe, "service", "install", "--name", okName, "--config", winPath(filepath.Join(dir, "missing.toml")))

	// sc start, then TLS from Linux: the handshake proves the service
	// holds the key, the echo that it reaches the backend.
	wine(t, 0, "sc", "start", okName)
	conn := dialRetry(t, okAddr, ca)
	if _, err := io.WriteString(conn, "through the Windows service\n"); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil || line != "through the Windows service\n" {
		t.Fatalf("round trip: %q, %v", line, err)
	}
	conn.Close()
	if st := query(t, okName); st["STATE"] != "4" {
		t.Fatalf("service %s: state %s, want 4 (running)", okName, st["STATE"])
	}

	// A start that fails: `service start` reports the service's exit code
	// (1: a runtime failure, here the port taken), and so does sc query.
	wine(t, 0, exe, "service", "install", "--name", badName, "--config", winPath(bad))
	t.Cleanup(func() { wineRun(context.Background(), exe, "service", "uninstall", "--name", badName) })
	out = wine(t, 1, exe, "service", "start", "--name", badName)
	if !strings.Contains(out, "service "+badName+" stopped while starting (exit code 1)") ||
		!strings.Contains(out, "sealproxy: hint: the Event Log (source "+badName+") says why") {
		t.Fatalf("failed start reported as %q", out)
	}
	if st := query(t, badName); st["STATE"] != "1" || st["SERVICE_EXIT_CODE"] != "1" {
		t.Fatalf("failed service %s: %v, want stopped with service exit code 1", badName, st)
	}

	// sc stop: the service drains and stops with exit code 0.
	wine(t, 0, "sc", "stop", okName)
	var st map[string]string
	for deadline := time.Now().Add(30 * time.Second); ; {
		if st = query(t, okName); st["STATE"] == "1" || time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if st["STATE"] != "1" || st["WIN32_EXIT_CODE"] != "0" || st["SERVICE_EXIT_CODE"] != "0" {
		t.Fatalf("after sc stop: %v, want stopped (1) with exit codes 0", st)
	}
	if c, err := net.DialTimeout("tcp", okAddr, time.Second); err == nil {
		c.Close()
		t.Fatalf("%s still accepts after sc stop", okAddr)
	}

	for _, name := range []string{okName, badName} {
		out := wine(t, 0, exe, "service", "uninstall", "--name", name)
		if !strings.Contains(out, "uninstalled service "+name) {
			t.Fatalf("uninstall said %q", out)
		}
		if out, code := wineRun(context.Background(), "sc", "query", name); code == 0 {
			t.Fatalf("service %s still registered after uninstall:\n%s", name, out)
		}
	}
}

func writeConfig(t *testing.T, path, listen, backend string) {
	t.Helper()
	cfg := fmt.Sprintf(`# file: keys are for development; the test needs no Tang.
allow_plaintext_keys = true
shutdown_timeout = "2s"

[[key]]
name = "web"
cert = "web.crt"
source = "file:web.key"

[[listener]]
name = "web"
listen = %q
mode = "offload"
keys = ["web"]
backend = %q
`, listen, backend)
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
}

// winPath is path as a Windows program under Wine sees it (drive Z: is /).
func winPath(path string) string { return `Z:` + strings.ReplaceAll(path, "/", `\`) }

// wine runs a Windows program and fails the test unless it exits with
// want; it returns the program's output (stdout and stderr).
func wine(t *testing.T, want int, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	out, code := wineRun(ctx, args...)
	if code != want {
		t.Fatalf("wine %s: exit code %d, want %d\n%s", strings.Join(args, " "), code, want, out)
	}
	return out
}

func wineRun(ctx context.Context, args ...string) (string, int) {
	cmd := exec.CommandContext(ctx, "wine", args...)
	cmd.Env = append(os.Environ(), "WINEDEBUG=-all")
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return string(out), 0
	case errors.As(err, &ee) && ee.Exited():
		return string(out), ee.ExitCode()
	}
	return string(out) + err.Error(), -1
}

var queryField = regexp.MustCompile(`(?m)^\s*([A-Z0-9_]+)\s*:\s*(\S+)`)

// query returns the fields of `sc query NAME` (STATE, WIN32_EXIT_CODE,
// SERVICE_EXIT_CODE, ...), each the number that starts its value.
func query(t *testing.T, name string) map[string]string {
	t.Helper()
	out := wine(t, 0, "sc", "query", name)
	fields := map[string]string{}
	for _, m := range queryField.FindAllStringSubmatch(out, -1) {
		fields[m[1]] = m[2]
	}
	if fields["STATE"] == "" {
		t.Fatalf("sc query %s: no STATE in\n%s", name, out)
	}
	return fields
}

func dialRetry(t *testing.T, addr string, ca *testenv.CA) *tls.Conn {
	t.Helper()
	cfg := &tls.Config{RootCAs: ca.Pool(), ServerName: "web.test"}
	deadline := time.Now().Add(60 * time.Second)
	for {
		d := &net.Dialer{Timeout: 2 * time.Second}
		c, err := tls.DialWithDialer(d, "tcp", addr, cfg)
		if err == nil {
			_ = c.SetDeadline(time.Now().Add(30 * time.Second))
			return c
		}
		if time.Now().After(deadline) {
			t.Fatalf("no TLS from the service at %s after 60s: %v", addr, err)
		}
		time.Sleep(250 * time.Millisecond)
	}
}
