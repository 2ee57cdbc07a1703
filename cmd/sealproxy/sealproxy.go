package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime/debug"
	"strings"

	"github.com/sealproxy/sealproxy/cmd/internal/cli"
	"github.com/sealproxy/sealproxy/proxy"
	"github.com/sealproxy/sealproxy/proxy/config"
	"github.com/sealproxy/sealproxy/vault/keyref"
)

const usage = `usage: sealproxy COMMAND [flags]

commands:
  run --config FILE      open every key, then serve the listeners of FILE
  check --config FILE    validate FILE, its certificates and CA bundles (no key is opened)
  reload --admin ADDR    ask the running sealproxy to reload and wait for the outcome
                         (ADDR is its [admin] listen, with reload = true)
  upgrade --admin ADDR   start the binary at the running one's path as its successor
                         (it takes over the sockets; ADDR's [admin] has upgrade = true)
  ctl --admin unix:PATH VERB
                         change keys and certificates of the running sealproxy
                         (keys, set-key, commit, abort, attach, detach, remove-key)
  service COMMAND        install, uninstall, start or stop the Windows service
  version                print the version

exit codes: 0 stopped cleanly, 1 runtime failure, 2 usage or configuration
error, 4 an operator denied a key's recovery, 5 keys could not be unlocked
(Tang unreachable or no approval before [unlock] timeout)
`

// run is the whole command as tests call it: no signals, the service
// manager's environment as the process has it.
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	return (&daemon{}).run(ctx, args, stdin, stdout, stderr)
}

// daemon is what `sealproxy run` takes from the process around it; the
// zero value has no signals and systemd's sockets.
type daemon struct {
	// signals delivers the process's signals: SIGHUP reloads, SIGTERM and
	// SIGINT stop (a second one forces the exit). Nil: none arrive.
	signals <-chan os.Signal
	// sockets returns the sockets the service manager passed, by name;
	// nil means systemd's (LISTEN_FDS, LISTEN_FDNAMES).
	sockets func() map[string][]*os.File
	// confine applies [sandbox] once started. A sandbox cannot be left,
	// so only the process's own daemon sets it, never an in-process test.
	confine bool
	// upgrades lets SIGUSR2 and POST /upgrade start a successor (the
	// executable, with the process's arguments and sockets): only the
	// process's own daemon sets it.
	upgrades bool
}

func (d *daemon) run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return cli.Usage("no command given")
	}
	switch cmd, rest := args[0], args[1:]; cmd {
	case "run":
		return d.cmdRun(ctx, rest, stderr)
	case "check":
		return cmdCheck(d.untilSignal(ctx), rest, stdout, stderr)
	case "reload":
		return cmdReload(d.untilSignal(ctx), rest, stdout)
	case "upgrade":
		return cmdUpgrade(d.untilSignal(ctx), rest, stdout)
	case "ctl":
		return cmdCtl(d.untilSignal(ctx), rest, stdout, stderr)
	case "service":
		return cmdService(ctx, rest, stdout, stderr)
	case "version":
		fmt.Fprintln(stdout, version())
		return nil
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	default:
		return cli.WithHint(fmt.Errorf("unknown command %q", cmd), cli.ExitUsage,
			"commands are run, check, reload, upgrade, ctl, service and version; run 'sealproxy help'")
	}
}

// untilSignal returns ctx, also ended by the first signal.
func (d *daemon) untilSignal(ctx context.Context) context.Context {
	if d.signals == nil {
		return ctx
	}
	ctx, cancel := context.WithCancel(ctx)
	go func() {
		select {
		case <-d.signals:
			cancel()
		case <-ctx.Done():
		}
	}()
	return ctx
}

// buildVersion is stamped by the release build (-ldflags -X
// main.buildVersion=VERSION, tools/release); otherwise the module's
// version from the build information is shown.
var buildVersion string

func version() string {
	v := "(devel)"
	goVersion := ""
	if bi, ok := debug.ReadBuildInfo(); ok {
		if bi.Main.Version != "" {
			v = bi.Main.Version
		}
		goVersion = bi.GoVersion
	}
	if buildVersion != "" {
		v = buildVersion
	}
	return strings.TrimSpace("sealproxy " + v + " " + goVersion)
}

