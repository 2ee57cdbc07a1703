//go:build linux

package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/sealproxy/sealproxy/testenv"
	"github.com/sealproxy/sealproxy/unlock"
	"github.com/sealproxy/sealproxy/vault/keyref"
)

const serverName = "soak.sealproxy.test"

// raiseFDLimit sets the soft RLIMIT_NOFILE to the hard one: the harness
// holds both ends of thousands of connections.
func raiseFDLimit() (uint64, error) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return 0, fmt.Errorf("reading RLIMIT_NOFILE: %w", err)
	}
	if lim.Cur < lim.Max {
		lim.Cur = lim.Max
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
			return 0, fmt.Errorf("raising RLIMIT_NOFILE to %d: %w", lim.Max, err)
		}
	}
	return lim.Cur, nil
}

// writePKI writes ca.crt and soak.crt and seals the server's private key
// to the Tang server into soak.key.jwe; the key is never written in the
// clear. It returns the CA pool clients trust.
func writePKI(ctx context.Context, dir, tangURL, thp string) (*x509.CertPool, tls.Certificate, error) {
	var none tls.Certificate
	pki, err := testenv.WritePKI(dir, testenv.PKIOptions{CAName: "sealproxy soak CA", ServerName: serverName, File: "soak"})
	if err != nil {
		return nil, none, err
	}
	keyPEM, err := pki.Server.MarshalKey()
	if err != nil {
		return nil, none, err
	}
	jwe, err := unlock.Encrypt(ctx, "tang", fmt.Appendf(nil, `{"url":%q,"thp":%q}`, tangURL, thp), keyPEM, nil)
	clear(keyPEM)
	if err != nil {
		return nil, none, fmt.Errorf("sealing the server key to %s: %w", tangURL, err)
	}
	if err := os.WriteFile(filepath.Join(dir, "soak.key.jwe"), jwe, 0o600); err != nil {
		return nil, none, err
	}
	return pki.CA.Pool(), pki.Server.TLSCertificate(), nil
}

// listenerSpec is one [[listener]] of the proxy's configuration.
type listenerSpec struct {
	name, backend    string
	maxConns         int
	handshakeTimeout time.Duration
	bridge           bool // TLS to the backend, verified with ca.crt as serverName
}

func writeConfig(path string, globalMax int, ls []listenerSpec) error {
	var b strings.Builder
	fmt.Fprintf(&b, "# written by tools/soak\nshutdown_timeout = \"10s\"\nmax_connections = %d\n\n", globalMax)
	fmt.Fprintf(&b, "[[key]]\nname = \"soak\"\ncert = \"soak.crt\"\nsource = %q\n\n", keyref.Sealed("soak.key.jwe"))
	for _, l := range ls {
		mode := "offload"
		if l.bridge {
			mode = "bridge"
		}
		fmt.Fprintf(&b, "[[listener]]\nname = %q\nlisten = \"127.0.0.1:0\"\nmode = %q\nkeys = [\"soak\"]\nbackend = %q\n", l.name, mode, l.backend)
		if l.maxConns > 0 {
			fmt.Fprintf(&b, "max_connections = %d\n", l.maxConns)
		}
		if l.handshakeTimeout > 0 {
			fmt.Fprintf(&b, "handshake_timeout = %q\n", l.handshakeTimeout.String())
		}
		if l.bridge {
			fmt.Fprintf(&b, "\n[listener.upstream]\nca = \"ca.crt\"\nserver_name = %q\n", serverName)
		}
		b.WriteString("\n")
	}
	b.WriteString("[admin]\nlisten = \"127.0.0.1:0\"\n\n[unlock]\ntimeout = \"1m\"\n")
	return os.WriteFile(path, []byte(b.String()), 0o644)
}

// proxyProcess is `sealproxy run` as a child process; its log goes to a
// file.
type proxyProcess struct {
	cmd     *exec.Cmd
	logPath string
	exited  chan struct{}
	err     error
	addrs   map[string]string // listener name (and "admin") → address
	admin   *http.Client
}

var listenRE = regexp.MustCompile(`msg=(?:listening listener=(\S+)|"admin (listening)") addr=(\S+)`)

func startProxy(ctx context.Context, bin, cfgPath, logPath string, names []string) (*proxyProcess, error) {
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	defer logf.Close() // the child has its own copy
	p := &proxyProcess{logPath: logPath, exited: make(chan struct{}), addrs: map[string]string{},
		admin: &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 1}}}
	p.cmd = exec.Command(bin, "run", "--config", cfgPath)
	p.cmd.Stdout, p.cmd.Stderr = logf, logf
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} // Ctrl-C reaches the harness alone
	if err := p.cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting sealproxy: %w", err)
	}
	go func() { p.err = p.cmd.Wait(); close(p.exited) }()

	want := append([]string{"admin"}, names...)
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for {
		log, _ := os.ReadFile(logPath)
		for _, m := range listenRE.FindAllStringSubmatch(string(log), -1) {
			if m[2] != "" {
				p.addrs["admin"] = m[3]
			} else {
				p.addrs[m[1]] = m[3]
			}
		}
		missing := false
		for _, n := range want {
			if p.addrs[n] == "" {
				missing = true
			}
		}
		if !missing && p.ready(ctx) {
			return p, nil
		}
		select {
		case <-ctx.Done():
			p.kill()
			return nil, fmt.Errorf("waiting for sealproxy to listen: %w", ctx.Err())
		case <-p.exited:
			return nil, fmt.Errorf("sealproxy exited during start-up (%v); log:\n%s", p.err, tail(log, 20))
		case <-t.C:
		}
	}
}

