package main

import (
	"fmt"
	"os/exec"
	"testing"
	"time"

	"github.com/sealproxy/sealproxy/testenv"
	"github.com/sealproxy/sealproxy/vault"
)

// TestMemlockLimitWithIPCLock: a process with CAP_IPC_LOCK starts with a
// sealed key under an RLIMIT_MEMLOCK below the vault's need, since mlock
// passes the limit then. That is a Kubernetes pod given IPC_LOCK on a
// node whose runtime leaves 64 KiB (docs/fleet.md, "Locked memory"):
// Kubernetes cannot raise the limit, only grant the capability.
// TestFaultMemlockTooSmall is the same start without the capability.
func TestMemlockLimitWithIPCLock(t *testing.T) {
	prlimit := testenv.LookTool(t, "prlimit", "util-linux")
	if !testenv.HasIPCLock(t) {
		t.Skip("needs CAP_IPC_LOCK (run as root)")
	}
	bin := testenv.BuildCommand(t, "sealproxy")
	tangSrv := testenv.EmbeddedTang(t)
	f := newFixture(t)
	f.sealed("web", tangSrv)
	path := f.write(key("web") + f.listener("web", "127.0.0.1:0"))
	const limit = 16 << 10
	if need := vault.MemlockNeed(1); need <= limit {
		t.Fatalf("the vault needs %d bytes of locked memory: a limit of %d is not too small", need, limit)
	}
	p := startProcess(t, exec.Command(prlimit, fmt.Sprintf("--memlock=%d:%d", limit, limit), "--", bin, "run", "--config", path))
	p.logs.WaitFor(t, time.Minute, "msg=ready")
}
