package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/sealproxy/sealproxy/cmd/internal/cli"
	"github.com/sealproxy/sealproxy/cmd/internal/sandbox"
	"github.com/sealproxy/sealproxy/internal/handover"
	"github.com/sealproxy/sealproxy/internal/secmem"
	"github.com/sealproxy/sealproxy/proxy"
	"github.com/sealproxy/sealproxy/proxy/config"
	"github.com/sealproxy/sealproxy/proxy/control"
	"github.com/sealproxy/sealproxy/vault"
	"github.com/sealproxy/sealproxy/vault/acme"
	"github.com/sealproxy/sealproxy/vault/keyring"
)

// exitUnlock is the exit code of a start-up that could not unlock its
// keys (Tang unreachable, or no approval, before [unlock] timeout).
const exitUnlock = 5

// errForced is the exit after a second stop signal: the drain was cut.
var errForced = errors.New("stopped by a second signal before the drain was over: open connections were cut")

// runHooks let a service manager follow `sealproxy run`: the Windows
// service reports its start-pending progress through them. Nil fields
// are ignored.
type runHooks struct {
	status  func(string)              // one line while unlocking, reloading, stopping
	ready   func()                    // every key open, every listener bound
	stopped func(drain time.Duration) // stop requested: draining for up to drain
	// log, if set, takes the log records instead of stderr (the Event
	// Log); format makes the handler of --log-format and --log-level.
	log func(format func(io.Writer) slog.Handler) slog.Handler
}

func (d *daemon) cmdRun(ctx context.Context, args []string, stderr io.Writer) error {
	return d.serve(ctx, args, stderr, runHooks{})
}

