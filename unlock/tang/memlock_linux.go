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
