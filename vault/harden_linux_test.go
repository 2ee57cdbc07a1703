//go:build linux

package vault

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/sealproxy/sealproxy/internal/secmem"
	"github.com/sealproxy/sealproxy/testenv"
)

const memlockEnv = "SEALPROXY_TEST_MEMLOCK"

// memlockChild runs in a re-executed test binary: with RLIMIT_MEMLOCK at
// one page, Harden must fail fast with a message naming the limit and the
// systemd setting (memguard would deadlock on the first failed mlock).
func memlockChild() {
	lim := unix.Rlimit{Cur: 4096, Max: 4096}
	if err := unix.Setrlimit(unix.RLIMIT_MEMLOCK, &lim); err != nil {
		fmt.Println("setrlimit:", err)
		os.Exit(2)
	}
	err := Harden(HardenOptions{KeepDumpable: true})
	if !errors.Is(err, secmem.ErrMemlock) {
		fmt.Println("want secmem.ErrMemlock, got", err)
		os.Exit(1)
	}
	fmt.Println(err)
	os.Exit(0)
}

func TestHardenMemlockTooLow(t *testing.T) {
	bin, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	// Without CAP_IPC_LOCK, which would let it lock past the limit.
	args := append(testenv.WithoutIPCLock(t), bin, "-test.run=^$")
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Env = append(os.Environ(), memlockEnv+"=1")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("child: %v\n%s", err, out)
	}
	for _, want := range []string{"RLIMIT_MEMLOCK", "LimitMEMLOCK=", "4096 bytes"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("message %q does not mention %q", out, want)
		}
	}
}

func TestHarden(t *testing.T) {
	if err := Harden(HardenOptions{KeepDumpable: true, Keys: 4}); err != nil {
		t.Fatal(err)
	}
	var lim unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_CORE, &lim); err != nil {
		t.Fatal(err)
	}
	if lim.Cur != 0 {
		t.Errorf("RLIMIT_CORE is %d after Harden, want 0", lim.Cur)
	}
	if n := MemlockNeed(4); n <= MemlockNeed(1) {
		t.Errorf("MemlockNeed does not grow with keys: %d", n)
	}
}