// serve is `sealproxy run`: config → every key open (sealed keys
// recovered concurrently, retried while Tang is unreachable, bounded by
// [unlock] timeout) → every listener bound → READY. Nothing listens
// before every key is open. SIGHUP (or POST /reload) reloads; SIGTERM or
// SIGINT, or ctx ending, stops accepting and drains up to
// shutdown_timeout; a second signal cuts the drain short.
func (d *daemon) serve(ctx context.Context, args []string, stderr io.Writer, hooks runHooks) (err error) {
	// A successor started by an upgrade tells its predecessor why it
	// gives up (a bad configuration, a denied key), whatever the step.
	hand, handErr := d.processHandover()
	defer func() {
		if err != nil {
			hand.Fail(failReason(err))
		}
	}()
	var logFormat, logLevel string
	path, err := configFlag("run", args, func(fs *flag.FlagSet) {
		fs.StringVar(&logFormat, "log-format", "text", "log format: text or json")
		fs.StringVar(&logLevel, "log-level", "info", "log level: debug, info, warn or error")
	})
	if err != nil {
		return err
	}
	log, err := newLogger(stderr, logFormat, logLevel, hooks.log)
	if err != nil {
		return err
	}
	if handErr != nil {
		return cli.WithHint(handErr, cli.ExitFailure, "")
	}
	cfg, err := loadConfig(path, false)
	if err != nil {
		return err
	}
	if sealed := countSealed(cfg); sealed > 0 {
		// Before any Tang server or gate is asked for a key.
		if err := vault.CheckMemoryProtection(cfg.AllowUnprotectedMemory); err != nil {
			return startError(err)
		}
	}
	// Sealed PINs are held in locked memory like sealed keys.
	if n := countUnlocks(cfg); n > 0 {
		if err := vault.Harden(vault.HardenOptions{Keys: n}); err != nil {
			return cli.WithHint(err, cli.ExitFailure, "")
		}
	}

	// A successor is silent towards systemd until it is the main process.
	voice := new(atomic.Int32)
	if hand.Successor() {
		voice.Store(voiceNone)
	}
	var pidFile string
	if d.upgrades {
		pidFile = systemdPidFile()
	}
	r := &runner{log: log, cfg: cfg, sd: notifier{log: log, voice: voice}, hooks: hooks, signals: d.signals, confine: d.confine,
		reloads: make(chan chan error, 1), hand: hand, upgradable: d.upgrades, pidFile: pidFile,
		predecessor: os.Getppid(), mainNow: make(chan struct{}, 1),
		upgrades: make(chan upgradeRequest, 1), upgraded: make(chan upgradeResult, 1)}
	adoptWatchdog(hand)
	var stopWatchdog func()
	r.watchdog, stopWatchdog = r.sd.watchdog()
	defer stopWatchdog()

	sockets := d.sockets
	if sockets == nil {
		sockets = systemdSockets
	}
	passed := inheritSockets(hand, sockets())
	r.listen = handoverListen(hand, listenFunc(passed))
	for name := range passed {
		if !usesSocket(cfg, name) {
			log.Warn("systemd passed a socket no listener uses (listen = \"systemd:NAME\")", "name", name)
		}
	}

	r.reg = prometheus.NewRegistry()
	r.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	metrics := proxy.NewMetrics(r.reg)
	var ctl *control.Server
	keys := keyring.New(keyring.Options{Log: log, Status: func(s string) {
		r.status(s)
		ctl.Status(s) // a set-key waiting for a gate shows the code
	}})
	defer keys.Close()
	if ctl, err = newControl(cfg, log, keys, r.reload, func() {
		r.status(fmt.Sprintf("serving %d listener(s)", len(r.group.Listeners())))
	}); err != nil {
		return cli.WithHint(err, cli.ExitUsage, "")
	}
	r.ctl = ctl
	acmeChallenges := proxy.NewChallenges()
	load := func(ctx context.Context, c *config.Config) (*proxy.Plan, error) {
		for _, w := range c.Warnings {
			log.Warn("configuration weaker than the defaults", "err", w)
		}
		c, err := ctl.Apply(c)
		if err != nil {
			return nil, err
		}
		g := keys.Begin()
		// Keys the control API committed stay open before a listener
		// uses them: attaching one needs no second approval.
		if err := g.OpenKeys(ctx, c, append(keyring.Used(c), ctl.Held(c)...)...); err != nil {
			g.Discard()
			return nil, err
		}
		listeners, err := proxy.Build(ctx, c, signers(g, c, metrics), log)
		if err != nil {
			g.Discard()
			return nil, err
		}
		proxy.AnswerACME(listeners, c, acmeChallenges)
		pool, err := proxy.BuildPool(ctx, c, signers(g, c, metrics), log)
		if err != nil {
			g.Discard()
			return nil, err
		}
		if err := shareTickets(g, c, listeners, pool); err != nil {
			g.Discard()
			return nil, err
		}
		return &proxy.Plan{Listeners: listeners, Pool: pool, MaxConns: c.MaxConnections,
			Applied: func() { g.Commit(); ctl.Applied(c); r.acmeApplied(c) }, Discarded: g.Discard}, nil
	}
	var initial atomic.Pointer[config.Config]
	initial.Store(cfg)
	loader := func(ctx context.Context) (*proxy.Plan, error) {
		// Start-up loads the configuration read and checked above; each
		// reload reads the file again.
		c := initial.Swap(nil)
		if c == nil {
			var err error
			if c, err = config.Load(path); err != nil {
				return nil, outsideSandbox(r.confined.Load(), err)
			}
		}
		acme.Recover(c, log.With("component", "acme")) // a pair a crash left half in place
		plan, err := load(ctx, c)
		return plan, outsideSandbox(r.confined.Load(), err)
	}
	r.group = proxy.NewGroup(loader, &proxy.Options{
		Log: log, Metrics: metrics, ShutdownTimeout: cfg.ShutdownTimeout,
		Listen: func(addr string) (net.Listener, error) {
			ln, err := r.listen(addr)
			return ln, outsideSandbox(r.confined.Load(), err)
		},
	})

	r.gctx, r.stopGroup = context.WithCancel(ctx)
	defer r.stopGroup()
	defer r.closeAdmin()
	defer r.startACME(keys, metrics, acmeChallenges)()
	return r.loop(ctx)
}

// runState is where `sealproxy run` stands. Start-up's result, the
// group's end, signals and the context's end move it on; each is
// answered in [runner.loop], the one place that waits for them.
type runState int

const (
	starting runState = iota // opening keys, binding listeners
	aborting                 // stopped while starting: waiting for start-up to give up
	serving                  // READY: reloads apply
	draining                 // stopped: no new connections, waiting for open ones
)

