//go:build linux

package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"github.com/sealproxy/sealproxy/vault/keyref"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/sealproxy/sealproxy/testenv"
)

// clockTick is USER_HZ, the unit of utime and stime in /proc/PID/stat:
// 100 on every Linux architecture Go runs on.
const clockTick = 10 * time.Millisecond

// terminator is one program under test.
type terminator struct {
	name string
	// argv starts it listening on port with the given backend port.
	argv func(port, backendPort int) ([]string, error)
}

// measurement is one terminator's figures in one repetition.
type measurement struct {
	handshakeCPU   time.Duration // per full handshake
	upCPU, downCPU time.Duration // per GB (10^9 bytes) piped
	p50, p99       time.Duration
	idleKiB        float64 // per idle established connection
	handshakeRate  float64 // per second of wall time, for reference
	suite          string
	load           string // /proc/loadavg before and after
}

type options struct {
	handshakes, conc, pingpongs, idle int
	gb                                float64
	reps                              int
	streams                           int    // concurrent connections sharing the bulk bytes
	cpus                              string // the terminators' CPUs (taskset list)
	ncpu                              int    // how many that is: haproxy's nbthread
}

func compare(ctx context.Context, fs *flag.FlagSet, args []string, out io.Writer) error {
	var o options
	sealproxy := fs.String("sealproxy", "bin/sealproxy", "sealproxy binary (make build)")
	minterm := fs.String("minterm", "", "minimal Go terminator binary (go build ./tools/minterm)")
	haproxy := fs.String("haproxy", "haproxy", "haproxy binary (Debian package haproxy)")
	stunnel := fs.String("stunnel", "stunnel4", "stunnel binary (Debian package stunnel4)")
	only := fs.String("only", "", "comma-separated terminators to run (default: all)")
	baseline := fs.String("baseline", "", `another sealproxy binary, run as "baseline sealed" and "baseline plain" beside the others (A/B)`)
	keep := fs.Bool("keep", false, "keep the work directory (configurations and logs)")
	timeout := fs.Duration("timeout", 40*time.Minute, "bound on the whole run")
	fs.IntVar(&o.reps, "reps", 3, "repetitions (terminators interleaved in each)")
	fs.IntVar(&o.handshakes, "handshakes", 4000, "full handshakes measured per run")
	fs.IntVar(&o.conc, "c", 8, "concurrent handshakes")
	fs.Float64Var(&o.gb, "gb", 1, "GB streamed each way per run")
	fs.IntVar(&o.pingpongs, "pingpongs", 20000, "64-byte round trips per run")
	fs.IntVar(&o.idle, "idle", 2000, "idle established connections held")
	fs.IntVar(&o.streams, "streams", 1, "bulk: connections at once, sharing the -gb")
	fs.StringVar(&o.cpus, "cpus", "0", `the terminators' CPUs: "0", or "0,1" for the two-CPU handshake scaling (haproxy then runs nbthread 2)`)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if o.streams < 1 {
		return errors.New("-streams must be at least 1")
	}
	o.ncpu = len(strings.Split(o.cpus, ","))
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()

	dir, err := os.MkdirTemp("", "sealproxy-bench-")
	if err != nil {
		return err
	}
	if *keep {
		fmt.Fprintf(out, "work directory: %s\n", dir)
	} else {
		defer os.RemoveAll(dir)
	}
	p, err := newPKI(dir)
	if err != nil {
		return err
	}
	jwe, err := p.sealKey(ctx)
	if err != nil {
		return err
	}

	bln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	go backend(ctx, bln)
	backendPort := bln.Addr().(*net.TCPAddr).Port

	all := []terminator{
		{"sealproxy sealed", sealproxyArgv(*sealproxy, dir, "sealed", keyref.Sealed(jwe), p)},
		{"sealproxy plain", sealproxyArgv(*sealproxy, dir, "plain", keyref.File(p.keyFile), p)},
		{"haproxy", haproxyArgv(*haproxy, dir, p, o.ncpu)},
		{"stunnel", stunnelArgv(*stunnel, dir, p)},
		{"minimal Go", func(port, bport int) ([]string, error) {
			if *minterm == "" {
				return nil, errors.New("-minterm not given")
			}
			return []string{*minterm, "-listen", addr(port), "-backend", addr(bport),
				"-cert", p.certFile, "-key", p.keyFile}, nil
		}},
	}
	if *baseline != "" {
		all = append(all,
			terminator{"baseline sealed", sealproxyArgv(*baseline, dir, "baseline-sealed", keyref.Sealed(jwe), p)},
			terminator{"baseline plain", sealproxyArgv(*baseline, dir, "baseline-plain", keyref.File(p.keyFile), p)})
	}
	var terms []terminator
	for _, t := range all {
		if *only == "" || slices.Contains(strings.Split(*only, ","), t.name) {
			terms = append(terms, t)
		}
	}
	printEnvironment(out, *sealproxy, *haproxy, *stunnel, o)

	results := map[string][]measurement{}
	for rep := 1; rep <= o.reps; rep++ {
		for _, t := range terms {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			m, err := runOne(ctx, dir, t, backendPort, p, o)
			if err != nil {
				fmt.Fprintf(out, "rep %d %-16s error: %v\n", rep, t.name, err)
				continue
			}
			results[t.name] = append(results[t.name], m)
			fmt.Fprintf(out, "rep %d %-16s handshake %6.1f µs CPU (%4.0f/s)  up %5.0f ms/GB  down %5.0f ms/GB  p50 %5.1f µs  p99 %6.1f µs  idle %5.1f KiB/conn  %s  load %s\n",
				rep, t.name, us(m.handshakeCPU), m.handshakeRate, ms(m.upCPU), ms(m.downCPU),
				us(m.p50), us(m.p99), m.idleKiB, m.suite, m.load)
		}
	}
	printTable(out, terms, results)
	return nil
}

