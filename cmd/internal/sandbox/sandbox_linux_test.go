//go:build linux

package sandbox

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"testing"

	"github.com/sealproxy/sealproxy/testenv"
)

// childEnv marks the re-executed test binary that confines itself: a
// Landlock domain cannot be left, so the test process never applies one.
const childEnv = "SANDBOX_TEST_CHILD"

// TestApplyConfines re-runs this test binary, which applies a policy and
// then tries what it allows and what it must refuse.
func TestApplyConfines(t *testing.T) {
	if dir := os.Getenv(childEnv); dir != "" {
		confinedChild(t, dir)
		return
	}
	testenv.NeedLandlock(t)
	dir := t.TempDir()
	for _, d := range []string{"ro", "rw", "sock", "outside"} {
		if err := os.Mkdir(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, f := range []string{"ro/a", "outside/secret", "ro-file"} {
		if err := os.WriteFile(filepath.Join(dir, f), []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	testenv.RunConfinedChild(t, []string{childEnv + "=" + dir}, "confined child: all checks passed")
}

func confinedChild(t *testing.T, dir string) {
	p := Policy{
		Read:    []string{filepath.Join(dir, "ro"), filepath.Join(dir, "ro-file"), filepath.Join(dir, "missing")},
		Write:   []string{filepath.Join(dir, "rw")},
		Sockets: []string{filepath.Join(dir, "sock")},
	}
	p.Add(System())
	res, err := Apply(p, Required)
	if err != nil {
		t.Fatal(err)
	}
	if !res.Enforced || res.ABI == 0 || res.Rules == 0 || len(res.Missing) == 0 {
		t.Fatalf("result %+v: want enforced, with rules and the missing path", res)
	}
	allowed := func(what string, err error) {
		t.Helper()
		if err != nil {
			t.Errorf("%s: %v, want allowed", what, err)
		}
	}
	denied := func(what string, err error) {
		t.Helper()
		if !errors.Is(err, fs.ErrPermission) {
			t.Errorf("%s: %v, want a permission error", what, err)
		}
	}
	_, err = os.ReadFile(filepath.Join(dir, "ro/a"))
	allowed("read in a read-only dir", err)
	_, err = os.ReadFile(filepath.Join(dir, "ro-file"))
	allowed("read a read-only file", err)
	denied("write in a read-only dir", os.WriteFile(filepath.Join(dir, "ro/b"), nil, 0o644))
	denied("truncate in a read-only dir", os.Truncate(filepath.Join(dir, "ro/a"), 0))
	allowed("write in a read-write dir", os.WriteFile(filepath.Join(dir, "rw/b"), []byte("y"), 0o644))
	_, err = os.ReadFile(filepath.Join(dir, "outside/secret"))
	denied("read outside", err)
	_, err = os.ReadFile("/etc/shadow")
	denied("read /etc/shadow", err)
	_, err = os.ReadDir(dir)
	denied("list the parent", err)
	_, err = os.ReadFile("/proc/self/stat")
	allowed("read /proc/self/stat", err)
	_, err = os.ReadDir("/proc/self/fd")
	allowed("list /proc/self/fd", err)

	ln, err := net.Listen("unix", filepath.Join(dir, "sock/s"))
	allowed("listen on a unix socket", err)
	if err == nil {
		allowed("remove the socket", ln.Close())
		if _, err := os.Stat(filepath.Join(dir, "sock/s")); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("socket file left: %v", err)
		}
	}
	_, err = net.Listen("unix", filepath.Join(dir, "rw/../outside/s"))
	denied("listen outside", err)
	if !t.Failed() {
		fmt.Println("confined child: all checks passed")
	}
}
