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
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/sealproxy/sealproxy/cmd/internal/cli"
	"github.com/sealproxy/sealproxy/cmd/internal/sandbox"
	"github.com/sealproxy/sealproxy/internal/secmem"
	"github.com/sealproxy/sealproxy/proxy"
	"github.com/sealproxy/sealproxy/proxy/config"
	"github.com/sealproxy/sealproxy/unlock/tang"
	"github.com/sealproxy/sealproxy/vault"
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
func (d *daemon) serve(ctx context.Context, args []string, stderr io.Writer, hooks runHooks) error {
	var logFormat, logLevel string
	path, err := configFlag("run", args, func(fs *flag.FlagSet) {
		fs.StringVar(&logFormat, "log-format", "text", "log format: text or json")
		fs.StringVar(&logLevel, "log-level", "info", "log level: debug, info, warn or error")
	})
	if err != nil {
		return err
	}
	log, err := newLogger(stderr, logFormat, logLevel)
	if err != nil {
		return err
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
		if err := vault.Harden(vault.HardenOptions{Keys: sealed}); err != nil {
			return cli.WithHint(err, cli.ExitFailure, "")
		}
	}

	sd := notifier{log: log}
	status := func(s string) {
		sd.status(s)
		if hooks.status != nil {
			hooks.status(s)
		}
	}
	watchdog, stopWatchdog := sd.watchdog()
	defer stopWatchdog()

	sockets := d.sockets
	if sockets == nil {
		sockets = systemdSockets
	}
	passed := sockets()
	var confined atomic.Pointer[sandbox.Policy] // once applied
	listen := listenFunc(passed)
	for name := range passed {
		if !usesSocket(cfg, name) {
			log.Warn("systemd passed a socket no listener uses (listen = \"systemd:NAME\")", "name", name)
		}
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	metrics := proxy.NewMetrics(reg)
	keys := newKeyStore(log, metrics)
	defer keys.closeAll()
	st := newStatus(status)
	first := cfg
	load := func(ctx context.Context) (*proxy.Plan, error) {
		c := first
		first = nil
		if c == nil { // a reload re-reads the file
			var err error
			if c, err = config.Load(path); err != nil {
				return nil, err
			}
		}
		for _, w := range c.Warnings {
			log.Warn("configuration weaker than the defaults", "err", w)
		}
		l := keys.newLoad()
		if err := l.openAll(ctx, c, st); err != nil {
			l.discarded()
			return nil, err
		}
		listeners, err := proxy.Build(ctx, c, l.opener(c), log)
		if err != nil {
			l.discarded()
			return nil, err
		}
		return &proxy.Plan{Listeners: listeners, MaxConns: c.MaxConnections,
			Applied: l.applied, Discarded: l.discarded}, nil
	}
	loader := func(ctx context.Context) (*proxy.Plan, error) {
		plan, err := load(ctx)
		return plan, outsideSandbox(confined.Load(), err)
	}
	group := proxy.NewGroup(loader, &proxy.Options{
		Log: log, Metrics: metrics, ShutdownTimeout: cfg.ShutdownTimeout,
		Listen: func(addr string) (net.Listener, error) {
			ln, err := listen(addr)
			return ln, outsideSandbox(confined.Load(), err)
		},
	})

	gctx, stopGroup := context.WithCancel(ctx)
	defer stopGroup()
	stopping := false
	stop := func(why string) {
		if stopping {
			return
		}
		stopping = true
		log.Info("stopping: no new connections; draining", "why", why, "shutdown_timeout", cfg.ShutdownTimeout)
		sd.stopping()
		if hooks.stopped != nil {
			hooks.stopped(cfg.ShutdownTimeout)
		}
		stopGroup()
	}

	// Start: unlock every key and bind every listener, still answering
	// signals.
	status(fmt.Sprintf("starting: opening %d key(s)", len(usedKeys(cfg))))
	started := make(chan error, 1)
	go func() { started <- group.Start(gctx) }()
	ctxDone := ctx.Done()
	for waiting := true; waiting; {
		select {
		case err := <-started:
			if err != nil {
				if stopping {
					log.Info("stopped before start-up was complete", "err", err)
					return nil
				}
				return startError(err)
			}
			waiting = false
		case sig := <-d.signals:
			if isReload(sig) {
				log.Info("reload signal ignored: still starting", "signal", sig.String())
				continue
			}
			if stopping {
				return errForced
			}
			stop(sig.String())
		case <-ctxDone:
			ctxDone = nil
			stop("context ended")
		case <-watchdog:
			sd.ping()
		}
	}

	// Reloads run one at a time, away from the signal loop, so that a
	// stop signal is answered while a reload waits for a Tang server.
	reloads := make(chan chan error, 1)
	reload := func(ctx context.Context) error {
		reply := make(chan error, 1)
		select {
		case reloads <- reply:
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
	go func() {
		for {
			select {
			case <-gctx.Done():
				return
			case reply := <-reloads:
				sd.reloading()
				if hooks.status != nil {
					hooks.status("reloading")
				}
				err := group.Reload(gctx)
				line := fmt.Sprintf("serving %d listener(s)", len(group.Listeners()))
				if err != nil {
					line += "; last reload failed: " + err.Error()
				}
				if gctx.Err() == nil {
					sd.ready(line)
				}
				reply <- err
			}
		}
	}()

	if cfg.Admin.Listen != "" && !stopping {
		ln, err := listen(cfg.Admin.Listen)
		if err != nil {
			stop("admin listener failed")
			_ = group.Wait()
			return cli.WithHint(fmt.Errorf("admin listener: %w", err), cli.ExitFailure, "is another sealproxy running? change [admin] listen")
		}
		var reloadFn func(context.Context) error
		if cfg.Admin.Reload {
			reloadFn = reload
		}
		admin := &http.Server{Handler: proxy.AdminHandler(reg, group.Ready, reloadFn), ReadHeaderTimeout: 10 * time.Second}
		go func() { _ = admin.Serve(ln) }()
		defer admin.Close()
		log.Info("admin listening", "addr", ln.Addr().String(), "reload", cfg.Admin.Reload)
	}

	// Confine before READY: every key is open, every listener bound.
	if d.confine && !stopping {
		p, err := confine(log, cfg)
		if err != nil {
			stop("sandbox not applied")
			_ = group.Wait()
			return err
		}
		confined.Store(p)
	}

	if !stopping {
		log.Info("ready", "listeners", len(group.Listeners()))
		sd.ready(fmt.Sprintf("serving %d listener(s)", len(group.Listeners())))
		if hooks.ready != nil {
			hooks.ready()
		}
	}

	done := make(chan error, 1)
	go func() { done <- group.Wait() }()
	for {
		select {
		case err := <-done:
			if err != nil {
				sd.stopping()
				return cli.WithHint(err, cli.ExitFailure, "")
			}
			log.Info("stopped")
			return nil
		case sig := <-d.signals:
			if isReload(sig) {
				if stopping {
					continue
				}
				log.Info("reloading", "signal", sig.String())
				select {
				case reloads <- make(chan error, 1):
				default:
					log.Info("a reload is already waiting; this signal joins it")
				}
				continue
			}
			if stopping {
				log.Warn("second stop signal: cutting the drain short", "signal", sig.String())
				return errForced
			}
			stop(sig.String())
		case <-ctxDone:
			ctxDone = nil
			stop("context ended")
		case <-watchdog:
			sd.ping()
		}
	}
}

// startError maps a failed start-up to an exit code and a hint.
func startError(err error) error {
	var (
		hint  string
		opErr *net.OpError
		ue    *UnlockError
	)
	switch {
	case errors.Is(err, config.ErrInvalid):
		return cli.WithHint(err, cli.ExitUsage, "")
	case errors.Is(err, tang.ErrDenied):
		return cli.WithHint(err, cli.ExitDenied, "an operator denied this start-up at the gate; ask why before starting again (the gate's audit log has who and when)")
	case errors.Is(err, tang.ErrCodeMismatch):
		return cli.WithHint(err, exitUnlock, "something between this host and the gate changed a recovery: tell the gate's operator not to approve it; reach the gate over a path you trust (https), then start again")
	case errors.As(err, &ue) && errors.Is(err, tang.ErrGateFull) && !errors.Is(err, tang.ErrUnreachable):
		return cli.WithHint(err, exitUnlock, "the gate is refusing new requests because too many are pending (flooded, or many hosts at once); ask its operator to clear them (seal pending), then start again")
	case errors.As(err, &ue) && errors.Is(err, vault.ErrPINRefused):
		return cli.WithHint(err, exitUnlock, "check the PIN of the pkcs11: key named above (its pin-source file); a locked PIN must be reset with the token's SO PIN")
	case errors.As(err, &ue):
		return cli.WithHint(err, exitUnlock, "check that this host reaches the Tang servers named above (curl URL/adv); [unlock] timeout sets how long start-up waits")
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

// unprotectedHint says how to get a binary that erases a key's copies.
func unprotectedHint() string {
	if !secmem.Built() {
		return "build sealproxy with 'make build' (GOEXPERIMENT=runtimesecret) or install the release package; " +
			"allow_unprotected_memory = true accepts the copies (development only)"
	}
	return "sealed keys are protected on linux/amd64 and linux/arm64 only; use a pkcs11: or winstore: key here, " +
		"or set allow_unprotected_memory = true to accept the copies"
}

// newLogger makes the daemon's logger.
func newLogger(w io.Writer, format, level string) (*slog.Logger, error) {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(level)); err != nil {
		return nil, cli.Usage("--log-level %q: want debug, info, warn or error", level)
	}
	opts := &slog.HandlerOptions{Level: lvl}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, cli.Usage("--log-format %q: want text or json", format)
}
