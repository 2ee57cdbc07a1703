//go:build linux

package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sealproxy/sealproxy/testenv"
	"github.com/sealproxy/sealproxy/unlock"
	"github.com/sealproxy/sealproxy/unlock/tang"
)

type config struct {
	sealgate    string
	hosts       int
	recoveries  int
	concurrency int
	serverCPU   int
	maxConns    int
	noTangd     bool
	// policy is the network the gate's policy approves; empty: 127.0.0.0/8.
	policy string
}

// throughput is one server's run: n recoveries, the wall time and the
// server's own CPU time (its process and waited-for children: tangd's
// per-connection processes count).
type throughput struct {
	Server string
	N      int
	Wall   time.Duration
	CPU    time.Duration
	Errors int
}

func (t throughput) perCore() float64 { return float64(t.N-t.Errors) / t.CPU.Seconds() }
func (t throughput) perSec() float64  { return float64(t.N-t.Errors) / t.Wall.Seconds() }

// storm is the start-up of many hosts at once.
type storm struct {
	Hosts    int
	Failed   int            // gave up after unlockTimeout
	Retried  int            // needed more than one attempt
	Errors   map[string]int // the last error of each failed host
	All      time.Duration  // until the last host had its key
	P50, P99 time.Duration  // per host, from the common start
	CPU      time.Duration  // the gate's CPU time over the storm
	Client   time.Duration  // the harness's own CPU time over the storm
	// Abandoned are the recoveries whose client left before the gate
	// answered (and the gate skipped or discarded the exchange).
	Abandoned int
	// Skipped are those of them that had claimed an approved point: the
	// exchange the gate did not run.
	Skipped int
}

type report struct {
	Load       string
	Throughput []throughput
	Storm      storm
}

func (r *report) print(w io.Writer) {
	fmt.Fprintf(w, "load before: %s\n", r.Load)
	for _, t := range r.Throughput {
		fmt.Fprintf(w, "%-9s %5d recoveries in %7.2fs (%6.0f/s), server CPU %6.2fs: %6.0f recoveries per CPU-second, %d errors or retries\n",
			t.Server, t.N, t.Wall.Seconds(), t.perSec(), t.CPU.Seconds(), t.perCore(), t.Errors)
	}
	if len(r.Throughput) == 2 {
		fmt.Fprintf(w, "sealgate/tangd recoveries per CPU-second: %.2f\n", r.Throughput[0].perCore()/r.Throughput[1].perCore())
	}
	s := r.Storm
	fmt.Fprintf(w, "storm: %d hosts at once: all unlocked in %.2fs (p50 %.2fs, p99 %.2fs), gate CPU %.2fs (%.1f ms per host), harness CPU %.2fs, %d retried, %d failed, %d requests abandoned by their client (%d exchanges skipped)\n",
		s.Hosts, s.All.Seconds(), s.P50.Seconds(), s.P99.Seconds(), s.CPU.Seconds(), s.CPU.Seconds()*1000/float64(s.Hosts), s.Client.Seconds(), s.Retried, s.Failed, s.Abandoned, s.Skipped)
	for e, n := range s.Errors {
		fmt.Fprintf(w, "  %d× %s\n", n, e)
	}
}

// approvalCode matches the code in an error, which differs per host.
var approvalCode = regexp.MustCompile(`\b[A-Z0-9]{4}-[A-Z0-9]{4}\b`)

// unlockTimeout is [unlock] timeout's default: how long a host keeps
// trying.
const unlockTimeout = 5 * time.Minute

// secret is what each host recovers: the size of a PEM P-256 key.
var secret = bytes.Repeat([]byte("k"), 241)

func run(ctx context.Context, c config, log io.Writer) (*report, error) {
	dir, err := os.MkdirTemp("", "storm-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	if c.sealgate == "" {
		fmt.Fprintln(log, "building ./cmd/sealgate")
		if c.sealgate, err = testenv.Build(ctx, "sealgate", dir, "GOEXPERIMENT=runtimesecret"); err != nil {
			return nil, err
		}
	}
	load, _ := os.ReadFile("/proc/loadavg")
	r := &report{Load: strings.TrimSpace(string(load))}

	gateURL, gatePID, stop, err := startGate(ctx, c, dir)
	if err != nil {
		return nil, err
	}
	defer stop()
	gateJWE, err := seal(ctx, gateURL)
	if err != nil {
		return nil, err
	}
	// The throughput run's sources: 127.1.0.0/16, one address per
	// recovery, so no per-source bound applies.
	t, err := measure(ctx, "sealgate", gateJWE, gatePID, c.recoveries, c.concurrency, 1)
	if err != nil {
		return nil, err
	}
	r.Throughput = append(r.Throughput, t)
	if !c.noTangd {
		tangURL, tangPID, stopTang, err := startTangd(ctx, c, dir)
		if err != nil {
			return nil, err
		}
		defer stopTang()
		jwe, err := seal(ctx, tangURL)
		if err != nil {
			return nil, err
		}
		t, err := measure(ctx, "tangd", jwe, tangPID, c.recoveries, c.concurrency, 1)
		if err != nil {
			return nil, err
		}
		r.Throughput = append(r.Throughput, t)
		stopTang()
	}
	fmt.Fprintf(log, "storm: %d hosts\n", c.hosts)
	r.Storm, err = startStorm(ctx, gateJWE, gatePID, c.hosts)
	// A request whose client left before its exchange is logged with the
	// gate's 503 "client gone ..." (docs/approval.md, Decisions).
	logs := stop()
	r.Storm.Abandoned = bytes.Count(logs, []byte(`err="client gone`))
	r.Storm.Skipped = bytes.Count(logs, []byte(`err="client gone before the exchange`))
	return r, err
}

