package vault

import (
	"os"

	"github.com/awnumar/memguard"

	"github.com/sealproxy/sealproxy/internal/secmem"
)

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
// (RLIMIT_MEMLOCK) for the vault, failing with secmem.ErrMemlock and a
// message that names the limit and the systemd setting rather than
// risking memguard hanging later. Call it once at start-up, before opening keys. On platforms other
// than Linux it only checks what it can.
//
// The daemon should also call memguard.Purge (or Purge here) on exit.
func Harden(opts HardenOptions) error {
	if err := secmem.NoDumps(!opts.KeepDumpable); err != nil {
		return err
	}
	return checkMemlock(MemlockNeed(max(1, opts.Keys)))
}

func checkMemlock(need int) error { return secmem.CheckMemlock(need, "the vault") }

// MemlockNeed estimates the locked memory, in bytes, the vault needs to
// hold keys sealed keys: the boxes' pool and memguard's key
// (secmem.PoolNeed), per key room for the recovery's transient locked
// buffers (PEM and CEK), and some slack for enclaves opened per
// operation.
func MemlockNeed(keys int) int {
	page := os.Getpagesize()
	return secmem.PoolNeed() + keys*4*page + 4*page
}

// Purge wipes every secret the vault holds (memguard's key and all locked
// buffers, including the scratch arena) and is the last thing a daemon
// does before exiting; no key may be used afterwards. memguard.CatchSignal
// is not used: it replaces every signal handler, so the daemon does its
// own signal handling and calls Purge on its way out.
func Purge() { memguard.Purge() }
