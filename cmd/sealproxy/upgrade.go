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
		pid, err := r.hand.Upgrade(r.gctx, handover.Options{
			Timeout: timeout,
			Started: func(pid int) {
				r.log.Info("upgrade: successor started; this process serves until it is ready", "pid", pid)
			},
			// This process is the main one: only its MAINPID= counts
			// under NotifyAccess=main.
			Main: func(pid int) { r.sd.notify(fmt.Sprintf("MAINPID=%d", pid)) },
			// The successor's progress (the gate code it waits for) in
			// this process's STATUS=, which systemd shows.
			Progress: func(line string) {
				r.sd.status(fmt.Sprintf("serving %d listener(s); upgrading: %s", len(r.group.Listeners()), line))
			},
		})
		r.upgraded <- upgradeResult{req: req, pid: pid, err: err, took: time.Since(start)}
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
		reply(res.req, 0, res.err)
		return
	}
	r.handedTo = res.pid
	r.hand.Handed()
	if r.sd.muted != nil {
		r.sd.muted.Store(true) // the successor speaks for the unit now
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
}

// tookOver finishes a successor's start: the predecessor is told, makes
// this process systemd's main one, and stops accepting. It returns what
// the READY=1 message adds: this process's MAINPID=.
func (r *runner) tookOver() []string {
	if !r.hand.Successor() {
		return nil
	}
	if err := r.hand.Ready(readyAnswerWait); err != nil {
		r.log.Warn("upgrade: the previous process did not confirm the handover", "err", err)
	}
	if r.sd.muted != nil {
		r.sd.muted.Store(false)
	}
	r.log.Info("upgrade: this process took over the sockets", "pid", os.Getpid())
	return []string{fmt.Sprintf("MAINPID=%d", os.Getpid())}
}

// adopted runs once a successor's predecessor has exited: PID 1 (or a
// subreaper) adopted this process, so a second MAINPID= makes systemd
// take it for its own child: it then waits for it at stop and reads its
// exit status (Restart=on-failure), which it cannot for a main process
// that is another's child.
func (r *runner) adopted() {
	if r.handedTo != 0 || r.state != serving {
		return
	}
	r.log.Info("upgrade: the previous process has exited", "ppid", os.Getppid())
	msg := fmt.Sprintf("MAINPID=%d", os.Getpid())
	r.sd.notify(msg)
	// systemd may read this before it has reaped the predecessor, and
	// then still takes this process for another's child (CI's nspawn
	// suite saw a stop SIGKILL it): say it again once that is surely over.
	time.AfterFunc(time.Second, func() { r.sd.notify(msg) })
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