// runner is one `sealproxy run` after its configuration is read: the
// listener group and what answers around it (signals, sd_notify, the
// service hooks, the admin listener, the sandbox).
type runner struct {
	log      *slog.Logger
	cfg      *config.Config
	sd       notifier
	hooks    runHooks
	signals  <-chan os.Signal
	watchdog <-chan time.Time
	listen   func(addr string) (net.Listener, error)
	reg      *prometheus.Registry
	confine  bool                           // apply [sandbox] before READY
	confined atomic.Pointer[sandbox.Policy] // once applied

	group     *proxy.Group
	gctx      context.Context // the group's; stopGroup ends it
	stopGroup context.CancelFunc
	reloads   chan chan error // to the reload worker
	admin     *http.Server
	ctl       *control.Server

	// Upgrades (upgrade.go): the sockets to pass on, requests and
	// results, and the successor this process handed over to.
	hand       *handover.Handover
	upgradable bool // `sealproxy run` as its own process
	upgrades   chan upgradeRequest
	upgraded   chan upgradeResult
	upgrading  bool
	handedTo   int
	pidFile    string // the unit's PIDFile=, rewritten by an upgrade; "" if none
	// unadopted: a successor that wrote the PID file and waits for its
	// predecessor, still systemd's main process, to exit.
	unadopted   bool
	predecessor int           // a successor's parent at start
	mainNow     chan struct{} // the predecessor is reaped: systemd read the PID file

	state runState

	acmeManager atomic.Pointer[acme.Manager] // set by startACME; reloads hand it their configuration
}

// status reports a progress line to systemd and the service hooks, and
// a successor's to its predecessor.
func (r *runner) status(s string) {
	r.sd.status(s)
	if r.hand != nil {
		r.hand.Status(keyring.Printable(s)) // a successor's, to its predecessor's STATUS=
	}
	if r.hooks.status != nil {
		r.hooks.status(s)
	}
}

// loop starts the group and answers every event until the daemon ends.
func (r *runner) loop(ctx context.Context) error {
	r.status(fmt.Sprintf("starting: opening %d key(s)", len(usedKeys(r.cfg))))
	started := make(chan error, 1)
	go func() { started <- r.group.Start(r.gctx) }()
	var done chan error // once started: the group's end
	ctxDone := ctx.Done()
	predecessorGone := r.hand.PredecessorGone()
	for {
		select {
		case err := <-started:
			started = nil
			if end, err := r.started(err); end {
				return err
			}
			done = make(chan error, 1)
			go func() { done <- r.group.Wait() }()
		case err := <-done:
			if err != nil {
				r.sd.stopping()
				return cli.WithHint(err, cli.ExitFailure, "")
			}
			r.log.Info("stopped")
			return nil
		case sig := <-r.signals:
			if err := r.signal(sig); err != nil {
				return err
			}
		case <-ctxDone:
			ctxDone = nil
			r.stop("context ended")
		case <-r.watchdog:
			r.sd.ping()
		case req := <-r.upgrades:
			r.startUpgrade(req)
		case res := <-r.upgraded:
			r.upgradeDone(res)
		case <-predecessorGone:
			predecessorGone = nil
			r.adopted()
		case <-r.mainNow:
			r.becameMain()
		}
	}
}

// started takes start-up's result: on success it starts the reload
// worker and, unless stopped meanwhile, the admin listener, the sandbox
// and READY. end reports that the daemon is over, with err its exit.
func (r *runner) started(startErr error) (end bool, err error) {
	if startErr != nil {
		if r.state == aborting {
			r.log.Info("stopped before start-up was complete", "err", startErr)
			return true, nil
		}
		return true, startError(startErr)
	}
	go r.reloadWorker()
	if r.state == aborting {
		r.state = draining
		return false, nil
	}
	if r.cfg.Admin.Listen != "" {
		ln, err := r.listen(r.cfg.Admin.Listen)
		if err != nil {
			r.stop("admin listener failed")
			_ = r.group.Wait()
			return true, cli.WithHint(fmt.Errorf("admin listener: %w", err), cli.ExitFailure, "is another sealproxy running? change [admin] listen")
		}
		var reloadFn func(context.Context) error
		if r.cfg.Admin.Reload {
			reloadFn = r.reload
		}
		mux := http.NewServeMux()
		mux.Handle("/ctl/", r.ctl.Handler()) // refuses any but a unix socket's allowed callers
		if r.cfg.Admin.Upgrade {
			mux.Handle("/upgrade", proxy.UpgradeHandler(r.upgrade, errUpgradeRefused))
		}
		mux.Handle("/", proxy.AdminHandler(r.reg, r.group.Ready, reloadFn))
		r.admin = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, ConnContext: control.ConnContext}
		go func() { _ = r.admin.Serve(ln) }()
		r.log.Info("admin listening", "addr", ln.Addr().String(), "reload", r.cfg.Admin.Reload)
	}

	// Confine before READY: every key is open, every listener bound.
	if r.confine {
		// The configuration with the state file's changes: its keys'
		// directories too.
		running := r.ctl.Running()
		if running == nil {
			running = r.cfg
		}
		p, err := confine(r.log, running, r.upgradable, r.pidFile)
		if err != nil {
			r.stop("sandbox not applied")
			_ = r.group.Wait()
			return true, err
		}
		r.confined.Store(p)
	}
	if err := r.claimPidFile(); err != nil {
		r.stop("PID file not written")
		_ = r.group.Wait()
		return true, cli.WithHint(err, cli.ExitFailure, "the unit's PIDFile= must be in a directory this service may write (RuntimeDirectory=)")
	}

	r.state = serving
	mainPid := r.tookOver()
	r.log.Info("ready", "listeners", len(r.group.Listeners()), "pid", os.Getpid())
	r.sd.ready(fmt.Sprintf("serving %d listener(s)", len(r.group.Listeners())), mainPid...)
	if r.hooks.ready != nil {
		r.hooks.ready()
	}
	return false, nil
}

