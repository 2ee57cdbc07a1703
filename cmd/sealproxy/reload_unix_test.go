//go:build unix

package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sealproxy/sealproxy/testenv"
)

// TestReloadCommand: `sealproxy reload --admin unix:PATH` (the units'
// ExecReload) exits 0 once the running daemon applied the new file, and
// non-zero with the daemon's reason when the reload failed, while the
// daemon keeps serving the previous configuration.
func TestReloadCommand(t *testing.T) {
	f := newFixture(t)
	tangSrv := testenv.EmbeddedTang(t)
	f.sealed("web", tangSrv)
	f.sealed("api", tangSrv)
	sockDir, err := os.MkdirTemp("", "adm") // short: unix socket paths are bounded
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(sockDir) })
	sock := filepath.Join(sockDir, "admin.sock")
	admin := "[admin]\nlisten = \"unix:" + sock + "\"\nreload = true\n"
	path := f.write(key("web") + key("api") + f.listener("web", "127.0.0.1:0") + admin)
	n := listenNotify(t)
	r := startDaemon(t, &daemon{}, path)
	n.expect(t, "READY=1")

	f.write(key("web") + key("api") + f.listener("web", "127.0.0.1:0") + f.listener("api", "127.0.0.1:0") + admin)
	stdout, stderr, code := runCLI(t, "reload", "--admin", "unix:"+sock)
	if code != 0 || stdout != "reloaded\n" {
		t.Fatalf("good reload: exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
	f.roundTrip(r.addr("api"), "api", "reloaded by sealproxy reload")

	f.write(key("web") + f.listener("web", "127.0.0.1:0") + "bogus = 1\n" + admin)
	_, stderr, code = runCLI(t, "reload", "--admin", "unix:"+sock)
	if code != 1 || !strings.Contains(stderr, "sealproxy: error: reload failed, the previous configuration stays: ") ||
		!strings.Contains(stderr, "bogus: unknown setting") || !strings.Contains(stderr, "sealproxy: hint: fix the configuration") {
		t.Fatalf("broken reload: exit %d, stderr %q; want exit 1 with the reason and a hint", code, stderr)
	}
	f.roundTrip(r.addr("api"), "api", "still serving the previous configuration")

	// Nobody at the address: the hint asks whether sealproxy runs there.
	_, stderr, code = runCLI(t, "reload", "--admin", "unix:"+filepath.Join(sockDir, "none.sock"))
	if code != 1 || !strings.Contains(stderr, "none.sock") || !strings.Contains(stderr, "hint: is sealproxy running") {
		t.Fatalf("no daemon: exit %d, stderr %q", code, stderr)
	}
	_, stderr, code = runCLI(t, "reload")
	if code != 2 || !strings.Contains(stderr, "--admin unix:/run/sealproxy/admin.sock") {
		t.Fatalf("no --admin: exit %d, stderr %q", code, stderr)
	}
}