func addr(port int) string { return "127.0.0.1:" + strconv.Itoa(port) }

func us(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }
func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func sealproxyArgv(bin, dir, variant, source string, p *pki) func(int, int) ([]string, error) {
	return func(port, bport int) ([]string, error) {
		cfg := fmt.Sprintf(`allow_plaintext_keys = %t

[[key]]
name = "bench"
cert = %q
source = %q

[[listener]]
name = "bench"
listen = %q
mode = "offload"
keys = ["bench"]
backend = %q
`, strings.HasPrefix(source, "file:"), p.certFile, source, addr(port), addr(bport))
		path := filepath.Join(dir, "sealproxy-"+variant+".toml")
		if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
			return nil, err
		}
		// warn: no log line per connection, as haproxy and stunnel are
		// configured here.
		return []string{bin, "run", "--config", path, "--log-level", "warn"}, nil
	}
}

func haproxyArgv(bin, dir string, p *pki, nbthread int) func(int, int) ([]string, error) {
	return func(port, bport int) ([]string, error) {
		cfg := fmt.Sprintf(`global
    maxconn 9000
    nbthread %d
    ssl-default-bind-ciphersuites TLS_AES_128_GCM_SHA256
    ssl-default-bind-options ssl-min-ver TLSv1.3

defaults
    mode tcp
    timeout connect 10s
    timeout client 5m
    timeout server 5m

frontend fe
    bind %s ssl crt %s
    default_backend be

backend be
    server s1 %s
`, nbthread, addr(port), p.comboFile, addr(bport))
		path := filepath.Join(dir, "haproxy.cfg")
		if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
			return nil, err
		}
		return []string{bin, "-db", "-f", path}, nil
	}
}

func stunnelArgv(bin, dir string, p *pki) func(int, int) ([]string, error) {
	return func(port, bport int) ([]string, error) {
		cfg := fmt.Sprintf(`foreground = yes
pid =
debug = 3

[bench]
accept = %s
connect = %s
cert = %s
key = %s
sslVersionMin = TLSv1.3
ciphersuites = TLS_AES_128_GCM_SHA256
`, addr(port), addr(bport), p.certFile, p.keyFile)
		path := filepath.Join(dir, "stunnel.conf")
		if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
			return nil, err
		}
		return []string{bin, path}, nil
	}
}

func freePort() (int, error) {
	addr, err := testenv.FindFreeAddr()
	if err != nil {
		return 0, err
	}
	_, port, _ := net.SplitHostPort(addr)
	return strconv.Atoi(port)
}

