package tang

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// checkMemlock fails when RLIMIT_MEMLOCK is below need bytes.
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

func pageSize() int { return os.Getpagesize() }

// memlockError names the limit, the need and the fix.
func memlockError(limit uint64, need int) error {
	kib := (need + 1023) / 1024
	return fmt.Errorf("%w: RLIMIT_MEMLOCK is %d bytes and the Tang keys need about %d: raise it (systemd unit: LimitMEMLOCK=%d or more; shell: ulimit -l %d)",
		ErrMemlock, limit, need, kib*1024, kib)
}
