//go:build unix

package main

import (
	"bytes"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/sealproxy/sealproxy/internal/handover"
	"github.com/sealproxy/sealproxy/proxy"
	"github.com/sealproxy/sealproxy/proxy/config"
)

// TestRunnerUpgradeRefused: an upgrade is refused, with the reason, by a
// daemon inside another program, while starting, while another waits
// for its successor, after a handover, and by a successor whose
// predecessor is still systemd's main process.
func TestRunnerUpgradeRefused(t *testing.T) {
	for _, tc := range []struct {
		name string
		set  func(r *runner)
		want error
		text string
	}{
		{"in-process", func(r *runner) { r.upgradable = false }, errUpgradeRefused, "runs inside another program"},
		{"starting", func(r *runner) { r.state = starting }, errUpgradeRefused, "still starting"},
		{"in flight", func(r *runner) { r.upgrading = true }, handover.ErrInProgress, "an upgrade is already in progress"},
		{"handed over", func(r *runner) { r.state, r.handedTo = draining, 4242 }, errUpgradeRefused, "already handed over to pid 4242"},
		{"predecessor drains", func(r *runner) { r.unadopted = true }, errUpgradeRefused, "the previous process still drains"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var logs bytes.Buffer
			log := slog.New(slog.NewTextHandler(&logs, nil))
			r := &runner{log: log, sd: notifier{log: log}, cfg: &config.Config{}, state: serving, upgradable: true, hand: handover.New()}
			tc.set(r)
			req := upgradeRequest{why: "test", reply: make(chan upgradeReply, 1)}
			r.startUpgrade(req)
			rep := <-req.reply
			if !errors.Is(rep.err, tc.want) || !errors.Is(rep.err, errUpgradeRefused) || !strings.Contains(rep.err.Error(), tc.text) {
				t.Fatalf("%v, want %v with %q", rep.err, tc.want, tc.text)
			}
			if !strings.Contains(logs.String(), `msg="upgrade refused" why=test`) || r.upgrading != (tc.name == "in flight") {
				t.Fatalf("logs %q, upgrading %v", logs.String(), r.upgrading)
			}
		})
	}
}

// TestRunnerUpgradeSignal: SIGUSR2 asks for an upgrade (refused here: an
// in-process daemon) and never stops or reloads the daemon.
func TestRunnerUpgradeSignal(t *testing.T) {
	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	r := &runner{log: log, sd: notifier{log: log}, cfg: &config.Config{}, state: serving, hand: handover.New(), reloads: make(chan chan error, 1)}
	if err := r.signal(syscall.SIGUSR2); err != nil {
		t.Fatal(err)
	}
	if r.state != serving || len(r.reloads) != 0 || !strings.Contains(logs.String(), "runs inside another program") {
		t.Fatalf("state %d, %d reloads, logs %q", r.state, len(r.reloads), logs.String())
	}
}

// TestRunnerUpgradeFailedEscapes: a successor's reason can hold any
// bytes (what a gate, a JWE or a file said): the log line and systemd's
// STATUS= get it escaped, and the daemon serves on.
func TestRunnerUpgradeFailedEscapes(t *testing.T) {
	n := listenNotify(t)
	for _, format := range []string{"text", "json"} {
		var logs bytes.Buffer
		log, err := newLogger(&logs, format, "info", nil)
		if err != nil {
			t.Fatal(err)
		}
		r := &runner{log: log, sd: notifier{log: log}, cfg: &config.Config{}, state: serving, upgrading: true,
			group: proxy.NewGroup(nil, nil)}
		req := upgradeRequest{why: "test", reply: make(chan upgradeReply, 1)}
		r.upgradeDone(upgradeResult{req: req, pid: 77, err: &handover.FailedError{Pid: 77, Reason: "denied \x1b[2J\nREADY=1 by \x07mallory"}})
		if rep := <-req.reply; !errors.Is(rep.err, handover.ErrFailed) {
			t.Fatalf("reply %v", rep.err)
		}
		if r.state != serving || r.upgrading || r.handedTo != 0 {
			t.Fatalf("state %d, upgrading %v, handed to %d", r.state, r.upgrading, r.handedTo)
		}
		out := logs.String()
		if !strings.Contains(out, "upgrade failed; this process keeps serving") || strings.ContainsAny(out, "\x1b\x07") || strings.Count(out, "\n") != 1 {
			t.Fatalf("%s log %q", format, out)
		}
		m := n.expect(t, "last upgrade failed")
		if status := m[len(m)-1]; strings.ContainsAny(status, "\x1b\x07") || strings.Contains(status, "\nREADY=1") {
			t.Fatalf("STATUS %q", status)
		}
	}
}

// TestRunnerUpgradeFailedRewritesPidFile: a successor that wrote its pid
// to the unit's PIDFile= and then failed must not stay named there, or
// systemd would take a dead process for the main one when this one
// exits: the process that serves writes its own pid back.
func TestRunnerUpgradeFailedRewritesPidFile(t *testing.T) {
	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	pidFile := filepath.Join(t.TempDir(), "sealproxy.pid")
	if err := os.WriteFile(pidFile, []byte("77\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	r := &runner{log: log, sd: notifier{log: log}, cfg: &config.Config{}, state: serving, upgrading: true,
		group: proxy.NewGroup(nil, nil), pidFile: pidFile}
	req := upgradeRequest{why: "test", reply: make(chan upgradeReply, 1)}
	r.upgradeDone(upgradeResult{req: req, pid: 77, err: &handover.FailedError{Pid: 77, Reason: "crashed"}})
	<-req.reply
	if !pidFileNames(pidFile, os.Getpid()) {
		b, _ := os.ReadFile(pidFile)
		t.Fatalf("after a failed upgrade the PID file holds %q, want this process's pid %d\n%s", b, os.Getpid(), logs.String())
	}
}