// startGate runs `sealgate serve --approval required` over fresh keys,
// with a policy that approves the loopback network.
func startGate(ctx context.Context, c config, dir string) (url string, pid int, stop func() []byte, err error) {
	keys := filepath.Join(dir, "gate")
	if err := os.Mkdir(keys, 0o700); err != nil {
		return "", 0, nil, err
	}
	if out, err := exec.CommandContext(ctx, c.sealgate, "keygen", "--dir", keys).CombinedOutput(); err != nil {
		return "", 0, nil, fmt.Errorf("sealgate keygen: %v: %s", err, out)
	}
	policy := filepath.Join(dir, "policy.toml")
	network := c.policy
	if network == "" {
		network = "127.0.0.0/8"
	}
	if err := os.WriteFile(policy, []byte("[[rule]]\nname = \"fleet\"\naction = \"approve\"\nsources = [\""+network+"\"]\n"), 0o600); err != nil {
		return "", 0, nil, err
	}
	addr, err := testenv.FindFreeAddr()
	if err != nil {
		return "", 0, nil, err
	}
	args := []string{"serve", "--dir", keys, "--listen", addr, "--approval", "required", "--policy", policy, "--landlock", "off"}
	if c.maxConns > 0 {
		args = append(args, "--max-connections", strconv.Itoa(c.maxConns))
	}
	cmd := pinned(c.serverCPU, c.sealgate, args...)
	var logs bytes.Buffer
	cmd.Stderr = &logs
	if err := cmd.Start(); err != nil {
		return "", 0, nil, err
	}
	// stop returns the gate's log, read once it exited.
	stopped := false
	stop = func() []byte {
		if !stopped {
			stopped = true
			cmd.Process.Kill()
			cmd.Wait()
		}
		return logs.Bytes()
	}
	if err := waitUp(ctx, addr); err != nil {
		stop()
		return "", 0, nil, fmt.Errorf("sealgate did not come up: %v\n%s", err, logs.Bytes())
	}
	return "http://" + addr, cmd.Process.Pid, stop, nil
}

// startTangd runs Debian's tangd behind socat (one process per
// connection), as testenv.ServeRealTang does, pinned like the gate.
func startTangd(ctx context.Context, c config, dir string) (url string, pid int, stop func(), err error) {
	keys := filepath.Join(dir, "tangd")
	if err := os.Mkdir(keys, 0o700); err != nil {
		return "", 0, nil, err
	}
	if out, err := exec.CommandContext(ctx, testenv.TangdKeygenPath, keys).CombinedOutput(); err != nil {
		return "", 0, nil, fmt.Errorf("tangd-keygen (apt-get install tang): %v: %s", err, out)
	}
	addr, err := testenv.FindFreeAddr()
	if err != nil {
		return "", 0, nil, err
	}
	_, port, _ := net.SplitHostPort(addr)
	cmd := pinned(c.serverCPU, "socat", "TCP-LISTEN:"+port+",bind=127.0.0.1,reuseaddr,fork,backlog=1024", "EXEC:"+testenv.TangdPath+" "+keys)
	cmd.WaitDelay = 2 * time.Second
	if err := cmd.Start(); err != nil {
		return "", 0, nil, fmt.Errorf("socat (apt-get install socat): %w", err)
	}
	stop = sync.OnceFunc(func() { cmd.Process.Kill(); cmd.Wait() })
	if err := waitUp(ctx, addr); err != nil {
		stop()
		return "", 0, nil, err
	}
	return "http://" + addr, cmd.Process.Pid, stop, nil
}

func pinned(cpu int, name string, args ...string) *exec.Cmd {
	if cpu < 0 {
		return exec.Command(name, args...)
	}
	return exec.Command("taskset", append([]string{"-c", strconv.Itoa(cpu), name}, args...)...)
}