// runOne starts t pinned to o.cpus, measures it and stops it.
func runOne(ctx context.Context, dir string, t terminator, backendPort int, p *pki, o options) (m measurement, err error) {
	port, err := freePort()
	if err != nil {
		return m, err
	}
	argv, err := t.argv(port, backendPort)
	if err != nil {
		return m, err
	}
	logf, err := os.Create(filepath.Join(dir, strings.ReplaceAll(t.name, " ", "-")+".log"))
	if err != nil {
		return m, err
	}
	defer logf.Close()
	cmd := exec.Command("taskset", append([]string{"-c", o.cpus}, argv...)...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Dir = dir
	if err := cmd.Start(); err != nil {
		return m, err
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	defer func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
	}()
	pid := cmd.Process.Pid // taskset execs the terminator: same PID

	c := newClient(addr(port), &tls.Config{RootCAs: p.pool, ServerName: serverName})
	if err := waitReady(ctx, c, exited); err != nil {
		return m, fmt.Errorf("%w (log: %s)", err, logf.Name())
	}
	if cpus, _ := procStatus(pid, "Cpus_allowed_list"); cpus != o.cpus && cpus != strings.ReplaceAll(o.cpus, ",", "-") {
		return m, fmt.Errorf("terminator runs on CPUs %q, not %s", cpus, o.cpus)
	}
	m.load = loadavg()

	// Warm up: the first handshakes and buffers.
	if _, err := c.handshakes(ctx, 200, o.conc); err != nil {
		return m, fmt.Errorf("warm-up: %w", err)
	}
	if _, err := c.pingpong(ctx, 1000, 64); err != nil {
		return m, fmt.Errorf("warm-up: %w", err)
	}
	time.Sleep(time.Second)

	// Idle connections first, before bulk transfers leave freed memory
	// behind that the connections could reuse.
	base, err := rssKiB(pid)
	if err != nil {
		return m, err
	}
	conns, err := c.idle(ctx, o.idle, o.conc)
	if err != nil {
		return m, fmt.Errorf("idle: %w", err)
	}
	time.Sleep(2 * time.Second)
	held, err := rssKiB(pid)
	closeAll(conns)
	if err != nil {
		return m, err
	}
	m.idleKiB = float64(held-base) / float64(o.idle)
	time.Sleep(time.Second)

	cpu0, err := cpuTime(pid)
	if err != nil {
		return m, err
	}
	start := time.Now()
	st, err := c.handshakes(ctx, o.handshakes, o.conc)
	if err != nil {
		return m, fmt.Errorf("handshakes: %w", err)
	}
	m.handshakeRate = float64(o.handshakes) / time.Since(start).Seconds()
	cpu1, err := cpuTime(pid)
	if err != nil {
		return m, err
	}
	m.handshakeCPU = (cpu1 - cpu0) / time.Duration(o.handshakes)
	m.suite = tls.CipherSuiteName(st.CipherSuite) + " " + st.CurveID.String()

	n := int64(o.gb * 1e9)
	for _, up := range []bool{true, false} {
		cpu0, err := cpuTime(pid)
		if err != nil {
			return m, err
		}
		if err := c.bulkStreams(ctx, n, up, o.streams); err != nil {
			return m, fmt.Errorf("bulk: %w", err)
		}
		cpu1, err := cpuTime(pid)
		if err != nil {
			return m, err
		}
		perGB := time.Duration(float64(cpu1-cpu0) / o.gb)
		if up {
			m.upCPU = perGB
		} else {
			m.downCPU = perGB
		}
	}

	rtts, err := c.pingpong(ctx, o.pingpongs, 64)
	if err != nil {
		return m, fmt.Errorf("pingpong: %w", err)
	}
	m.p50, m.p99 = percentile(rtts, 0.5), percentile(rtts, 0.99)
	m.load += " → " + loadavg()
	return m, nil
}

// waitReady waits until the terminator completes a handshake and an echo.
func waitReady(ctx context.Context, c *client, exited <-chan struct{}) error {
	deadline := time.Now().Add(60 * time.Second)
	for {
		t, err := c.open(ctx)
		if err == nil {
			t.Close()
			return nil
		}
		select {
		case <-exited:
			return errors.New("the terminator exited")
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not ready after 60s: %w", err)
		}
	}
}

// cpuTime is the process's user+system CPU time, all threads included.
func cpuTime(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The fields after the command name in parentheses; utime and stime
	// are fields 14 and 15 of the whole line.
	i := bytes.LastIndexByte(b, ')')
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: short", pid)
	}
	utime, err1 := strconv.ParseInt(f[11], 10, 64)
	stime, err2 := strconv.ParseInt(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, err
	}
	return time.Duration(utime+stime) * clockTick, nil
}

