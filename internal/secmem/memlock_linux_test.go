package secmem

import (
	"errors"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// TestCheckMemlock lowers this process's soft RLIMIT_MEMLOCK below the
// need (and restores it): the error must be ErrMemlock and name the
// limit, the need, who needs it and both ways to raise it.
func TestCheckMemlock(t *testing.T) {
	var old unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_MEMLOCK, &old); err != nil {
		t.Fatal(err)
	}
	if err := unix.Setrlimit(unix.RLIMIT_MEMLOCK, &unix.Rlimit{Cur: 16384, Max: old.Max}); err != nil {
		t.Skipf("cannot lower RLIMIT_MEMLOCK: %v", err)
	}
	defer func() {
		if err := unix.Setrlimit(unix.RLIMIT_MEMLOCK, &old); err != nil {
			t.Fatal(err)
		}
	}()
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
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("%q does not say %q", err, want)
		}
	}
}