func waitUp(ctx context.Context, addr string) error {
	deadline := time.Now().Add(20 * time.Second)
	for {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
			return nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return err
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// seal makes the JWE every host recovers, trusting the server's
// advertisement (it is our own, just started).
func seal(ctx context.Context, url string) ([]byte, error) {
	return unlock.Encrypt(ctx, "tang", []byte(`{"url":"`+url+`"}`), secret, &unlock.Options{TrustOnFirstUse: true})
}

// host is one host's start-up: its own client bound to source, a
// session per attempt and one recovery, as sealproxy's keyring does it,
// with its retries: a server that does not answer (or a full gate, or a
// lost session) is asked again after 1 s, doubling to 30 s, each wait
// drawn between half and all of it, until the
// context ends ([unlock] timeout, 5 minutes by default). It returns the
// attempts made.
func host(ctx context.Context, jwe []byte, source net.IP, name string) (int, error) {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: source}}
	hc := &http.Client{Transport: &http.Transport{DialContext: d.DialContext, DisableKeepAlives: true}}
	backoff := time.Second
	for attempt := 1; ; attempt++ {
		buf, err := unlock.Decrypt(ctx, jwe, &unlock.Options{
			Tang:    &tang.Client{HTTP: hc},
			Startup: unlock.NewStartup(name),
		})
		if err == nil {
			ok := bytes.Equal(buf.Bytes(), secret)
			buf.Destroy()
			if !ok {
				return attempt, errors.New("recovered the wrong secret")
			}
			return attempt, nil
		}
		retry := errors.Is(err, tang.ErrUnreachable) || errors.Is(err, tang.ErrGateFull) || errors.Is(err, tang.ErrSessionLost)
		if !retry || ctx.Err() != nil {
			return attempt, err
		}
		select {
		case <-ctx.Done():
			return attempt, err
		case <-time.After(backoff/2 + rand.N(backoff/2+1)):
		}
		backoff = min(2*backoff, 30*time.Second)
	}
}

// source is the i-th address of 127.NET.0.0/16, skipping .0 and .255.
func source(net8 byte, i int) net.IP {
	return net.IPv4(127, net8, byte(i/250), byte(i%250+1))
}

func measure(ctx context.Context, name string, jwe []byte, pid, n, conc int, net8 byte) (throughput, error) {
	cpu0, err := cpuTime(pid)
	if err != nil {
		return throughput{}, err
	}
	var next, errs atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	for range conc {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				if n, err := host(ctx, jwe, source(net8, i), fmt.Sprintf("bench-%d", i)); err != nil || n > 1 {
					errs.Add(1) // a retry is an error here: the server was not keeping up
				}
			}
		})
	}
	wg.Wait()
	wall := time.Since(start)
	cpu1, err := cpuTime(pid)
	if err != nil {
		return throughput{}, err
	}
	t := throughput{Server: name, N: n, Wall: wall, CPU: cpu1 - cpu0, Errors: int(errs.Load())}
	if t.Errors == n {
		return t, fmt.Errorf("%s: every recovery failed", name)
	}
	return t, nil
}

func startStorm(ctx context.Context, jwe []byte, pid, hosts int) (storm, error) {
	s := storm{Hosts: hosts, Errors: map[string]int{}}
	cpu0, err := cpuTime(pid)
	if err != nil {
		return s, err
	}
	took := make([]time.Duration, hosts)
	var mu sync.Mutex
	var wg sync.WaitGroup
	gun := make(chan struct{})
	var start time.Time
	for i := range hosts {
		wg.Go(func() {
			<-gun
			hctx, cancel := context.WithTimeout(ctx, unlockTimeout)
			defer cancel()
			n, err := host(hctx, jwe, source(2, i), fmt.Sprintf("host-%d", i))
			took[i] = time.Since(start)
			mu.Lock()
			defer mu.Unlock()
			if n > 1 {
				s.Retried++
			}
			if err != nil {
				s.Failed++
				s.Errors[approvalCode.ReplaceAllString(err.Error(), "XXXX-XXXX")]++ // one line per kind
			}
		})
	}
	time.Sleep(100 * time.Millisecond) // every goroutine waits at the gun
	self0, err := cpuTime(os.Getpid())
	if err != nil {
		return s, err
	}
	start = time.Now()
	close(gun)
	wg.Wait()
	cpu1, err := cpuTime(pid)
	if err != nil {
		return s, err
	}
	self1, err := cpuTime(os.Getpid())
	if err != nil {
		return s, err
	}
	s.CPU, s.Client = cpu1-cpu0, self1-self0
	slices.Sort(took)
	s.All = took[hosts-1]
	s.P50 = took[hosts/2]
	s.P99 = took[hosts*99/100]
	return s, nil
}

// cpuTime is a process's user and system time plus its waited-for
// children's (/proc/PID/stat fields 14-17). With taskset in front, the
// server is taskset's child until taskset execs it: same PID.
func cpuTime(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name (field 2) may hold spaces: start after its ')'.
	rest := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+2:]))
	var ticks int64
	for _, f := range rest[11:15] { // fields 14..17 are rest[11..14]
		v, err := strconv.ParseInt(f, 10, 64)
		if err != nil {
			return 0, err
		}
		ticks += v
	}
	return time.Duration(ticks) * time.Second / 100, nil // USER_HZ is 100 on Linux
}
