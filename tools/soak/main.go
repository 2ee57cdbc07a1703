//go:build linux

package main

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/sealproxy/sealproxy/testenv"
)

// Listener timeouts the scenarios depend on.
const (
	silentTimeout  = 3 * time.Second  // handshake_timeout of the silent listener
	hostileTimeout = 10 * time.Second // the hostile listener keeps the default
)

var allScenarios = []string{"hold", "flood", "silent", "slowread", "hostile"}

// params sizes the scenarios.
type params struct {
	Short        bool          `json:"short"`
	holdN        int           // concurrent connections held
	holdFor      time.Duration // how long they are held together
	floodL       int           // the flood listener's max_connections
	floodM       int           // handshakes beyond it
	floodFor     time.Duration // over this long
	floodDialers int
	silentS      int // silent connections (and a tenth more with a partial ClientHello)
	slowK        int // clients that do not read
	slowFor      time.Duration
	hostileReps  int    // connections per hostile input
	dialers      int    // concurrent dialers while opening connections
	realClients  int    // concurrent real clients during silent
	holdMode     string // the hold listener's mode: offload, or bridge to a TLS echo backend
}

func defaults(short bool) params {
	if short {
		return params{Short: true, holdN: 1000, holdFor: 2 * time.Second, floodL: 200, floodM: 2000, floodFor: 2 * time.Second,
			floodDialers: 50, silentS: 300, slowK: 50, slowFor: 4 * time.Second, hostileReps: 5, dialers: 32, realClients: 4}
	}
	return params{holdN: 9000, holdFor: 10 * time.Second, floodL: 200, floodM: 20000, floodFor: 10 * time.Second,
		floodDialers: 200, silentS: 2000, slowK: 200, slowFor: 10 * time.Second, hostileReps: 20, dialers: 64, realClients: 8}
}

// report is everything a run found; -json writes it.
type report struct {
	Command     string         `json:"command"`
	Started     time.Time      `json:"started"`
	GoVersion   string         `json:"go_version"`
	CPUs        int            `json:"cpus"`
	FDLimit     uint64         `json:"harness_fd_limit"`
	Params      map[string]any `json:"params"`
	Hold        *holdResult    `json:"hold,omitempty"`
	Flood       *floodResult   `json:"flood,omitempty"`
	Silent      *silentResult  `json:"silent,omitempty"`
	SlowRead    *slowResult    `json:"slowread,omitempty"`
	Hostile     *hostileResult `json:"hostile,omitempty"`
	ProxyAlive  bool           `json:"proxy_alive_at_end"`
	LogLines    int            `json:"proxy_log_lines"`
	LogLevels   map[string]int `json:"proxy_log_lines_by_level"`
	LogProblems []string       `json:"proxy_log_panics_or_fatals"`
	CleanStop   bool           `json:"proxy_clean_stop"`
	Problems    []string       `json:"problems"`
	Seconds     float64        `json:"seconds"`
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	r, err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	if err != nil {
		fmt.Fprintf(os.Stderr, "soak: error: %v\n", err)
		os.Exit(1)
	}
	if len(r.Problems) > 0 {
		fmt.Fprintf(os.Stderr, "soak: %d properties did not hold\n", len(r.Problems))
		os.Exit(1)
	}
}