func procStatus(pid int, key string) (string, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return "", err
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && k == key {
			return strings.TrimSpace(v), nil
		}
	}
	return "", fmt.Errorf("/proc/%d/status: no %s", pid, key)
}

func rssKiB(pid int) (int64, error) {
	v, err := procStatus(pid, "VmRSS")
	if err != nil {
		return 0, err
	}
	return strconv.ParseInt(strings.TrimSuffix(v, " kB"), 10, 64)
}

func loadavg() string {
	b, _ := os.ReadFile("/proc/loadavg")
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

func firstLine(argv ...string) string {
	out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput()
	if err != nil && len(out) == 0 {
		return err.Error()
	}
	for line := range strings.SplitSeq(string(out), "\n") {
		if strings.Contains(line, "version") || strings.Contains(line, "stunnel ") {
			return strings.TrimSpace(line)
		}
	}
	return strings.TrimSpace(strings.SplitN(string(out), "\n", 2)[0])
}

func printEnvironment(out io.Writer, sealproxy, haproxy, stunnel string, o options) {
	self, _ := procStatus(os.Getpid(), "Cpus_allowed_list")
	fmt.Fprintf(out, "bench (client and backend) on CPUs %s, %s; terminators on CPUs %s\n", self, runtime.Version(), o.cpus)
	if self != "1" && o.cpus == "0" {
		fmt.Fprintln(out, "warning: run the harness with taskset -c 1 (tools/bench/run.sh does)")
	}
	fmt.Fprintf(out, "sealproxy: %s\nhaproxy:   %s\nstunnel:   %s\n",
		firstLine(sealproxy, "version"), firstLine(haproxy, "-v"), firstLine(stunnel, "-version"))
	fmt.Fprintf(out, "per run: %d handshakes (%d at once), %.1f GB each way over %d connections at once, %d round trips, %d idle connections; load %s\n",
		o.handshakes, o.conc, o.gb, o.streams, o.pingpongs, o.idle, loadavg())
}

// printTable prints the medians of every figure, with the range over the
// repetitions.
func printTable(out io.Writer, terms []terminator, results map[string][]measurement) {
	fmt.Fprintln(out)
	fmt.Fprintln(out, "| terminator | handshake CPU µs | handshakes/s | CPU ms/GB up | CPU ms/GB down | p50 µs | p99 µs | KiB/idle conn | runs |")
	fmt.Fprintln(out, "|---|---|---|---|---|---|---|---|---|")
	for _, t := range terms {
		runs := results[t.name]
		if len(runs) == 0 {
			continue
		}
		col := func(f func(measurement) float64, prec int) string {
			v := make([]float64, len(runs))
			for i, m := range runs {
				v[i] = f(m)
			}
			slices.Sort(v)
			return fmt.Sprintf("%.*f (%.*f–%.*f)", prec, v[len(v)/2], prec, v[0], prec, v[len(v)-1])
		}
		fmt.Fprintf(out, "| %s | %s | %s | %s | %s | %s | %s | %s | %d |\n", t.name,
			col(func(m measurement) float64 { return us(m.handshakeCPU) }, 0),
			col(func(m measurement) float64 { return m.handshakeRate }, 0),
			col(func(m measurement) float64 { return ms(m.upCPU) }, 0),
			col(func(m measurement) float64 { return ms(m.downCPU) }, 0),
			col(func(m measurement) float64 { return us(m.p50) }, 0),
			col(func(m measurement) float64 { return us(m.p99) }, 0),
			col(func(m measurement) float64 { return m.idleKiB }, 1),
			len(runs))
	}
}

// bulkStreams streams n bytes over k connections at once, n/k each (the
// first takes the remainder).
func (c *client) bulkStreams(ctx context.Context, n int64, up bool, k int) error {
	if k <= 1 {
		return c.bulk(ctx, n, up)
	}
	errs := make(chan error, k)
	for i := range k {
		part := n / int64(k)
		if i == 0 {
			part += n % int64(k)
		}
		go func() { errs <- c.bulk(ctx, part, up) }()
	}
	var first error
	for range k {
		if err := <-errs; err != nil && first == nil {
			first = err
		}
	}
	return first
}