// signal answers a signal: a reload (SIGHUP) applies only once serving;
// a stop drains, and a second stop cuts the drain (errForced).
func (r *runner) signal(sig os.Signal) error {
	if isUpgrade(sig) {
		r.startUpgrade(upgradeRequest{why: sig.String()})
		return nil
	}
	if isReload(sig) {
		switch r.state {
		case starting, aborting:
			r.log.Info("reload signal ignored: still starting", "signal", sig.String())
		case serving:
			r.log.Info("reloading", "signal", sig.String())
			select {
			case r.reloads <- make(chan error, 1):
			default:
				r.log.Info("a reload is already waiting; this signal joins it")
			}
		}
		return nil
	}
	switch r.state {
	case aborting:
		return errForced
	case draining:
		r.log.Warn("second stop signal: cutting the drain short", "signal", sig.String())
		return errForced
	}
	r.stop(sig.String())
	return nil
}

// stop stops accepting and lets open connections drain; once stopped,
// it does nothing.
func (r *runner) stop(why string) {
	switch r.state {
	case starting:
		r.state = aborting
	case serving:
		r.state = draining
	default:
		return
	}
	r.log.Info("stopping: no new connections; draining", "why", why, "shutdown_timeout", r.cfg.ShutdownTimeout)
	r.sd.stopping()
	if r.hooks.stopped != nil {
		r.hooks.stopped(r.cfg.ShutdownTimeout)
	}
	r.stopGroup()
}