// run parses args, runs the selected scenarios against a fresh sealproxy
// and returns the report; an error means the suite could not run at all.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) (*report, error) {
	fs := flag.NewFlagSet("soak", flag.ContinueOnError)
	fs.SetOutput(stderr)
	short := fs.Bool("short", false, "the short form (CI): 1,000 held, 2,000 flood, 300 silent, 50 slow readers")
	scenario := fs.String("scenario", "all", "comma-separated scenarios: "+strings.Join(allScenarios, ", ")+", or all")
	n := fs.Int("n", 0, "connections for hold (default 9,000; -short 1,000)")
	floodM := fs.Int("flood", 0, "handshakes for flood (default 20,000; -short 2,000)")
	silentS := fs.Int("silent", 0, "silent connections (default 2,000; -short 300)")
	slowK := fs.Int("slow", 0, "slow readers (default 200; -short 50)")
	slowFor := fs.Duration("slow-for", 0, "how long slowread holds its clients (default 10s; -short 4s)")
	jsonOut := fs.String("json", "", "also write every number to `FILE` as JSON")
	quiet := fs.Bool("q", false, "no progress lines on stderr")
	holdMode := fs.String("hold-mode", "offload", "the hold listener's mode: offload, or bridge (TLS to a TLS echo backend)")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	p := defaults(*short)
	if *holdMode != "offload" && *holdMode != "bridge" {
		return nil, fmt.Errorf("-hold-mode %q: want offload or bridge", *holdMode)
	}
	p.holdMode = *holdMode
	for _, o := range []struct{ flag, dst *int }{{n, &p.holdN}, {floodM, &p.floodM}, {silentS, &p.silentS}, {slowK, &p.slowK}} {
		if *o.flag < 0 {
			return nil, errors.New("counts must not be negative")
		}
		if *o.flag > 0 {
			*o.dst = *o.flag
		}
	}
	if *slowFor > 0 {
		p.slowFor = *slowFor
	}
	selected := allScenarios
	if *scenario != "all" {
		selected = strings.Split(*scenario, ",")
		for _, s := range selected {
			if !slices.Contains(allScenarios, s) {
				return nil, fmt.Errorf("-scenario %q: want one of %s, or all", s, strings.Join(allScenarios, ", "))
			}
		}
	}
	logf := func(format string, args ...any) {
		if !*quiet {
			fmt.Fprintf(stderr, "soak: %s %s\n", time.Now().Format("15:04:05.000"), fmt.Sprintf(format, args...))
		}
	}

	r := &report{Command: strings.TrimSpace("go run ./tools/soak " + strings.Join(args, " ")), Started: time.Now().UTC(),
		GoVersion: runtime.Version(), CPUs: runtime.NumCPU(), Params: map[string]any{
			"hold_connections": p.holdN, "hold_seconds": p.holdFor.Seconds(), "hold_mode": p.holdMode, "flood_limit": p.floodL,
			"flood_handshakes": p.floodM, "flood_seconds": p.floodFor.Seconds(), "flood_dialers": p.floodDialers,
			"silent_connections": p.silentS, "silent_handshake_timeout_seconds": silentTimeout.Seconds(),
			"slow_readers": p.slowK, "slow_seconds": p.slowFor.Seconds(), "hostile_per_input": p.hostileReps,
			"short": p.Short, "scenarios": selected,
		}}
	start := time.Now()
	var err error
	if r.FDLimit, err = raiseFDLimit(); err != nil {
		return nil, err
	}
	if need := uint64(2*max(p.holdN, p.silentS+p.silentS/10, p.floodL+p.floodDialers) + 500); r.FDLimit < need {
		return nil, fmt.Errorf("the fd limit %d is below the %d this run needs (two per connection): lower -n or raise the hard limit (ulimit -Hn)", r.FDLimit, need)
	}
	e, cleanup, err := setup(ctx, p, logf)
	if err != nil {
		return nil, err
	}
	defer cleanup()

	for _, s := range selected {
		t0 := time.Now()
		var (
			o   *outcome
			err error
		)
		switch s {
		case "hold":
			var x holdResult
			x, err = e.hold(ctx)
			r.Hold, o = &x, &x.outcome
		case "flood":
			var x floodResult
			x, err = e.flood(ctx)
			r.Flood, o = &x, &x.outcome
		case "silent":
			var x silentResult
			x, err = e.silent(ctx)
			r.Silent, o = &x, &x.outcome
		case "slowread":
			var x slowResult
			x, err = e.slowread(ctx)
			r.SlowRead, o = &x, &x.outcome
		case "hostile":
			var x hostileResult
			x, err = e.hostile(ctx)
			r.Hostile, o = &x, &x.outcome
		}
		o.Seconds = time.Since(t0).Seconds()
		if err != nil {
			o.fail("the scenario stopped: %v", err)
		}
		for _, pr := range o.Problems {
			r.Problems = append(r.Problems, s+": "+pr)
		}
		if !e.proxy.alive() {
			r.Problems = append(r.Problems, fmt.Sprintf("sealproxy exited during %s: %v", s, e.proxy.err))
			break
		}
	}

	r.ProxyAlive = e.proxy.alive() && e.proxy.get(ctx, "/healthz") == nil
	if !r.ProxyAlive {
		r.Problems = append(r.Problems, "sealproxy is not alive and healthy at the end")
	}
	stopErr := e.proxy.stop(30 * time.Second)
	r.CleanStop = stopErr == nil
	if stopErr != nil {
		r.Problems = append(r.Problems, fmt.Sprintf("stopping sealproxy: %v", stopErr))
	}
	r.LogProblems, r.LogLines, r.LogLevels, err = e.proxy.logProblems()
	if err != nil {
		r.Problems = append(r.Problems, fmt.Sprintf("reading the proxy's log: %v", err))
	}
	if len(r.LogProblems) > 0 {
		r.Problems = append(r.Problems, fmt.Sprintf("the proxy's log has %d lines with panic or fatal, e.g. %s", len(r.LogProblems), r.LogProblems[0]))
	}
	r.Seconds = time.Since(start).Seconds()
	printTable(stdout, r)
	if *jsonOut != "" {
		b, err := json.MarshalIndent(r, "", "  ")
		if err != nil {
			return r, err
		}
		if err := os.WriteFile(*jsonOut, append(b, '\n'), 0o644); err != nil {
			return r, fmt.Errorf("writing -json: %w", err)
		}
	}
	if len(r.Problems) > 0 {
		fmt.Fprintf(stdout, "\nthe proxy's log: %s (kept)\n", e.proxy.logPath)
		e.keep = true
	}
	return r, nil
}

