package main

import (
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/sealproxy/sealproxy/testenv"
)

// process is a program a test started (the built sealproxy, or a tool
// that runs it); it is killed at the end of the test if it still runs.
type process struct {
	t      *testing.T
	cmd    *exec.Cmd
	logs   *testenv.SyncBuffer // its stderr
	exited chan struct{}       // closed once it has exited
	err    error               // how it exited, once exited is closed
}

// startProcess starts cmd with its stderr in process.logs.
func startProcess(t *testing.T, cmd *exec.Cmd) *process {
	t.Helper()
	p := &process{t: t, cmd: cmd, logs: new(testenv.SyncBuffer), exited: make(chan struct{})}
	cmd.Stderr = p.logs
	cmd.WaitDelay = 10 * time.Second
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.err = cmd.Wait(); close(p.exited) }()
	t.Cleanup(func() {
		cmd.Process.Kill() // os.ErrProcessDone if it has exited
		<-p.exited
	})
	return p
}

// signal sends sig to the process.
func (p *process) signal(sig os.Signal) {
	p.t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		p.t.Fatal(err)
	}
}

// waitExit waits up to timeout for the process to exit 0 after what
// (a signal) and fails the test, with its logs, otherwise.
func (p *process) waitExit(timeout time.Duration, after string) {
	p.t.Helper()
	select {
	case <-p.exited:
		if p.err != nil {
			p.t.Fatalf("exit after %s: %v\n%s", after, p.err, p.logs.String())
		}
	case <-time.After(timeout):
		p.t.Fatalf("no exit after %s:\n%s", after, p.logs.String())
	}
}
