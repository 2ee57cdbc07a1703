package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/windows/svc"
	"golang.org/x/sys/windows/svc/eventlog"
	"golang.org/x/sys/windows/svc/mgr"

	"github.com/sealproxy/sealproxy/cmd/internal/cli"
	events "github.com/sealproxy/sealproxy/cmd/internal/eventlog"
	"github.com/sealproxy/sealproxy/proxy/config"
)

// defaultServiceName is the name `sealproxy service install` registers.
const defaultServiceName = "sealproxy"

// startWaitHint is how long the SCM should wait between two progress
// reports while keys are unlocked; each status line is a new checkpoint.
const startWaitHint = 30 * time.Second

// runProcess runs as a Windows service when the SCM started the process,
// otherwise in the foreground. `service install` writes the explicit
// `service run` into the service's command line; the detection is only a
// fallback for services installed before that (`sealproxy run ...`):
// svc.IsWindowsService requires session 0, and Wine (and possibly other
// hosts) run services elsewhere, where the detection says no and the SCM
// then gives up waiting for the service to report (error 1053).
func runProcess() int {
	if len(os.Args) > 2 && os.Args[1] == "service" && os.Args[2] == "run" {
		name, args, err := parseServiceRun(os.Args[3:])
		if err != nil {
			return cli.Report("sealproxy", err, os.Stderr)
		}
		return runService(name, args)
	}
	if ok, err := svc.IsWindowsService(); err == nil && ok {
		return runService(defaultServiceName, os.Args[1:])
	}
	return runInteractive()
}

// serviceArgs is the command line `service install` registers: the
// explicit mode, the name (the Event Log source) and the configuration.
func serviceArgs(name, config string) []string {
	return []string{"service", "run", "--name", name, "--config", config}
}

// parseServiceRun reads the arguments of `service run` (what the SCM
// starts): the service's name, which is also its Event Log source, and the
// configuration. It returns the command line the service runs.
func parseServiceRun(args []string) (name string, run []string, err error) {
	fs := flag.NewFlagSet("service run", flag.ContinueOnError)
	n := fs.String("name", defaultServiceName, "service `NAME`")
	path := fs.String("config", "", "configuration `FILE`")
	rest, err := cli.Parse(fs, args)
	if err != nil {
		return "", nil, err
	}
	if len(rest) > 0 {
		return "", nil, cli.Usage("service run: unexpected argument %q", rest[0])
	}
	if *path == "" {
		return "", nil, cli.WithHint(errors.New("service run: no configuration given"), cli.ExitUsage,
			"the service manager starts this; reinstall the service with 'sealproxy service install --config FILE'")
	}
	return *n, []string{"run", "--config", *path}, nil
}

const serviceUsage = `usage: sealproxy service COMMAND [--name NAME] [--config FILE]

  install --config FILE   register the service (automatic start) to run FILE, and its Event Log source
  uninstall               remove the service and its Event Log source
  start                   start the service (its keys are unlocked before it reports running)
  stop                    stop the service: stop accepting, drain up to shutdown_timeout
  run --config FILE       what the service manager starts (install writes it into the service's command line)
`

// cmdService manages the Windows service.
func cmdService(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, serviceUsage)
		return cli.Usage("service: no command given")
	}
	sub := args[0]
	fs := flag.NewFlagSet("service "+sub, flag.ContinueOnError)
	name := fs.String("name", defaultServiceName, "service `NAME`")
	path := fs.String("config", "", "configuration `FILE` (install)")
	rest, err := cli.Parse(fs, args[1:])
	if err != nil {
		return err
	}
	if len(rest) > 0 {
		return cli.Usage("service %s: unexpected argument %q", sub, rest[0])
	}
	switch sub {
	case "install":
		return installService(*name, *path, stdout)
	case "uninstall":
		return uninstallService(*name, stdout)
	case "start":
		return controlService(ctx, *name, true, stdout)
	case "stop":
		return controlService(ctx, *name, false, stdout)
	case "run":
		// runProcess takes `service run` before the command line gets here.
		return cli.WithHint(errors.New("service run: only the service manager runs this"), cli.ExitUsage,
			"run in the foreground with 'sealproxy run --config FILE', or start the service with 'sealproxy service start'")
	}
	fmt.Fprint(stderr, serviceUsage)
	return cli.Usage("service: unknown command %q (install, uninstall, start or stop)", sub)
}