// setup starts Tang, seals the key, starts the backends, builds and starts
// sealproxy.
func setup(ctx context.Context, p params, logf func(string, ...any)) (e *env, cleanup func(), err error) {
	dir, err := os.MkdirTemp("", "sealproxy-soak-")
	if err != nil {
		return nil, nil, err
	}
	var stops []func()
	en := &env{p: p, logf: logf}
	e = en
	// stopAll and en, not the results: an error return sets those to nil.
	stopAll := func() {
		for _, f := range slices.Backward(stops) {
			f()
		}
		if !en.keep {
			os.RemoveAll(dir)
		}
	}
	cleanup = stopAll
	defer func() {
		if err != nil {
			stopAll()
		}
	}()
	tangURL, thp, stopTang, err := testenv.ServeTang(filepath.Join(dir, "tang"))
	if err != nil {
		return nil, nil, err
	}
	stops = append(stops, stopTang)
	pool, leaf, err := writePKI(ctx, dir, tangURL, thp)
	if err != nil {
		return nil, nil, err
	}
	e.d = &dialer{pool: pool}
	if e.hello, err = clientHello(pool, 0); err != nil {
		return nil, nil, err
	}
	if e.hello1, err = clientHello(pool, 0x0301); err != nil {
		return nil, nil, err
	}
	if e.echo, err = newBackend(serveEcho); err != nil {
		return nil, nil, err
	}
	stops = append(stops, e.echo.close)
	hold := listenerSpec{name: "hold", backend: e.echo.addr(), maxConns: p.holdN + 100}
	if p.holdMode == "bridge" {
		// The same leaf serves the backend: the proxy verifies it with ca.crt.
		cfg := &tls.Config{Certificates: []tls.Certificate{leaf}}
		tb, err := newBackend(func(c net.Conn) { serveEcho(tls.Server(c, cfg)) })
		if err != nil {
			return nil, nil, err
		}
		stops = append(stops, tb.close)
		hold.backend, hold.bridge = tb.addr(), true
	}
	e.stream = &streamer{limit: 1 << 30}
	sb, err := newBackend(e.stream.serve)
	if err != nil {
		return nil, nil, err
	}
	stops = append(stops, sb.close)

	logf("building sealproxy")
	bin, err := testenv.Build(ctx, "sealproxy", dir, "GOEXPERIMENT=runtimesecret")
	if err != nil {
		return nil, nil, err
	}
	ls := []listenerSpec{
		hold,
		{name: "flood", backend: e.echo.addr(), maxConns: p.floodL},
		{name: "silent", backend: e.echo.addr(), handshakeTimeout: silentTimeout},
		{name: "slow", backend: sb.addr()},
		{name: "hostile", backend: e.echo.addr(), handshakeTimeout: hostileTimeout},
	}
	// The global bound is above anything the scenarios hold at once.
	global := p.holdN + p.floodL + p.silentS + p.silentS/10 + p.slowK + 1000
	cfgPath := filepath.Join(dir, "sealproxy.toml")
	if err := writeConfig(cfgPath, global, ls); err != nil {
		return nil, nil, err
	}
	names := make([]string, len(ls))
	for i, l := range ls {
		names[i] = l.name
	}
	sctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	logf("starting sealproxy (its key recovered from Tang at %s)", tangURL)
	if e.proxy, err = startProxy(sctx, bin, cfgPath, filepath.Join(dir, "sealproxy.log"), names); err != nil {
		return nil, nil, err
	}
	stops = append(stops, e.proxy.kill)
	return e, cleanup, nil
}

func mib(b int64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }

