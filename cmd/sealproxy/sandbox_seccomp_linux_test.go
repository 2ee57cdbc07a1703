//go:build linux

package main

import (
	"errors"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/sealproxy/sealproxy/testenv"
)

// seccompChildEnv makes a re-executed test binary block
// landlock_create_ruleset with EPERM, as systemd 252's
// SystemCallFilter=@system-service does, and exec the sealproxy binary
// it names.
const seccompChildEnv = "SEALPROXY_SECCOMP_EXEC"

// blockLandlock installs, on the calling thread, a seccomp filter that
// fails landlock_create_ruleset with EPERM.
func blockLandlock() error {
	filter := []unix.SockFilter{
		{Code: unix.BPF_LD | unix.BPF_W | unix.BPF_ABS, K: 0}, // seccomp_data.nr
		{Code: unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K, Jt: 0, Jf: 1, K: unix.SYS_LANDLOCK_CREATE_RULESET},
		{Code: unix.BPF_RET | unix.BPF_K, K: unix.SECCOMP_RET_ERRNO | uint32(unix.EPERM)},
		{Code: unix.BPF_RET | unix.BPF_K, K: unix.SECCOMP_RET_ALLOW},
	}
	prog := unix.SockFprog{Len: uint16(len(filter)), Filter: &filter[0]}
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		return err
	}
	return unix.Prctl(unix.PR_SET_SECCOMP, unix.SECCOMP_MODE_FILTER, uintptr(unsafe.Pointer(&prog)), 0, 0)
}

// TestSandboxBlockedBySeccomp runs the built binary with the landlock
// system calls blocked: landlock = "required" refuses to serve (exit 1)
// and says what blocks it and the fix; "best-effort" serves and warns why.
func TestSandboxBlockedBySeccomp(t *testing.T) {
	if args := os.Getenv(seccompChildEnv); args != "" {
		runtime.LockOSThread() // the filter is this thread's; exec from it
		if err := blockLandlock(); err != nil {
			t.Fatalf("installing the seccomp filter: %v", err)
		}
		argv := strings.Split(args, "\n")
		t.Fatal(syscall.Exec(argv[0], argv, os.Environ()))
	}
	// The filter answers before the kernel does: this runs with or
	// without Landlock.
	bin := testenv.BuildCommand(t, "sealproxy")
	f := newFixture(t)
	f.sealed("web", testenv.EmbeddedTang(t))
	addr := testenv.FreeAddr(t)
	run := func(mode string) *exec.Cmd {
		path := f.write("[sandbox]\nlandlock = \"" + mode + "\"\n\n" + key("web") + f.listener("web", addr))
		cmd := exec.Command(os.Args[0], "-test.run=^TestSandboxBlockedBySeccomp$")
		cmd.Env = append(os.Environ(), seccompChildEnv+"="+strings.Join([]string{bin, "run", "--config", path}, "\n"))
		return cmd
	}

	out, err := run("required").CombinedOutput()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 1 {
		t.Fatalf("landlock = required, landlock blocked: %v, want exit 1\n%s", err, out)
	}
	for _, want := range []string{
		`sealproxy: error: [sandbox] landlock = "required": landlock is not available: the landlock system calls are blocked by a seccomp filter`,
		"SystemCallFilter=landlock_create_ruleset landlock_add_rule landlock_restrict_self",
		`sealproxy: hint: set [sandbox] landlock = "best-effort" to run unconfined where Landlock cannot be used`,
	} {
		if !strings.Contains(string(out), want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(string(out), "msg=ready") {
		t.Errorf("ready although the sandbox was required and not applied:\n%s", out)
	}

	cmd := run("best-effort")
	var logs testenv.SyncBuffer
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		cmd.Process.Signal(syscall.SIGTERM)
		cmd.Wait()
	}()
	logs.WaitFor(t, time.Minute, "msg=ready")
	f.roundTrip(addr, "web", "unconfined")
	if want := `level=WARN msg="landlock is not available: running without the file system sandbox" why="the landlock system calls are blocked by a seccomp filter`; !strings.Contains(logs.String(), want) {
		t.Errorf("logs lack %q:\n%s", want, logs.String())
	}
}

func init() { confinedChildEnvs = append(confinedChildEnvs, seccompChildEnv) }