func installService(name, path string, stdout io.Writer) error {
	if path == "" {
		return cli.WithHint(errors.New("service install: no configuration given"), cli.ExitUsage,
			`pass --config C:\ProgramData\sealproxy\sealproxy.toml`)
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return err
	}
	if _, err := config.Load(abs); err != nil {
		return cli.WithHint(err, cli.ExitUsage, "fix the configuration before installing the service")
	}
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	m, err := connectManager()
	if err != nil {
		return err
	}
	defer m.Disconnect()
	if s, err := m.OpenService(name); err == nil {
		s.Close()
		return cli.WithHint(fmt.Errorf("service %s already exists", name), cli.ExitFailure, "sealproxy service uninstall --name "+name)
	}
	s, err := m.CreateService(name, exe, mgr.Config{
		DisplayName: "sealproxy (" + name + ")",
		Description: "TLS termination proxy with sealed private keys",
		StartType:   mgr.StartAutomatic,
	}, serviceArgs(name, abs)...)
	if err != nil {
		return fmt.Errorf("creating service %s: %w", name, err)
	}
	defer s.Close()
	if err := eventlog.InstallAsEventCreate(name, eventlog.Error|eventlog.Warning|eventlog.Info); err != nil {
		_ = s.Delete()
		return fmt.Errorf("registering the Event Log source %s: %w", name, err)
	}
	fmt.Fprintf(stdout, "installed service %s: %s %s\n", name, exe, strings.Join(serviceArgs(name, abs), " "))
	return nil
}

// connectManager connects to the service manager, which needs an
// elevated prompt.
func connectManager() (*mgr.Mgr, error) {
	m, err := mgr.Connect()
	if err != nil {
		return nil, cli.WithHint(fmt.Errorf("connecting to the service manager: %w", err), cli.ExitFailure, "run from an elevated (administrator) prompt")
	}
	return m, nil
}

// openService opens the service name; the caller disconnects m and
// closes s.
func openService(name string) (m *mgr.Mgr, s *mgr.Service, err error) {
	if m, err = connectManager(); err != nil {
		return nil, nil, err
	}
	if s, err = m.OpenService(name); err != nil {
		m.Disconnect()
		return nil, nil, fmt.Errorf("service %s: %w", name, err)
	}
	return m, s, nil
}

func uninstallService(name string, stdout io.Writer) error {
	m, s, err := openService(name)
	if err != nil {
		return err
	}
	defer m.Disconnect()
	defer s.Close()
	if err := s.Delete(); err != nil {
		return fmt.Errorf("deleting service %s: %w", name, err)
	}
	if err := eventlog.Remove(name); err != nil {
		return fmt.Errorf("removing the Event Log source %s: %w", name, err)
	}
	fmt.Fprintf(stdout, "uninstalled service %s\n", name)
	return nil
}

