package secmem

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// CheckMemlock fails with ErrMemlock when RLIMIT_MEMLOCK is below need
// bytes and the process cannot lock them anyway (CAP_IPC_LOCK); the
// error says who needs them ("the vault", the subject of "needs") and how
// to raise the limit.
func CheckMemlock(need int, who string) error {
	var lim unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_MEMLOCK, &lim); err != nil {
		return fmt.Errorf("reading RLIMIT_MEMLOCK: %w", err)
	}
	if lim.Cur == unix.RLIM_INFINITY || lim.Cur >= uint64(need) {
		return nil
	}
	// CAP_IPC_LOCK (root, or a container given it, where Kubernetes has
	// no way to set the limit) lets mlock pass the limit. Locking need
	// bytes once tells for sure; the capability sets would not (in a
	// user namespace they name capabilities mlock does not honour).
	if canLock(need) {
		return nil
	}
	return memlockError(lim.Cur, need, who)
}

// canLock reports whether need bytes of fresh memory can be locked now,
// and unlocks and frees them again.
func canLock(need int) bool {
	b, err := unix.Mmap(-1, 0, need, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		return false
	}
	defer unix.Munmap(b)
	if err := unix.Mlock(b); err != nil {
		return false
	}
	_ = unix.Munlock(b)
	return true
}

// memlockError names the limit, the need and the fix.
func memlockError(limit uint64, need int, who string) error {
	kib := (need + 1023) / 1024
	return fmt.Errorf("%w: RLIMIT_MEMLOCK is %d bytes and %s needs about %d: raise it (systemd unit: LimitMEMLOCK=%d or more; shell: ulimit -l %d; container: add the IPC_LOCK capability)",
		ErrMemlock, limit, who, need, kib*1024, kib)
}
