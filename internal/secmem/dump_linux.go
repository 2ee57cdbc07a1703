//go:build linux

package secmem

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// NoDumps keeps a process's memory out of core dumps (RLIMIT_CORE 0) and,
// with undumpable, out of reach of other processes of the same user:
// PR_SET_DUMPABLE 0 forbids ptrace and /proc/PID/mem to all but
// CAP_SYS_PTRACE. Daemons that hold keys call it at start-up.
func NoDumps(undumpable bool) error {
	if err := unix.Setrlimit(unix.RLIMIT_CORE, &unix.Rlimit{}); err != nil {
		return fmt.Errorf("disabling core dumps (RLIMIT_CORE 0): %w", err)
	}
	if undumpable {
		if err := unix.Prctl(unix.PR_SET_DUMPABLE, 0, 0, 0, 0); err != nil {
			return fmt.Errorf("making the process non-dumpable (PR_SET_DUMPABLE 0): %w", err)
		}
	}
	return nil
}