// configFlag parses the flags every config-reading command shares.
func configFlag(name string, args []string, more func(*flag.FlagSet)) (string, error) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	path := fs.String("config", "", "configuration `FILE` (TOML)")
	if more != nil {
		more(fs)
	}
	rest, err := cli.Parse(fs, args)
	if err != nil {
		return "", err
	}
	if len(rest) > 0 {
		return "", cli.Usage("%s: unexpected argument %q", name, rest[0])
	}
	if *path == "" {
		return "", cli.WithHint(fmt.Errorf("%s: no configuration given", name), cli.ExitUsage,
			"pass --config /etc/sealproxy/sealproxy.toml")
	}
	return *path, nil
}

func loadConfig(path string, checking bool) (*config.Config, error) {
	cfg, err := config.Load(path)
	if errors.Is(err, config.ErrInvalid) {
		hint := "fix the configuration; 'sealproxy check --config " + path + "' validates it without opening any key"
		if checking {
			hint = ""
		}
		return nil, cli.WithHint(err, cli.ExitUsage, hint)
	}
	if err != nil {
		return nil, cli.WithHint(err, cli.ExitUsage, "")
	}
	return cfg, nil
}

func cmdCheck(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	path, err := configFlag("check", args, nil)
	if err != nil {
		return err
	}
	cfg, err := loadConfig(path, true)
	if err != nil {
		return err
	}
	if _, err := proxy.Build(ctx, cfg, nil, nil); err != nil {
		return cli.WithHint(err, cli.ExitUsage, "certificate and CA paths are relative to the configuration file's directory")
	}
	if _, err := proxy.BuildPool(ctx, cfg, nil, nil); err != nil {
		return cli.WithHint(err, cli.ExitUsage, "certificate and CA paths are relative to the configuration file's directory")
	}
	for _, w := range cfg.Warnings {
		fmt.Fprintf(stderr, "sealproxy: warning: %s\n", w)
	}
	fmt.Fprintf(stdout, "%s: configuration is valid: %d listener(s), %d key(s) (keys were not opened)\n",
		path, len(cfg.Listeners), len(cfg.Keys))
	return nil
}

// cmdReload is `sealproxy reload`: POST /reload on the admin listener,
// exit 0 only once the daemon applied the new configuration. A unit's
// ExecReload runs it, so that `systemctl reload` fails when the reload
// does.
func cmdReload(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("reload", flag.ContinueOnError)
	addr := fs.String("admin", "", "the daemon's [admin] listen `ADDR` (unix:PATH or host:port)")
	rest, err := cli.Parse(fs, args)
	if err != nil {
		return err
	}
	if len(rest) > 0 {
		return cli.Usage("reload: unexpected argument %q", rest[0])
	}
	if *addr == "" {
		return cli.WithHint(errors.New("reload: no admin address given"), cli.ExitUsage,
			"pass --admin unix:/run/sealproxy/admin.sock, the [admin] listen of the configuration")
	}
	err = proxy.RequestReload(ctx, *addr)
	switch {
	case err == nil:
		fmt.Fprintln(stdout, "reloaded")
		return nil
	case errors.Is(err, proxy.ErrReloadFailed):
		return cli.WithHint(err, cli.ExitFailure, "fix the configuration ('sealproxy check --config FILE' validates it) and reload again")
	case errors.Is(err, proxy.ErrReloadDisabled):
		return cli.WithHint(err, cli.ExitFailure, "set reload = true under [admin] and restart sealproxy once")
	}
	return cli.WithHint(err, cli.ExitFailure, "is sealproxy running, with [admin] listen = \""+*addr+"\" and reload = true in its configuration?")
}

// countSealed counts the keys recovered through unlock.
func countSealed(cfg *config.Config) int {
	n := 0
	for _, k := range cfg.Keys {
		if r, err := keyref.Parse(k.Source); err == nil && r.IsSealed() {
			n++
		}
	}
	if cfg.Tickets.Shared() { // sealed: only
		n++
	}
	return n
}

// countUnlocks counts the keys that recover a secret through unlock into
// locked memory: sealed keys and keys with a sealed PIN.
func countUnlocks(cfg *config.Config) int {
	n := 0
	for _, k := range cfg.Keys {
		if r, err := keyref.Parse(k.Source); err == nil && r.UsesUnlock() {
			n++
		}
	}
	if cfg.Tickets.Shared() { // sealed: only
		n++
	}
	// An ACME key holds its next key beside it during a swap, and its
	// account key.
	return n + 2*len(cfg.ACMEKeys())
}
