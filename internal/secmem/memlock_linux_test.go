package secmem

import (
	"errors"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/awnumar/memguard"
	"golang.org/x/sys/unix"
)

// TestCheckMemlock lowers this process's soft RLIMIT_MEMLOCK below the
// need (and restores it): the error must be ErrMemlock and name the
// limit, the need, who needs it and both ways to raise it. A process with
// CAP_IPC_LOCK may lock past the limit (TestCheckMemlockCapability), so
// as root the test runs again in a child without it.
func TestCheckMemlock(t *testing.T) {
	if hasIPCLock(t) {
		withoutIPCLock(t, "TestCheckMemlock")
		return
	}
	lowerMemlock(t, 16384)
	if err := CheckMemlock(16384, "the test"); err != nil {
		t.Fatalf("need equal to the limit: %v", err)
	}
	err := CheckMemlock(100000, "the test")
	if !errors.Is(err, ErrMemlock) {
		t.Fatalf("CheckMemlock = %v, want ErrMemlock", err)
	}
	for _, want := range []string{
		"locked memory limit too low",
		"RLIMIT_MEMLOCK is 16384 bytes",
		"the test needs about 100000",
		"LimitMEMLOCK=100352 or more", // rounded up to KiB
		"ulimit -l 98",
		"container: add the IPC_LOCK capability",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("%q does not say %q", err, want)
		}
	}
}

// TestCheckMemlockCapability: with CAP_IPC_LOCK (root; a container given
// the capability, since Kubernetes cannot set the limit) a limit below
// the need is no reason to refuse, and memguard does lock past it.
func TestCheckMemlockCapability(t *testing.T) {
	if !hasIPCLock(t) {
		t.Skip("needs CAP_IPC_LOCK (run as root)")
	}
	lowerMemlock(t, 16384)
	const need = 1 << 20
	if err := CheckMemlock(need, "the test"); err != nil {
		t.Fatalf("CheckMemlock with CAP_IPC_LOCK = %v, want nil", err)
	}
	b := memguard.NewBuffer(need)
	defer b.Destroy()
	if b.Size() != need {
		t.Fatalf("locked buffer of %d bytes, want %d", b.Size(), need)
	}
}

// lowerMemlock sets the soft RLIMIT_MEMLOCK to cur for the test.
func lowerMemlock(t *testing.T, cur uint64) {
	var old unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_MEMLOCK, &old); err != nil {
		t.Fatal(err)
	}
	if err := unix.Setrlimit(unix.RLIMIT_MEMLOCK, &unix.Rlimit{Cur: cur, Max: old.Max}); err != nil {
		t.Skipf("cannot lower RLIMIT_MEMLOCK: %v", err)
	}
	t.Cleanup(func() {
		if err := unix.Setrlimit(unix.RLIMIT_MEMLOCK, &old); err != nil {
			t.Fatal(err)
		}
	})
}

// hasIPCLock reports whether this thread's effective capabilities
// include CAP_IPC_LOCK.
func hasIPCLock(t *testing.T) bool {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		t.Fatal(err)
	}
	return data[0].Effective&(1<<unix.CAP_IPC_LOCK) != 0
}

// withoutIPCLock runs the test named run in a child of this test binary
// whose bounding set lacks CAP_IPC_LOCK (setpriv, util-linux), and fails
// if the child fails. The child must not have the capability either.
func withoutIPCLock(t *testing.T, run string) {
	if os.Getenv("SECMEM_TEST_NO_IPC_LOCK") == "1" {
		t.Fatal("the child still has CAP_IPC_LOCK")
	}
	setpriv, err := exec.LookPath("setpriv")
	if err != nil {
		if os.Getenv("SEALPROXY_REQUIRE_INTEROP") == "1" {
			t.Fatal("setpriv is not installed (apt-get install util-linux)")
		}
		t.Skip("skipping: running as root with CAP_IPC_LOCK and no setpriv to drop it (apt-get install util-linux)")
	}
	cmd := exec.Command(setpriv, "--bounding-set=-ipc_lock", "--", os.Args[0], "-test.run=^"+run+"$", "-test.count=1", "-test.v")
	cmd.Env = append(os.Environ(), "SECMEM_TEST_NO_IPC_LOCK=1")
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "--- PASS: "+run) {
		t.Fatalf("%s without CAP_IPC_LOCK: %v\n%s", run, err, out)
	}
}