// controlService starts or stops the service and waits until the SCM
// reports it running or stopped.
func controlService(ctx context.Context, name string, start bool, stdout io.Writer) error {
	m, s, err := openService(name)
	if err != nil {
		return err
	}
	defer m.Disconnect()
	defer s.Close()
	want := svc.Running
	if start {
		if err := s.Start(); err != nil {
			return fmt.Errorf("starting service %s: %w", name, err)
		}
	} else {
		want = svc.Stopped
		if _, err := s.Control(svc.Stop); err != nil {
			return fmt.Errorf("stopping service %s: %w", name, err)
		}
	}
	t := time.NewTicker(500 * time.Millisecond)
	defer t.Stop()
	for {
		st, err := s.Query()
		if err != nil {
			return fmt.Errorf("service %s: %w", name, err)
		}
		if st.State == want {
			fmt.Fprintf(stdout, "service %s is %s\n", name, map[bool]string{true: "running", false: "stopped"}[start])
			return nil
		}
		if start && st.State == svc.Stopped {
			return cli.WithHint(fmt.Errorf("service %s stopped while starting (exit code %d)", name, st.ServiceSpecificExitCode),
				cli.ExitFailure, "the Event Log (source "+name+") says why")
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}

// runService runs the command line args (`run --config FILE`) as the
// service name, logging to the Event Log under that name, and returns its
// exit code.
func runService(name string, args []string) int {
	elog, err := eventlog.Open(name)
	if err != nil {
		return cli.ExitFailure
	}
	defer elog.Close()
	h := &serviceHandler{args: args, log: elog}
	if err := svc.Run(name, h); err != nil {
		err = cli.WithHint(fmt.Errorf("running as service %s: %w", name, err), cli.ExitFailure,
			"only the service manager runs 'service run'; start it with 'sealproxy service start --name "+name+"'")
		errLine, _, _ := cli.Explain("sealproxy", err)
		_ = elog.Error(1, errLine)
		return cli.Report("sealproxy", err, os.Stderr)
	}
	return h.code
}

// serviceHandler is the SCM's view of `sealproxy run`: start pending
// (with a new checkpoint for each progress line) while keys are
// unlocked, running once ready, stop pending while draining.
type serviceHandler struct {
	args []string
	log  *eventlog.Log
	code int
}

func (h *serviceHandler) Execute(_ []string, r <-chan svc.ChangeRequest, changes chan<- svc.Status) (bool, uint32) {
	var (
		mu         sync.Mutex
		current    = svc.Status{State: svc.StartPending, WaitHint: uint32(startWaitHint / time.Millisecond)}
		checkpoint uint32
		over       bool
	)
	report := func(s svc.Status) {
		mu.Lock()
		defer mu.Unlock()
		if over {
			return
		}
		current = s
		changes <- s
	}
	report(current)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	d := &daemon{confine: true}
	hooks := runHooks{
		status: func(string) {
			mu.Lock()
			pending := current.State == svc.StartPending
			checkpoint++
			cp := checkpoint
			mu.Unlock()
			if pending {
				report(svc.Status{State: svc.StartPending, CheckPoint: cp, WaitHint: uint32(startWaitHint / time.Millisecond)})
			}
		},
		ready: func() {
			report(svc.Status{State: svc.Running, Accepts: svc.AcceptStop | svc.AcceptShutdown})
		},
		stopped: func(drain time.Duration) {
			report(svc.Status{State: svc.StopPending, WaitHint: uint32((drain + 10*time.Second) / time.Millisecond)})
		},
		log: func(format func(io.Writer) slog.Handler) slog.Handler { return events.NewHandler(h.log, format) },
	}
	done := make(chan error, 1)
	if len(h.args) == 0 || h.args[0] != "run" {
		done <- cli.Usage("the service runs 'sealproxy run --config FILE'; got %q: reinstall it with 'sealproxy service install'", h.args)
	} else {
		go func() { done <- d.serve(ctx, h.args[1:], io.Discard, hooks) }()
	}
	for {
		select {
		case err := <-done:
			h.code = events.Report(h.log, "sealproxy", err)
			mu.Lock()
			over = true
			mu.Unlock()
			if h.code != 0 {
				return true, uint32(h.code)
			}
			return false, 0
		case c := <-r:
			switch c.Cmd {
			case svc.Interrogate:
				mu.Lock()
				s := current
				mu.Unlock()
				changes <- s
			case svc.Stop, svc.Shutdown:
				cancel()
			}
		}
	}
}