func (p *proxyProcess) ready(ctx context.Context) bool {
	return p.get(ctx, "/readyz") == nil
}

// get fetches an admin path and checks for 200.
func (p *proxyProcess) get(ctx context.Context, path string) error {
	_, err := p.fetch(ctx, path)
	return err
}

func (p *proxyProcess) fetch(ctx context.Context, path string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+p.addrs["admin"]+path, nil)
	if err != nil {
		return nil, err
	}
	resp, err := p.admin.Do(req)
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", path, err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s", path, resp.Status)
	}
	return body, nil
}

func (p *proxyProcess) alive() bool {
	select {
	case <-p.exited:
		return false
	default:
		return true
	}
}

// stop sends SIGTERM and waits for a clean exit.
func (p *proxyProcess) stop(timeout time.Duration) error {
	if !p.alive() {
		return fmt.Errorf("sealproxy had already exited: %v", p.err)
	}
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		return fmt.Errorf("SIGTERM to sealproxy: %w", err)
	}
	select {
	case <-p.exited:
		if p.err != nil {
			return fmt.Errorf("sealproxy after SIGTERM: %w", p.err)
		}
		return nil
	case <-time.After(timeout):
		p.kill()
		return fmt.Errorf("sealproxy did not exit within %v of SIGTERM", timeout)
	}
}

func (p *proxyProcess) kill() {
	if p.alive() {
		_ = p.cmd.Process.Kill()
		<-p.exited
	}
}

// logProblems returns the log lines that mention a panic or a fatal
// error, the number of lines, and their number by level.
func (p *proxyProcess) logProblems() ([]string, int, map[string]int, error) {
	f, err := os.Open(p.logPath)
	if err != nil {
		return nil, 0, nil, err
	}
	defer f.Close()
	var bad []string
	n, levels := 0, map[string]int{}
	s := bufio.NewScanner(f)
	s.Buffer(make([]byte, 64<<10), 1<<20)
	for s.Scan() {
		n++
		if _, rest, ok := strings.Cut(s.Text(), " level="); ok {
			lvl, _, _ := strings.Cut(rest, " ")
			levels[lvl]++
		}
		l := strings.ToLower(s.Text())
		if strings.Contains(l, "panic") || strings.Contains(l, "fatal") {
			bad = append(bad, s.Text())
		}
	}
	return bad, n, levels, s.Err()
}

func tail(b []byte, n int) string {
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// metrics is one scrape of /metrics: series (name and labels, as
// printed) → value.
type metrics map[string]float64

func (p *proxyProcess) scrape(ctx context.Context) (metrics, error) {
	body, err := p.fetch(ctx, "/metrics")
	if err != nil {
		return nil, err
	}
	m := metrics{}
	for _, line := range bytes.Split(body, []byte("\n")) {
		if len(line) == 0 || line[0] == '#' {
			continue
		}
		i := bytes.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		v, err := strconv.ParseFloat(string(line[i+1:]), 64)
		if err != nil {
			continue
		}
		m[string(line[:i])] = v
	}
	return m, nil
}

// get sums the series of name whose labels include every k="v" pair of
// labels (given as k, v, k, v...).
func (m metrics) get(name string, labels ...string) float64 {
	var sum float64
	for series, v := range m {
		if rest, ok := seriesOf(series, name); ok && hasLabels(rest, labels) {
			sum += v
		}
	}
	return sum
}

// seriesOf returns the labels part of series ("{...}" or "") if series
// is of the metric name.
func seriesOf(series, name string) (string, bool) {
	rest, ok := strings.CutPrefix(series, name)
	return rest, ok && (rest == "" || rest[0] == '{')
}

// hasLabels reports whether the labels part rest has every k="v" pair of
// labels (given as k, v, k, v...).
func hasLabels(rest string, labels []string) bool {
	for i := 0; i+1 < len(labels); i += 2 {
		if !strings.Contains(rest, fmt.Sprintf("%s=%q", labels[i], labels[i+1])) {
			return false
		}
	}
	return true
}

// byLabel returns name's values by the value of label, over the series
// that match the other labels.
func (m metrics) byLabel(name, label string, labels ...string) map[string]float64 {
	out := map[string]float64{}
	re := regexp.MustCompile(label + `="([^"]*)"`)
	for series, v := range m {
		rest, ok := seriesOf(series, name)
		if !ok || !hasLabels(rest, labels) {
			continue
		}
		if sm := re.FindStringSubmatch(rest); sm != nil {
			out[sm[1]] += v
		}
	}
	return out
}

// delta is after − before, per key, leaving out zeros.
func delta(after, before map[string]float64) map[string]float64 {
	out := map[string]float64{}
	for k, v := range after {
		if d := v - before[k]; d != 0 {
			out[k] = d
		}
	}
	return out
}

// rss is the proxy's resident set from /proc/PID/status, in bytes.
func (p *proxyProcess) rss() (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.cmd.Process.Pid))
	if err != nil {
		return 0, fmt.Errorf("reading the proxy's memory: %w", err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if err != nil {
				return 0, fmt.Errorf("VmRSS %q: %w", v, err)
			}
			return kb << 10, nil
		}
	}
	return 0, errors.New("no VmRSS in /proc/PID/status")
}

