package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sealproxy/sealproxy/cmd/internal/cli"
	"github.com/sealproxy/sealproxy/testenv"
	"github.com/sealproxy/sealproxy/vault"
)

// faultTang is the Tang server the process fault tests take down: Debian's
// tangd behind socat where installed (or required), else our own.
func faultTang(t *testing.T) (*testenv.Tang, string) {
	t.Helper()
	_, errSocat := exec.LookPath("socat")
	_, errTangd := os.Stat(testenv.TangdPath)
	if testenv.RequireInterop() || (errSocat == nil && errTangd == nil) {
		return testenv.RealTang(t), "tangd"
	}
	t.Log("tangd or socat is not installed: using the embedded Tang server")
	return testenv.EmbeddedTang(t), "embedded tang"
}

// TestFaultTangDownAtStart runs the sealproxy binary with its Tang
// server down: it retries and says so in its systemd status, listens on
// nothing, and once Tang comes back on the same address (after several
// retries) it unlocks, becomes ready and serves TLS with the sealed key.
func TestFaultTangDownAtStart(t *testing.T) {
	bin := testenv.BuildCommand(t, "sealproxy")
	tangSrv, kind := faultTang(t)
	f := newFixture(t)
	f.sealed("web", tangSrv)
	tangSrv.Stop()
	port := testenv.FreeAddr(t)
	path := f.write(key("web") + f.listener("web", port) +
		"[unlock]\ntimeout = \"2m\"\nretry_backoff = \"50ms\"\nretry_backoff_max = \"250ms\"\n")
	n := listenNotify(t)

	start := time.Now()
	p := startProcess(t, exec.Command(bin, "run", "--config", path))

	// Down for as long as eight attempts take (about 1.4 s of backoff).
	const downAttempts = 8
	n.expect(t, fmt.Sprintf("STATUS=unlocking keys: 0 of 1 open; web: %s unreachable (attempt %d), retrying", tangSrv.URL, downAttempts))
	if c, err := f.tlsTo(port, "web"); err == nil {
		c.Close()
		t.Fatal("listening before the key is open")
	}
	select {
	case <-p.exited:
		t.Fatalf("sealproxy exited while Tang was down: %v\n%s", p.err, p.logs.String())
	default:
	}
	down := time.Since(start)
	tangSrv.Start()
	up := time.Now()
	n.expect(t, "READY=1", "STATUS=serving 1 listener(s)")
	ready := time.Since(up)
	f.roundTrip(port, "web", "sealed key, recovered late")

	logs := p.logs.String()
	retries := len(regexp.MustCompile(`msg="Tang server unreachable; retrying" key=web tang_url=`+regexp.QuoteMeta(tangSrv.URL)).FindAllString(logs, -1))
	if retries < downAttempts {
		t.Errorf("%d retries logged, want at least %d:\n%s", retries, downAttempts, logs)
	}
	counts, attempts := unlocks(logs)
	if counts["web"] != 1 || attempts <= downAttempts {
		t.Errorf("web unlocked %d times, at attempt %d; want once after %d failed attempts:\n%s", counts["web"], attempts, downAttempts, logs)
	}
	p.signal(syscall.SIGTERM)
	p.waitExit(faultTimeout, "SIGTERM")
	t.Logf("FAULT %s: %s down %v (%d retries logged, status said so), up again: ready %v later, unlocked at attempt %d, TLS served, exit 0 on SIGTERM",
		"tang down at start-up", kind, down.Round(time.Millisecond), retries, ready.Round(time.Millisecond), attempts)
}

// TestFaultMemlockTooSmall runs the sealproxy binary with a sealed key
// under an RLIMIT_MEMLOCK smaller than the vault needs (prlimit): it
// exits at once with exit code 1 and an error that names the limit and
// how to raise it, rather than risking a hang in mlock.
func TestFaultMemlockTooSmall(t *testing.T) {
	prlimit := testenv.LookTool(t, "prlimit", "util-linux")
	bin := testenv.BuildCommand(t, "sealproxy")
	tangSrv := testenv.EmbeddedTang(t)
	f := newFixture(t)
	f.sealed("web", tangSrv)
	path := f.write(key("web") + f.listener("web", "127.0.0.1:0"))
	const limit = 16 << 10
	need := vault.MemlockNeed(1)
	if need <= limit {
		t.Fatalf("the vault needs %d bytes of locked memory: a limit of %d is not too small", need, limit)
	}

	ctx, cancel := context.WithTimeout(context.Background(), faultTimeout)
	defer cancel()
	// Without CAP_IPC_LOCK, which would let it lock past the limit
	// (TestMemlockLimitWithIPCLock).
	args := append(testenv.WithoutIPCLock(t), prlimit, fmt.Sprintf("--memlock=%d:%d", limit, limit), "--", bin, "run", "--config", path)
	cmd := exec.CommandContext(ctx, args[0], args[1:]...)
	cmd.WaitDelay = 5 * time.Second
	start := time.Now()
	out, err := cmd.CombinedOutput()
	took := time.Since(start)
	if ctx.Err() != nil {
		t.Fatalf("sealproxy hung under RLIMIT_MEMLOCK=%d (killed after %v):\n%s", limit, faultTimeout, out)
	}
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		t.Fatalf("sealproxy under RLIMIT_MEMLOCK=%d: %v, want an exit code\n%s", limit, err, out)
	}
	if ee.ExitCode() != cli.ExitFailure {
		t.Errorf("exit code %d, want %d", ee.ExitCode(), cli.ExitFailure)
	}
	msg := string(out)
	for _, want := range []string{
		"sealproxy: error: locked memory limit too low: RLIMIT_MEMLOCK is 16384 bytes",
		fmt.Sprintf("the vault needs about %d", need),
		"LimitMEMLOCK=", "ulimit -l",
	} {
		if !strings.Contains(msg, want) {
			t.Errorf("output lacks %q:\n%s", want, msg)
		}
	}
	if strings.Contains(msg, "msg=listening") || strings.Contains(msg, "unlocking key") {
		t.Errorf("went on after the memlock check:\n%s", msg)
	}
	t.Logf("FAULT %s: RLIMIT_MEMLOCK=%d (needs %d): exit %d after %v, error names RLIMIT_MEMLOCK, LimitMEMLOCK= and ulimit -l; no key unlocked, nothing listened",
		"RLIMIT_MEMLOCK too small", limit, need, ee.ExitCode(), took.Round(time.Millisecond))
}