func printTable(w io.Writer, r *report) {
	fmt.Fprintf(w, "sealproxy soak: %s\n%s, %s, %d CPUs, harness fd limit %d, %.0fs\n\n",
		r.Command, r.Started.Format(time.RFC3339), r.GoVersion, r.CPUs, r.FDLimit, r.Seconds)
	t := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	row := func(s, k string, format string, args ...any) {
		fmt.Fprintf(t, "%s\t%s\t%s\n", s, k, fmt.Sprintf(format, args...))
	}
	snap := func(s string, b, d, a snapshot) {
		row(s, "goroutines before/during/after", "%d / %d / %d", b.Goroutines, d.Goroutines, a.Goroutines)
		row(s, "open fds before/during/after", "%d / %d / %d", b.FDs, d.FDs, a.FDs)
	}
	fmt.Fprintln(t, "scenario\tmeasure\tvalue")
	if h := r.Hold; h != nil {
		row("hold", "connections held / errors", "%d of %d / %d", h.Held, h.Connections, h.Errors)
		row("hold", "held together for", "%.0fs", h.HoldSeconds)
		row("hold", "handshake p50 / p99", "%.1f ms / %.1f ms", h.Handshake.P50ms, h.Handshake.P99ms)
		row("hold", "proxy RSS base / held / after", "%s / %s / %s", mib(h.Before.RSS), mib(h.During.RSS), mib(h.After.RSS))
		row("hold", "RSS per held connection", "%.1f KiB", float64(h.BytesPerConn)/1024)
		snap("hold", h.Before, h.During, h.After)
		row("hold", "connections_active held / after", "%d / %d", h.ActiveWhileHeld, h.After.Active)
	}
	if f := r.Flood; f != nil {
		row("flood", "limit held / still working after", "%d / %d", f.Limit, f.HeldStillWorking)
		row("flood", "handshakes attempted / refused", "%d / %d in %.1fs", f.Attempted, f.Refused, f.FloodSeconds)
		row("flood", "accepted beyond limit / other errors", "%d / %d", f.Accepted, f.OtherErrors)
		row("flood", "rejected_total counted", "%v", f.RejectedCounted)
		row("flood", "time to refusal p50 / p99 / max", "%.2f ms / %.2f ms / %.1f ms", f.TimeToRefusal.P50ms, f.TimeToRefusal.P99ms, f.TimeToRefusal.MaxMs)
		row("flood", "proxy alive, /healthz", "%v", f.Alive)
		row("flood", "heap in use before / after", "%s / %s (tolerance %s)", mib(f.Before.HeapInuse), mib(f.After.HeapInuse), mib(f.HeapTolerance))
		snap("flood", f.Before, f.During, f.After)
	}
	if s := r.Silent; s != nil {
		row("silent", "silent / partial ClientHello", "%d / %d (handshake_timeout %.0fs)", s.Silent, s.Partial, s.HandshakeTimeout)
		row("silent", "closed by proxy", "%d, after p50 %.0f ms / max %.0f ms", s.ClosedByProxy, s.TimeToClose.P50ms, s.TimeToClose.MaxMs)
		row("silent", "real clients meanwhile", "%d of %d (%.1f%%)", s.RealSucceeded, s.RealAttempts, 100*s.RealSuccessRate)
		row("silent", "real handshake p50 / p99", "%.1f ms / %.1f ms", s.RealHandshake.P50ms, s.RealHandshake.P99ms)
		row("silent", "handshake_errors_total counted", "%v", s.HandshakeErrors)
		row("silent", "connections_closed_total counted", "%v", s.ClosedCounted)
		snap("silent", s.Before, s.During, s.After)
	}
	if s := r.SlowRead; s != nil {
		row("slowread", "clients (never read / 1 KiB/s)", "%d (%d / %d) for %.0fs", s.Clients, s.NeverRead, s.Read1KiBps, s.HoldSeconds)
		row("slowread", "backend wrote / max one conn", "%s / %s", mib(s.BackendWritten), mib(s.MaxPerConn))
		row("slowread", "backend wrote in last 2s / finished", "%s / %d", mib(s.LastWindowBytes), s.Finished)
		row("slowread", "proxy RSS base / max", "%s / %s (bound +%s)", mib(s.RSSBase), mib(s.RSSMax), mib(s.RSSBound))
		row("slowread", "RSS per client", "%.1f KiB", float64(s.RSSPerClient)/1024)
		snap("slowread", s.Before, s.During, s.After)
	}
	if h := r.Hostile; h != nil {
		for _, c := range h.Cases {
			keys := make([]string, 0, len(c.Counted))
			for k := range c.Counted {
				keys = append(keys, fmt.Sprintf("%s=%d", k, c.Counted[k]))
			}
			sort.Strings(keys)
			row("hostile", c.Kind, "%d/%d closed, p50 %.1f ms max %.1f ms; %s", c.ClosedByProxy, c.Connections, c.TimeToClose.P50ms, c.TimeToClose.MaxMs, strings.Join(keys, " "))
		}
		row("hostile", "normal clients after / alive", "%d of 20 / %v", h.NormalAfter, h.Alive)
		snap("hostile", h.Before, h.Before, h.After)
	}
	row("end", "proxy alive / clean SIGTERM stop", "%v / %v", r.ProxyAlive, r.CleanStop)
	row("end", "log lines / with panic or fatal", "%d / %d", r.LogLines, len(r.LogProblems))
	row("end", "log lines by level", "%v", r.LogLevels)
	t.Flush()
	if len(r.Problems) == 0 {
		fmt.Fprintln(w, "\nsoak: ok, every property held")
		return
	}
	fmt.Fprintln(w, "\nsoak: FAILED:")
	for _, p := range r.Problems {
		fmt.Fprintf(w, "  - %s\n", p)
	}
}
