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
	"runtime/debug"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/sealproxy/sealproxy/cmd/internal/cli"
	"github.com/sealproxy/sealproxy/proxy"
	"github.com/sealproxy/sealproxy/proxy/config"
	"github.com/sealproxy/sealproxy/vault"
)

const usage = `usage: sealproxy COMMAND [flags]

commands:
  run --config FILE      serve the listeners of FILE
  check --config FILE    validate FILE, its certificates and CA bundles (no key is opened)
  version                print the version
`

func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return cli.Usage("no command given")
	}
	switch cmd, rest := args[0], args[1:]; cmd {
	case "run":
		return cmdRun(ctx, rest, stderr)
	case "check":
		return cmdCheck(ctx, rest, stdout)
	case "version":
		fmt.Fprintln(stdout, version())
		return nil
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	default:
		return cli.WithHint(fmt.Errorf("unknown command %q", cmd), cli.ExitUsage,
			"commands are run, check and version; run 'sealproxy help'")
	}
}

func version() string {
	v := "(devel)"
	goVersion := ""
	if bi, ok := debug.ReadBuildInfo(); ok {
		if bi.Main.Version != "" {
			v = bi.Main.Version
		}
		goVersion = bi.GoVersion
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

func cmdCheck(ctx context.Context, args []string, stdout io.Writer) error {
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
	fmt.Fprintf(stdout, "%s: configuration is valid: %d listener(s), %d key(s) (keys were not opened)\n",
		path, len(cfg.Listeners), len(cfg.Keys))
	return nil
}

func cmdRun(ctx context.Context, args []string, stderr io.Writer) error {
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
		if err := vault.Harden(vault.HardenOptions{Keys: sealed}); err != nil {
			return cli.WithHint(err, cli.ExitFailure, "")
		}
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	metrics := proxy.NewMetrics(reg)
	keys := newKeyStore(log, metrics)
	defer keys.closeAll()
	first := cfg
	loader := func(ctx context.Context) (*proxy.Plan, error) {
		c := first
		first = nil
		if c == nil { // a reload re-reads the file
			var err error
			if c, err = config.Load(path); err != nil {
				return nil, err
			}
		}
		l := keys.newLoad()
		listeners, err := proxy.Build(ctx, c, l.opener(c), log)
		if err != nil {
			l.discarded()
			return nil, err
		}
		return &proxy.Plan{Listeners: listeners, MaxConns: c.MaxConnections,
			Applied: l.applied, Discarded: l.discarded}, nil
	}

	group := proxy.NewGroup(loader, &proxy.Options{
		Log: log, Metrics: metrics, ShutdownTimeout: cfg.ShutdownTimeout,
	})

	if cfg.Admin.Listen != "" {
		ln, err := proxy.Listen(cfg.Admin.Listen)
		if err != nil {
			return cli.WithHint(fmt.Errorf("admin listener: %w", err), cli.ExitFailure, "is another sealproxy running? change [admin] listen")
		}
		admin := &http.Server{Handler: proxy.AdminHandler(reg, group.Ready), ReadHeaderTimeout: 10 * time.Second}
		go func() { _ = admin.Serve(ln) }()
		defer admin.Close()
		log.Info("admin listening", "addr", ln.Addr().String())
	}

	if err := group.Run(ctx); err != nil {
		var (
			hint  string
			opErr *net.OpError
		)
		switch {
		case errors.Is(err, vault.ErrPlaintextRefused):
			hint = "file: keys are for development only: set allow_plaintext_keys = true, or seal the key with 'seal encrypt'"
		case errors.Is(err, vault.ErrKeyMismatch):
			hint = "each [[key]]'s cert must be the certificate of its source's key"
		case errors.Is(err, vault.ErrUnavailable):
			hint = "this build or platform cannot open that kind of key"
		case errors.As(err, &opErr) && opErr.Op == "listen":
			hint = "another process may hold that address, or binding it needs privileges; change the listener's listen"
		}
		return cli.WithHint(err, cli.ExitFailure, hint)
	}
	log.Info("stopped")
	return nil
}

func countSealed(cfg *config.Config) int {
	n := 0
	for _, k := range cfg.Keys {
		if strings.HasPrefix(k.Source, "sealed:") {
			n++
		}
	}
	return n
}

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
