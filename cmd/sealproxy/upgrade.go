package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/sealproxy/sealproxy/cmd/internal/cli"
	"github.com/sealproxy/sealproxy/internal/handover"
	"github.com/sealproxy/sealproxy/proxy"
	"github.com/sealproxy/sealproxy/proxy/config"
	"github.com/sealproxy/sealproxy/vault/keyring"
)

// Zero-downtime upgrade (docs/upgrade.md): SIGUSR2 or POST /upgrade
// starts the binary at this one's path as a successor holding the same
// sockets; once every key is open and every listener bound there it says
// ready, becomes systemd's main process, and this process stops
// accepting and drains. A successor that fails leaves this one serving.

// errUpgradeRefused is an upgrade this process would not start.
var errUpgradeRefused = errors.New("upgrade refused")

// readyAnswerWait bounds how long a successor waits for its predecessor
// to hand the main pid over before it announces READY anyway.
const readyAnswerWait = 5 * time.Second

type upgradeRequest struct {
	why   string            // the signal, or POST /upgrade
	reply chan upgradeReply // nil for a signal
}

type upgradeReply struct {
	pid int
	err error
}

type upgradeResult struct {
	req  upgradeRequest
	pid  int
	err  error
	took time.Duration
	// viaPidFile: the successor wrote its pid to the unit's PIDFile=,
	// so this process stays systemd's main one until it exits.
	viaPidFile bool
}

// processHandover is the daemon's handover: the process's own (a
// successor's inherited sockets) for `sealproxy run` as its own process,
// an empty one for a daemon inside another program.
func (d *daemon) processHandover() (*handover.Handover, error) {
	if !d.upgrades {
		return handover.New(), nil
	}
	h, err := handover.FromEnv()
	if err != nil {
		return h, fmt.Errorf("taking the sockets of the previous process: %w", err)
	}
	return h, nil
}

// handoverListen opens listen addresses through the handover, so that
// they are inherited and passed on; systemd's sockets are passed on by
// name (Handover.Pass) and opened by listen as usual.
func handoverListen(h *handover.Handover, listen func(string) (net.Listener, error)) func(string) (net.Listener, error) {
	return func(addr string) (net.Listener, error) {
		if strings.HasPrefix(addr, config.SystemdPrefix) {
			return listen(addr)
		}
		return h.Listen(addr, listen)
	}
}

// inheritSockets adds the service manager's sockets a predecessor passed
// on to passed, and registers all of them to be passed on in turn.
func inheritSockets(h *handover.Handover, passed map[string][]*os.File) map[string][]*os.File {
	if passed == nil {
		passed = map[string][]*os.File{}
	}
	for name, f := range h.Inherited(config.SystemdPrefix) {
		passed[name] = []*os.File{f}
	}
	for name, files := range passed {
		if len(files) == 1 { // more is refused when used (listenFunc)
			h.Pass(config.SystemdPrefix+name, files[0])
		}
	}
	return passed
}

// failReason is what a successor tells its predecessor when it gives up:
// the error and its hints, as `sealproxy run` would print them.
func failReason(err error) error {
	line, hints, _ := cli.Explain("sealproxy", err)
	return errors.New(strings.Join(append([]string{line}, hints...), "; "))
}

