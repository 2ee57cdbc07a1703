package testenv

import (
	"testing"

	"golang.org/x/sys/unix"
)

// HasIPCLock reports whether the test has CAP_IPC_LOCK in its effective
// set (as root it has): then mlock passes RLIMIT_MEMLOCK, and so do the
// programs it starts.
func HasIPCLock(t testing.TB) bool {
	t.Helper()
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		t.Fatal(err)
	}
	return data[0].Effective&(1<<unix.CAP_IPC_LOCK) != 0
}

// WithoutIPCLock returns the command prefix that starts a program
// without CAP_IPC_LOCK, for tests of a too-small RLIMIT_MEMLOCK: setpriv
// (util-linux) dropping it from the bounding set when the test has it,
// nothing otherwise.
func WithoutIPCLock(t testing.TB) []string {
	t.Helper()
	if !HasIPCLock(t) {
		return nil
	}
	return []string{LookTool(t, "setpriv", "util-linux"), "--bounding-set=-ipc_lock", "--"}
}
