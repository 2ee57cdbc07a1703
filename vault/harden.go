package vault

import (
	"errors"
	"os"

	"github.com/awnumar/memguard"
	"github.com/sealproxy/sealproxy/unlock/wipe"
)

// ErrMemlock reports a locked-memory limit too small for the keys: memguard
// can deadlock when mlock fails, so we refuse to start instead.
var ErrMemlock = errors.New("locked memory limit too low")

// HardenOptions tune Harden.
type HardenOptions struct {
	// KeepDumpable leaves the process dumpable (PR_SET_DUMPABLE 1). Only
	// for tests that read the process's own memory through /proc/PID/mem as
	// an unprivileged user: a non-dumpable process's memory can be read
	// only with CAP_SYS_PTRACE.
	KeepDumpable bool
	// Keys is the number of keys the process will hold (for the locked
	// memory estimate); zero means one.
	Keys int
}

// Harden prepares the process to hold secrets: no core dumps (RLIMIT_CORE
// 0), not dumpable and not ptrace-attachable by other processes of the
// same user (PR_SET_DUMPABLE 0 on Linux), and enough locked memory
// (RLIMIT_MEMLOCK) for the vault, failing with a message that names the
// limit and the systemd setting rather than risking memguard hanging
// later. Call it once at start-up, before opening keys. On platforms other
// than Linux it only checks what it can.
//
// The daemon should also call memguard.Purge (or Purge here) on exit.
func Harden(opts HardenOptions) error {
	if err := wipe.NoDumps(!opts.KeepDumpable); err != nil {
		return err
	}
	return checkMemlock(MemlockNeed(max(1, opts.Keys)))
}

// MemlockNeed estimates the locked memory, in bytes, the vault needs to
// hold keys sealed keys: the shared scratch arena plus, per key, room for
// the recovery's transient locked buffers (PEM and CEK), plus memguard's
// own key.
func MemlockNeed(keys int) int {
	page := pageSize()
	return lockedBytes(scratchSlots()) + keys*4*page + memguardReserve()
}

// memguardReserve is memguard's own locked memory: its coffer (three
// one-page buffers) and some slack for enclaves opened per operation.
func memguardReserve() int { return 8 * pageSize() }

func pageSize() int { return os.Getpagesize() }

// Purge wipes every secret the vault holds (memguard's key and all locked
// buffers, including the scratch arena) and is the last thing a daemon
// does before exiting; no key may be used afterwards. memguard.CatchSignal
// is not used: it replaces every signal handler, so the daemon does its
// own signal handling and calls Purge on its way out.
func Purge() { memguard.Purge() }