// upgrade asks the loop for an upgrade (POST /upgrade) and waits for its
// outcome: the successor's pid.
func (r *runner) upgrade(ctx context.Context) (int, error) {
	req := upgradeRequest{why: "POST /upgrade", reply: make(chan upgradeReply, 1)}
	select {
	case r.upgrades <- req:
	case <-ctx.Done():
		return 0, ctx.Err()
	}
	select {
	case rep := <-req.reply:
		return rep.pid, rep.err
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

// startUpgrade starts a successor, or refuses: one upgrade at a time,
// and only while serving.
func (r *runner) startUpgrade(req upgradeRequest) {
	var refuse error
	switch {
	case handover.Unsupported() != nil:
		refuse = handover.Unsupported()
	case !r.upgradable:
		refuse = errors.New("this sealproxy runs inside another program; only `sealproxy run` started as its own process can start a successor")
	case r.upgrading:
		refuse = handover.ErrInProgress
	case r.state == starting || r.state == aborting:
		refuse = errors.New("still starting: upgrade once this process serves")
	case r.handedTo != 0:
		refuse = fmt.Errorf("this process already handed over to pid %d and drains; ask that one", r.handedTo)
	case r.state == draining:
		refuse = errors.New("this process is stopping")
	case r.unadopted:
		// A successor of this one would be made the main process while
		// its parent lives: systemd could not wait for it.
		refuse = errors.New("the previous process still drains (up to shutdown_timeout); upgrade once it has exited")
	}
	if refuse != nil {
		err := fmt.Errorf("%w: %w", errUpgradeRefused, refuse)
		r.log.Warn("upgrade refused", "why", req.why, "err", err)
		reply(req, 0, err)
		return
	}
	r.upgrading = true
	timeout := r.cfg.Unlock.Timeout
	if timeout <= 0 {
		timeout = config.DefaultUnlockTimeout
	}
	timeout += time.Minute // the successor gives up after [unlock] timeout itself
	r.log.Info("upgrading: starting a successor", "why", req.why, "timeout", timeout)
	r.sd.status(fmt.Sprintf("serving %d listener(s); upgrading: waiting for the successor", len(r.group.Listeners())))
	start := time.Now()
	go func() {
		viaPidFile := false
		pid, err := r.hand.Upgrade(r.gctx, handover.Options{
			Timeout: timeout,
			Started: func(pid int) {
				r.log.Info("upgrade: successor started; this process serves until it is ready", "pid", pid)
			},
			Main: func(pid int) {
				// With the unit's PIDFile= naming the successor, systemd
				// takes it for the main process when this one exits.
				// Otherwise (no PIDFile=, or a successor that does not
				// write it) this process, the main one, names it: only
				// its MAINPID= counts under NotifyAccess=main.
				if viaPidFile = r.pidFile != "" && pidFileNames(r.pidFile, pid); !viaPidFile {
					r.sd.notify(fmt.Sprintf("MAINPID=%d", pid))
				}
			},
			// The successor's progress (the gate code it waits for) in
			// this process's STATUS=, which systemd shows.
			Progress: func(line string) {
				r.sd.status(fmt.Sprintf("serving %d listener(s); upgrading: %s", len(r.group.Listeners()), line))
			},
		})
		r.upgraded <- upgradeResult{req: req, pid: pid, err: err, took: time.Since(start), viaPidFile: viaPidFile}
	}()
}

// upgradeDone takes an upgrade's outcome: a failed one is logged and
// this process goes on; a successful one makes this process stop
// accepting and drain, silent towards systemd.
func (r *runner) upgradeDone(res upgradeResult) {
	r.upgrading = false
	if res.err != nil {
		// The successor's reason may hold anything a JWE, a gate or a
		// file said: escaped.
		reason := keyring.Printable(res.err.Error())
		r.log.Error("upgrade failed; this process keeps serving", "pid", res.pid, "err", reason, "took", res.took.Round(time.Millisecond))
		if r.state == serving {
			r.sd.status(fmt.Sprintf("serving %d listener(s); last upgrade failed: %s", len(r.group.Listeners()), reason))
		}
		// This process still serves: the PID file must name it, whatever
		// a successor wrote before it failed.
		if r.pidFile != "" && !pidFileNames(r.pidFile, os.Getpid()) {
			if err := writePidFile(r.pidFile); err != nil {
				r.log.Error("upgrade: cannot write this process's pid back to the unit's PIDFile=", "path", r.pidFile, "err", err)
			}
		}
		reply(res.req, 0, res.err)
		return
	}
	r.handedTo = res.pid
	r.hand.Handed()
	if res.viaPidFile {
		// Still the main process: it pings the watchdog while it
		// drains, and never says STOPPING=1, which would stop the unit.
		r.sd.setVoice(voiceAlive)
	} else {
		r.sd.setVoice(voiceNone) // the successor speaks for the unit now
	}
	r.log.Info("upgraded: the successor serves; this process stops accepting and drains",
		"pid", res.pid, "took", res.took.Round(time.Millisecond))
	reply(res.req, res.pid, nil)
	if admin := r.admin; admin != nil {
		// Shutdown, not Close: POST /upgrade's answer is still being sent.
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_ = admin.Shutdown(ctx)
		}()
	}
	r.stop(fmt.Sprintf("upgraded: pid %d serves", res.pid))
	r.sd.status(fmt.Sprintf("upgraded: pid %d serves; this process drains and exits", res.pid))
}

// claimPidFile writes this process's pid to the unit's PIDFile= as it
// starts to serve. A successor that cannot gives up, so that its
// predecessor keeps serving: that one's exit would otherwise end the
// unit. A first process goes on without, and so do its successors
// (upgrades then announce MAINPID=).
func (r *runner) claimPidFile() error {
	if r.pidFile == "" {
		return nil
	}
	err := writePidFile(r.pidFile)
	switch {
	case err == nil:
		return nil
	case r.hand.Successor():
		return fmt.Errorf("writing this process's pid to the unit's PIDFile= %s: %w", r.pidFile, err)
	}
	r.log.Warn("cannot write the unit's PIDFile=; upgrades will announce MAINPID= instead", "path", r.pidFile, "err", err)
	r.pidFile = ""
	os.Unsetenv("PIDFILE") // successors inherit the environment
	return nil
}

// pidFileNames reports whether the PID file at path holds pid.
func pidFileNames(path string, pid int) bool {
	b, err := os.ReadFile(path)
	if err != nil {
		return false
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(b)))
	return err == nil && n == pid
}

