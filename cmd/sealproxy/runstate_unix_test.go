//go:build unix

package main

import (
	"bytes"
	"errors"
	"log/slog"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sealproxy/sealproxy/proxy/config"
)

// TestRunnerSignals walks runner.signal through every state: what each
// signal does to the state, the error that ends the daemon, the group's
// cancellation, the stopped hook, the queued reload and the log line. The
// daemon tests (TestStopWhileUnlocking, TestSecondSignalForces) see the
// same from outside; this covers the pairs they cannot reach in time
// (a second stop while starting, SIGHUP while draining).
func TestRunnerSignals(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", "")
	for _, tc := range []struct {
		name      string
		from      runState
		sig       os.Signal
		to        runState
		err       error
		cancelled bool   // the group's context ended
		reloads   int    // reloads queued for the worker
		log       string // a line the log must hold ("" none)
	}{
		{"reload while starting", starting, syscall.SIGHUP, starting, nil, false, 0, `msg="reload signal ignored: still starting" signal=hangup`},
		{"reload while aborting", aborting, syscall.SIGHUP, aborting, nil, false, 0, `msg="reload signal ignored: still starting"`},
		{"reload while serving", serving, syscall.SIGHUP, serving, nil, false, 1, `msg=reloading signal=hangup`},
		{"reload while draining", draining, syscall.SIGHUP, draining, nil, false, 0, ""},
		{"stop while starting", starting, syscall.SIGTERM, aborting, nil, true, 0, `msg="stopping: no new connections; draining" why=terminated shutdown_timeout=7s`},
		{"stop while serving", serving, syscall.SIGINT, draining, nil, true, 0, `msg="stopping: no new connections; draining" why=interrupt`},
		{"second stop while starting", aborting, syscall.SIGTERM, aborting, errForced, false, 0, ""},
		{"second stop while draining", draining, syscall.SIGINT, draining, errForced, false, 0, `level=WARN msg="second stop signal: cutting the drain short" signal=interrupt`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var logs bytes.Buffer
			log := slog.New(slog.NewTextHandler(&logs, nil))
			cancelled := false
			var stoppedFor time.Duration
			r := &runner{
				log: log, sd: notifier{log: log}, cfg: &config.Config{ShutdownTimeout: 7 * time.Second},
				hooks:     runHooks{stopped: func(d time.Duration) { stoppedFor = d }},
				stopGroup: func() { cancelled = true },
				reloads:   make(chan chan error, 1),
				state:     tc.from,
			}
			err := r.signal(tc.sig)
			if !errors.Is(err, tc.err) || (err == nil) != (tc.err == nil) {
				t.Errorf("signal = %v, want %v", err, tc.err)
			}
			if r.state != tc.to {
				t.Errorf("state %d, want %d", r.state, tc.to)
			}
			if cancelled != tc.cancelled {
				t.Errorf("group cancelled: %v, want %v", cancelled, tc.cancelled)
			}
			if tc.cancelled && stoppedFor != 7*time.Second {
				t.Errorf("stopped hook told %v, want the shutdown_timeout 7s", stoppedFor)
			}
			if !tc.cancelled && stoppedFor != 0 {
				t.Errorf("stopped hook called (%v) without a stop", stoppedFor)
			}
			if len(r.reloads) != tc.reloads {
				t.Errorf("%d reloads queued, want %d", len(r.reloads), tc.reloads)
			}
			if tc.log == "" && logs.Len() != 0 {
				t.Errorf("logged %q, want nothing", logs.String())
			}
			if tc.log != "" && !strings.Contains(logs.String(), tc.log) {
				t.Errorf("log %q, want it to hold %q", logs.String(), tc.log)
			}
		})
	}
}

// TestRunnerReloadsJoin: SIGHUPs while a reload waits join it instead of
// queueing more.
func TestRunnerReloadsJoin(t *testing.T) {
	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	r := &runner{log: log, sd: notifier{log: log}, cfg: &config.Config{}, reloads: make(chan chan error, 1), state: serving}
	for range 3 {
		if err := r.signal(syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
	}
	if len(r.reloads) != 1 || strings.Count(logs.String(), "a reload is already waiting; this signal joins it") != 2 {
		t.Errorf("%d reloads queued, logs:\n%s", len(r.reloads), logs.String())
	}
}

// TestRunnerStartFailed: a start-up that failed ends the daemon with its
// error, unless a stop came first: then it is a clean stop (exit 0).
func TestRunnerStartFailed(t *testing.T) {
	cause := errors.New("tang unreachable")
	for _, tc := range []struct {
		from  runState
		clean bool
	}{{starting, false}, {aborting, true}} {
		var logs bytes.Buffer
		r := &runner{log: slog.New(slog.NewTextHandler(&logs, nil)), cfg: &config.Config{}, state: tc.from}
		end, err := r.started(cause)
		if !end {
			t.Errorf("state %d: a failed start-up did not end the daemon", tc.from)
		}
		if tc.clean != (err == nil) || (err != nil && !errors.Is(err, cause)) {
			t.Errorf("state %d: started = %v, clean stop %v", tc.from, err, tc.clean)
		}
		if stopped := strings.Contains(logs.String(), `msg="stopped before start-up was complete" err="tang unreachable"`); stopped != tc.clean {
			t.Errorf("state %d: log %q", tc.from, logs.String())
		}
	}
}