// reload asks the reload worker for a reload (POST /reload) and waits
// for its result.
func (r *runner) reload(ctx context.Context) error {
	reply := make(chan error, 1)
	select {
	case r.reloads <- reply:
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case err := <-reply:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// reloadWorker runs reloads one at a time, away from the signal loop,
// so that a stop signal is answered while a reload waits for a Tang
// server.
func (r *runner) reloadWorker() {
	for {
		select {
		case <-r.gctx.Done():
			return
		case reply := <-r.reloads:
			r.sd.reloading()
			if r.hooks.status != nil {
				r.hooks.status("reloading")
			}
			err := r.group.Reload(r.gctx)
			line := fmt.Sprintf("serving %d listener(s)", len(r.group.Listeners()))
			if err != nil {
				line += "; last reload failed: " + err.Error()
			}
			if r.gctx.Err() == nil {
				r.sd.ready(line)
			}
			reply <- err
		}
	}
}

// closeAdmin closes the admin listener, if one was opened, after the
// requests in flight are answered (for up to 5s): POST /upgrade's answer
// is written as this process stops.
func (r *runner) closeAdmin() {
	if r.admin != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = r.admin.Shutdown(ctx)
		r.admin.Close()
	}
}

// startError maps a failed start-up to an exit code and a hint.
func startError(err error) error {
	var (
		hint  string
		opErr *net.OpError
		ue    *keyring.UnlockError
	)
	switch {
	case errors.Is(err, config.ErrInvalid):
		return cli.WithHint(err, cli.ExitUsage, "")
	case errors.Is(err, control.ErrConflict):
		return cli.WithHint(err, cli.ExitUsage, "make the configuration and [admin] state_file agree: write the change into the configuration, or edit the state file (docs/control.md)")
	case errors.Is(err, keyring.ErrDenied):
		return cli.WithHint(err, cli.ExitDenied, "an operator denied this start-up at the gate; ask why before starting again (the gate's audit log has who and when)")
	case errors.Is(err, keyring.ErrCodeMismatch):
		return cli.WithHint(err, exitUnlock, "something between this host and the gate changed a recovery: tell the gate's operator not to approve it; reach the gate over a path you trust (https), then start again")
	case errors.As(err, &ue) && errors.Is(err, keyring.ErrGateFull) && !errors.Is(err, keyring.ErrUnreachable):
		return cli.WithHint(err, exitUnlock, "the gate is refusing new requests because too many are pending (flooded, or many hosts at once); ask its operator to clear them (seal pending), then start again")
	case errors.As(err, &ue):
		return cli.WithHint(err, exitUnlock, unlockHint(ue))
	case errors.Is(err, vault.ErrPlaintextRefused):
		hint = "file: keys are for development only: set allow_plaintext_keys = true, or seal the key with 'seal encrypt'"
	case errors.Is(err, vault.ErrUnprotectedMemory):
		hint = unprotectedHint()
	case errors.Is(err, vault.ErrKeyMismatch):
		hint = "each [[key]]'s cert must be the certificate of its source's key"
	case errors.Is(err, vault.ErrUnavailable):
		hint = "this build or platform cannot open that kind of key"
	case errors.As(err, &opErr) && opErr.Op == "listen":
		hint = "another process may hold that address, or binding it needs privileges; change the listener's listen (or use systemd:NAME socket activation)"
	}
	return cli.WithHint(err, cli.ExitFailure, hint)
}

// Hints for a key that could not be opened, by cause: the first entry
// whose error the failure wraps wins. The gate's causes (denied, code
// mismatch, full) are startError's, since any key's counts.
var unlockHints = []struct {
	cause error
	hint  string
}{
	{vault.ErrPINRefused, "check the PIN of the pkcs11: key named above (its pin-source file, or the PIN sealed in its pin-source=sealed: file); a locked PIN must be reset with the token's SO PIN"},
	{vault.ErrModule, "check the module-path of the pkcs11: key named above: the vendor's PKCS#11 library (.so), readable by the service, with the libraries it loads installed"},
	{vault.ErrTokenNotFound, "no token matches the pkcs11: key named above: compare its token=/serial=/slot-id= with 'pkcs11-tool --module MODULE --list-token-slots', check that the token is present and (SoftHSM) that the service reads the right SOFTHSM2_CONF"},
	{vault.ErrObjectNotFound, "the token has no such key: compare the object=/id= of the pkcs11: key named above with 'pkcs11-tool --module MODULE --login --list-objects'; the private key needs a CKA_ID shared with a public-key object (or a certificate) on the token"},
	{vault.ErrKeyMismatch, "each [[key]]'s cert must be the certificate of its source's key"},
	{vault.ErrNotTicketSecret, ticketSecretHint},
	{keyring.ErrUnreachable, "check that this host reaches the Tang servers named above (curl URL/adv); [unlock] timeout sets how long start-up waits"},
	{keyring.ErrSessionLost, "the gate lost the approval request (restarted?); start again and approve the new code"},
}

// unlockHint names the cause of the key that ended start-up (the first
// of ue: a key that failed for good comes before the keys abandoned
// because of it), so that a PIN failure never gets a Tang hint.
func unlockHint(ue *keyring.UnlockError) string {
	if len(ue.Locked) == 0 {
		return ""
	}
	first := ue.Locked[0].Err
	for _, h := range unlockHints {
		if errors.Is(first, h.cause) {
			return h.hint
		}
	}
	if ue.After > 0 {
		return "[unlock] timeout ran out: if a gate holds the recoveries, approve the code logged above in time (seal approve CODE); else raise [unlock] timeout"
	}
	return ""
}

// unprotectedHint says how to get a binary that erases a key's copies.
func unprotectedHint() string {
	if !secmem.Built() {
		return "build sealproxy with 'make build' (GOEXPERIMENT=runtimesecret) or install the release package; " +
			"allow_unprotected_memory = true accepts the copies (development only)"
	}
	return "sealed keys are protected on linux/amd64 and linux/arm64 only; use a pkcs11: or winstore: key here, " +
		"or set allow_unprotected_memory = true to accept the copies"
}

// newLogger makes the daemon's logger: the handler of format and level
// writing to w, or the one to hooks.log (nil: w).
func newLogger(w io.Writer, format, level string, to func(func(io.Writer) slog.Handler) slog.Handler) (*slog.Logger, error) {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(level)); err != nil {
		return nil, cli.Usage("--log-level %q: want debug, info, warn or error", level)
	}
	opts := &slog.HandlerOptions{Level: lvl}
	var handler func(io.Writer) slog.Handler
	switch format {
	case "text":
		handler = func(w io.Writer) slog.Handler { return slog.NewTextHandler(w, opts) }
	case "json":
		handler = func(w io.Writer) slog.Handler { return slog.NewJSONHandler(w, opts) }
	default:
		return nil, cli.Usage("--log-format %q: want text or json", format)
	}
	if to != nil {
		return slog.New(to(handler)), nil
	}
	return slog.New(handler(w)), nil
}
