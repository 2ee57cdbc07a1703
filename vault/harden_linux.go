//go:build linux

package vault

import (
	"fmt"

	"golang.org/x/sys/unix"
)

func checkMemlock(need int) error {
	var lim unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_MEMLOCK, &lim); err != nil {
		return fmt.Errorf("reading RLIMIT_MEMLOCK: %w", err)
	}
	if lim.Cur == unix.RLIM_INFINITY || lim.Cur >= uint64(need) {
		return nil
	}
	return memlockError(lim.Cur, need)
}

// memlockError names the limit, the need and the fix.
func memlockError(limit uint64, need int) error {
	return fmt.Errorf("%w: RLIMIT_MEMLOCK is %d bytes and the vault needs about %d: raise it (systemd unit: LimitMEMLOCK=%d or more; shell: ulimit -l %d)",
		ErrMemlock, limit, need, roundKiB(need)*1024, roundKiB(need))
}

func roundKiB(n int) int { return (n + 1023) / 1024 }