// tookOver finishes a successor's start: the predecessor is told and
// stops accepting. Without a PID file it makes this process systemd's
// main one at once, and tookOver returns what the READY=1 message adds:
// this process's MAINPID=. With one, this process stays silent until
// its predecessor has exited (adopted).
func (r *runner) tookOver() []string {
	if !r.hand.Successor() {
		return nil
	}
	if err := r.hand.Ready(readyAnswerWait); err != nil {
		r.log.Warn("upgrade: the previous process did not confirm the handover", "err", err)
	}
	if r.pidFile != "" {
		r.unadopted = true
		r.log.Info("upgrade: this process took over the sockets; the previous one stays systemd's main process until it has drained",
			"pid", os.Getpid(), "pid_file", r.pidFile)
		return nil
	}
	r.sd.setVoice(voiceAll)
	r.log.Info("upgrade: this process took over the sockets", "pid", os.Getpid())
	return []string{fmt.Sprintf("MAINPID=%d", os.Getpid())}
}

// adopted runs once a successor's predecessor has exited. With a PID
// file, systemd reads it when it reaps its main process and makes this
// one, adopted by it, the main process; this process waits until the
// predecessor is reaped (systemd has then made the change: it reaps
// after it has handled the exit), for a message before that would be
// dropped as not the main process's. Without a PID file nothing
// changes: systemd ignores a MAINPID= that names its main process
// already, so it keeps this one for another's child (docs/upgrade.md
// says what that costs).
func (r *runner) adopted() {
	if r.handedTo != 0 || r.state != serving {
		return
	}
	r.log.Info("upgrade: the previous process has exited", "ppid", os.Getppid())
	if !r.unadopted {
		return
	}
	pred := r.predecessor
	go func() {
		deadline := time.Now().Add(reapWait)
		for !reaped(pred) && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		r.mainNow <- struct{}{}
	}()
}

// reapWait bounds how long a successor waits for its predecessor to be
// reaped before it speaks for the unit anyway.
const reapWait = 10 * time.Second

// becameMain makes a successor that waited for its predecessor's exit
// speak for the unit: systemd took it for the main process.
func (r *runner) becameMain() {
	r.unadopted = false
	r.sd.setVoice(voiceAll)
	if r.state == serving {
		r.sd.ready(fmt.Sprintf("serving %d listener(s)", len(r.group.Listeners())))
	}
}

// adoptWatchdog makes a successor the process the systemd watchdog
// expects pings from: WATCHDOG_PID names its predecessor, and
// sd_watchdog_enabled answers only the process it names.
func adoptWatchdog(h *handover.Handover) {
	if h.Successor() && os.Getenv("WATCHDOG_PID") == strconv.Itoa(os.Getppid()) {
		os.Setenv("WATCHDOG_PID", strconv.Itoa(os.Getpid()))
	}
}

func reply(req upgradeRequest, pid int, err error) {
	if req.reply != nil {
		req.reply <- upgradeReply{pid: pid, err: err}
	}
}

// cmdUpgrade is `sealproxy upgrade`: POST /upgrade on the admin
// listener; it exits 0 once the successor serves.
func cmdUpgrade(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("upgrade", flag.ContinueOnError)
	addr := fs.String("admin", "", "the daemon's [admin] listen `ADDR` (unix:PATH or host:port)")
	rest, err := cli.Parse(fs, args)
	if err != nil {
		return err
	}
	if len(rest) > 0 {
		return cli.Usage("upgrade: unexpected argument %q", rest[0])
	}
	if *addr == "" {
		return cli.WithHint(errors.New("upgrade: no admin address given"), cli.ExitUsage,
			"pass --admin unix:/run/sealproxy/admin.sock, the [admin] listen of the configuration")
	}
	msg, err := proxy.RequestUpgrade(ctx, *addr)
	switch {
	case err == nil:
		fmt.Fprintln(stdout, msg)
		return nil
	case errors.Is(err, proxy.ErrUpgradeFailed):
		return cli.WithHint(err, cli.ExitFailure, "the running process still serves; the log has the successor's own messages ('sealproxy check --config FILE' validates the configuration)")
	case errors.Is(err, proxy.ErrUpgradeDisabled):
		return cli.WithHint(err, cli.ExitFailure, "set upgrade = true under [admin] and restart sealproxy once (or send it SIGUSR2)")
	}
	return cli.WithHint(err, cli.ExitFailure, "is sealproxy running, with [admin] listen = \""+*addr+"\" and upgrade = true in its configuration?")
}
