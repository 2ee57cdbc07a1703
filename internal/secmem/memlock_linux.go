package secmem

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// CheckMemlock fails with ErrMemlock when RLIMIT_MEMLOCK is below need
// bytes; the error says who needs them ("the vault", the subject of
// "needs") and how to raise the limit.
func CheckMemlock(need int, who string) error {
	var lim unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_MEMLOCK, &lim); err != nil {
		return fmt.Errorf("reading RLIMIT_MEMLOCK: %w", err)
	}
	if lim.Cur == unix.RLIM_INFINITY || lim.Cur >= uint64(need) {
		return nil
	}
	return memlockError(lim.Cur, need, who)
}

// memlockError names the limit, the need and the fix.
func memlockError(limit uint64, need int, who string) error {
	kib := (need + 1023) / 1024
	return fmt.Errorf("%w: RLIMIT_MEMLOCK is %d bytes and %s needs about %d: raise it (systemd unit: LimitMEMLOCK=%d or more; shell: ulimit -l %d)",
		ErrMemlock, limit, who, need, kib*1024, kib)
}