// snapshot is the proxy's resource use at one moment.
type snapshot struct {
	Goroutines int   `json:"goroutines"`
	FDs        int   `json:"open_fds"`
	RSS        int64 `json:"rss_bytes"`
	HeapInuse  int64 `json:"heap_inuse_bytes"`
	StackInuse int64 `json:"stack_inuse_bytes"`
	NextGC     int64 `json:"next_gc_bytes"`
	Active     int   `json:"connections_active"`
	gcCycles   float64
}

func (p *proxyProcess) snapshot(ctx context.Context) (snapshot, error) {
	m, err := p.scrape(ctx)
	if err != nil {
		return snapshot{}, err
	}
	rss, err := p.rss()
	if err != nil {
		return snapshot{}, err
	}
	return snapshot{
		Goroutines: int(m.get("go_goroutines")),
		FDs:        int(m.get("process_open_fds")),
		RSS:        rss,
		HeapInuse:  int64(m.get("go_memstats_heap_inuse_bytes")),
		StackInuse: int64(m.get("go_memstats_stack_inuse_bytes")),
		NextGC:     int64(m.get("go_memstats_next_gc_bytes")),
		Active:     int(m.get("sealproxy_connections_active")),
		gcCycles:   m.get("go_gc_duration_seconds_count"),
	}, nil
}

// Recovery tolerances, checked after every scenario has closed its
// connections, within recoveryWait:
//   - open fds exactly at baseline: every fd the proxy opens belongs to a
//     connection (client socket, backend socket), and the admin scrape
//     reuses one keep-alive connection that the baseline already counts;
//     TIME_WAIT holds no descriptor.
//   - goroutines within goroutineSlack of baseline: every connection's
//     goroutines end with it, but the runtime and net/http keep a few of
//     their own that come and go (the admin server's connection reader,
//     timers of the ticket rotation, the scavenger).
//   - sealproxy_connections_active exactly 0.
const (
	recoveryWait   = 15 * time.Second
	goroutineSlack = 5
)

// waitBaseline waits for the proxy to return to base; it returns the last
// snapshot and an error naming what did not recover.
func (p *proxyProcess) waitBaseline(ctx context.Context, base snapshot) (snapshot, error) {
	deadline := time.Now().Add(recoveryWait)
	for {
		s, err := p.snapshot(ctx)
		if err != nil {
			return s, err
		}
		var why []string
		if s.FDs != base.FDs {
			why = append(why, fmt.Sprintf("open fds %d, baseline %d", s.FDs, base.FDs))
		}
		if s.Goroutines > base.Goroutines+goroutineSlack {
			why = append(why, fmt.Sprintf("goroutines %d, baseline %d (+%d allowed)", s.Goroutines, base.Goroutines, goroutineSlack))
		}
		if s.Active != 0 {
			why = append(why, fmt.Sprintf("sealproxy_connections_active %d", s.Active))
		}
		if len(why) == 0 {
			return s, nil
		}
		if time.Now().After(deadline) {
			return s, fmt.Errorf("not back to baseline %v after closing: %s", recoveryWait, strings.Join(why, "; "))
		}
		select {
		case <-ctx.Done():
			return s, ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// quiesce waits for the proxy to be idle, so that a scenario's baseline
// does not count the previous one's last connections still closing: no
// active connection, and the same number of open fds in three scrapes
// 100 ms apart.
func (p *proxyProcess) quiesce(ctx context.Context) (snapshot, error) {
	deadline := time.Now().Add(recoveryWait)
	var prev []snapshot
	for {
		s, err := p.snapshot(ctx)
		if err != nil {
			return s, err
		}
		if s.Active != 0 {
			prev = prev[:0]
		} else {
			prev = append(prev, s)
		}
		if n := len(prev); n >= 3 && prev[n-1].FDs == prev[n-2].FDs && prev[n-2].FDs == prev[n-3].FDs {
			return s, nil
		}
		if time.Now().After(deadline) {
			return s, fmt.Errorf("the proxy did not settle in %v: %d connections active, %d fds", recoveryWait, s.Active, s.FDs)
		}
		select {
		case <-ctx.Done():
			return s, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}
