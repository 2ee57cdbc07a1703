package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/sealproxy/sealproxy/testenv"
)

// upgradeRun is a `sealproxy run` whose generations (the process the
// test started and the successors of upgrades) write to one log file: a
// pipe would be closed by the test's exec.Cmd once the first
// generation exits, under its successors.
type upgradeRun struct {
	t       *testing.T
	logPath string
	first   *exec.Cmd
}

func startUpgradeRun(t *testing.T, bin, config string) *upgradeRun {
	t.Helper()
	u := startUpgradeCommand(t, bin, "run", "--config", config)
	u.waitLog(time.Minute, "the first process ready", func(l string) bool { return len(u.readyPids()) == 1 })
	return u
}

// startUpgradeCommand starts argv (sealproxy run, or a program that
// executes it in its own place) with its output in the log file.
func startUpgradeCommand(t *testing.T, argv ...string) *upgradeRun {
	t.Helper()
	u := &upgradeRun{t: t, logPath: filepath.Join(t.TempDir(), "sealproxy.log")}
	logf, err := os.Create(u.logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	u.first = exec.Command(argv[0], argv[1:]...)
	u.first.Stdout, u.first.Stderr = logf, logf
	if err := u.first.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = u.first.Wait(); close(exited) }()
	t.Cleanup(func() {
		for _, pid := range u.pids() {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		<-exited
	})
	return u
}

func (u *upgradeRun) logs() string {
	b, err := os.ReadFile(u.logPath)
	if err != nil {
		u.t.Fatal(err)
	}
	return string(b)
}

var (
	readyPidRE   = regexp.MustCompile(`msg=ready .*pid=(\d+)`)
	startedPidRE = regexp.MustCompile(`msg="upgrade: successor started[^"]*" pid=(\d+)`)
)

func pidsOf(re *regexp.Regexp, logs string) []int {
	var pids []int
	for _, m := range re.FindAllStringSubmatch(logs, -1) {
		pid, _ := strconv.Atoi(m[1])
		pids = append(pids, pid)
	}
	return pids
}

// readyPids are the pids that said ready, in order.
func (u *upgradeRun) readyPids() []int { return pidsOf(readyPidRE, u.logs()) }

// pids are every generation's, for the cleanup.
func (u *upgradeRun) pids() []int {
	return append(append([]int{u.first.Process.Pid}, pidsOf(startedPidRE, u.logs())...), u.readyPids()...)
}

func (u *upgradeRun) waitLog(timeout time.Duration, what string, cond func(string) bool) {
	u.t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond(u.logs()) {
		if time.Now().After(deadline) {
			u.t.Fatalf("waiting for %s:\n%s", what, u.logs())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// alive reports whether pid runs (a zombie does not: the successors'
// parents exit, and nothing may reap them in a container).
func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i > 0 && len(s) > i+2 && s[i+2] != 'Z'
}

// upgradeLoad is continuous load through one listener: clients that
// each make a new TLS connection (a full handshake) per request, and
// long-lived streams.
type upgradeLoad struct {
	addr string
	tls  *tls.Config
	// dialer, when set, makes the connections instead of a TLS dial to
	// addr (the pool's load: a session the pool secured).
	dialer func() (net.Conn, error)

	conns, reqs, failedConns, failedReqs atomic.Int64
	streams, failedStreams               atomic.Int64

	mu   sync.Mutex
	errs []string
	stop chan struct{}
	wg   sync.WaitGroup
}

func (l *upgradeLoad) fail(n *atomic.Int64, format string, args ...any) {
	n.Add(1)
	l.mu.Lock()
	if len(l.errs) < 20 {
		l.errs = append(l.errs, time.Now().Format("15:04:05.000 ")+fmt.Sprintf(format, args...))
	}
	l.mu.Unlock()
}

func (l *upgradeLoad) dial() (net.Conn, error) {
	if l.dialer != nil {
		return l.dialer()
	}
	return tls.DialWithDialer(&net.Dialer{Timeout: 10 * time.Second}, "tcp", l.addr, l.tls)
}

// handshakes runs n clients until stop.
func (l *upgradeLoad) handshakes(n int) {
	for i := range n {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			for j := 0; ; j++ {
				select {
				case <-l.stop:
					return
				default:
				}
				c, err := l.dial()
				if err != nil {
					l.fail(&l.failedConns, "client %d: dial: %v", i, err)
					continue
				}
				l.conns.Add(1)
				msg := fmt.Sprintf("client %d request %d\n", i, j)
				_ = c.SetDeadline(time.Now().Add(10 * time.Second))
				_, err = io.WriteString(c, msg)
				line := ""
				if err == nil {
					line, err = bufio.NewReader(c).ReadString('\n')
				}
				if err != nil || line != msg {
					l.fail(&l.failedReqs, "client %d: echo %q: %v", i, line, err)
				} else {
					l.reqs.Add(1)
				}
				c.Close()
			}
		}()
	}
}

// stream opens a connection that exchanges a line every 50ms for d; it
// returns once the first line came back, and done is closed at its end.
func (l *upgradeLoad) stream(t *testing.T, d time.Duration) (done chan struct{}) {
	t.Helper()
	c, err := l.dial()
	if err != nil {
		t.Fatalf("stream: %v", err)
	}
	r := bufio.NewReader(c)
	exchange := func(msg string) error {
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.WriteString(c, msg); err != nil {
			return err
		}
		line, err := r.ReadString('\n')
		if err == nil && line != msg {
			err = fmt.Errorf("echo %q, want %q", line, msg)
		}
		return err
	}
	if err := exchange("first\n"); err != nil {
		t.Fatalf("stream: %v", err)
	}
	done = make(chan struct{})
	go func() {
		defer close(done)
		defer c.Close()
		end := time.Now().Add(d)
		for i := 0; time.Now().Before(end); i++ {
			if err := exchange(fmt.Sprintf("line %d\n", i)); err != nil {
				l.fail(&l.failedStreams, "stream: %v", err)
				return
			}
			l.reqs.Add(1)
			time.Sleep(50 * time.Millisecond)
		}
		l.streams.Add(1)
	}()
	return done
}

func (l *upgradeLoad) check(t *testing.T) {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.failedConns.Load()+l.failedReqs.Load()+l.failedStreams.Load() != 0 {
		t.Errorf("failed: %d connections, %d requests, %d streams:\n%s",
			l.failedConns.Load(), l.failedReqs.Load(), l.failedStreams.Load(), strings.Join(l.errs, "\n"))
	}
}

// TestUpgradeUnderLoad is issue 16's upgrade target against the real
// binary, its key sealed to the real tangd: under continuous load (new
// TLS connections, and streams that outlive each upgrade) five upgrades
// in a row (SIGUSR2 and `sealproxy upgrade`) each start a new process
// (a new pid that says ready), while the old one finishes its streams
// and then exits; no connection, request or stream fails. Then failed
// upgrades, under the same load: a bad configuration, and a successor
// whose new key a gate's operator denies (the running process's STATUS=
// shows the code the successor waits for), during which a second upgrade
// is refused; the running process keeps serving and logs the reason.
func TestUpgradeUnderLoad(t *testing.T) {
	bin := testenv.BuildCommand(t, "sealproxy")
	tangSrv := testenv.RealTang(t)
	f := newFixture(t)
	f.sealed("web", tangSrv)
	sock := adminSocket(t)
	addr := testenv.FreeAddr(t)
	base := "shutdown_timeout = \"30s\"\n" + key("web") + f.listener("web", addr) +
		"[admin]\nlisten = \"unix:" + sock + "\"\nupgrade = true\n\n"
	path := f.write(base)
	n := listenNotify(t)
	u := startUpgradeRun(t, bin, path)

	load := &upgradeLoad{addr: addr, tls: &tls.Config{RootCAs: f.ca.Pool(), ServerName: "web.test"}, stop: make(chan struct{})}
	load.handshakes(4)
	defer func() {
		select {
		case <-load.stop:
		default:
			close(load.stop)
		}
		load.wg.Wait()
	}()

	upgradeCLI := func() (string, string, error) {
		cmd := exec.Command(bin, "upgrade", "--admin", "unix:"+sock)
		var stdout, stderr strings.Builder
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		return stdout.String(), stderr.String(), err
	}

	var took []time.Duration
	for i := 1; i <= 5; i++ {
		old := u.readyPids()[len(u.readyPids())-1]
		var streams []chan struct{}
		for range 3 {
			streams = append(streams, load.stream(t, 3*time.Second))
		}
		start := time.Now()
		if i%2 == 1 {
			if err := syscall.Kill(old, syscall.SIGUSR2); err != nil {
				t.Fatal(err)
			}
			u.waitLog(time.Minute, fmt.Sprintf("upgrade %d", i), func(string) bool { return len(u.readyPids()) == i+1 })
		} else {
			stdout, stderr, err := upgradeCLI()
			if err != nil || !strings.HasPrefix(stdout, "upgraded: pid ") {
				t.Fatalf("upgrade %d: sealproxy upgrade: %v\n%s%s\n%s", i, err, stdout, stderr, u.logs())
			}
			u.waitLog(time.Minute, fmt.Sprintf("upgrade %d's ready", i), func(string) bool { return len(u.readyPids()) == i+1 })
		}
		took = append(took, time.Since(start))
		pids := u.readyPids()
		now := pids[len(pids)-1]
		if len(pids) != i+1 || now == old {
			t.Fatalf("upgrade %d: ready pids %v, want a new one after %d", i, pids, old)
		}
		if !alive(old) {
			t.Fatalf("upgrade %d: the old process %d exited while its streams were open:\n%s", i, old, u.logs())
		}
		for _, s := range streams {
			<-s
		}
		deadline := time.Now().Add(20 * time.Second)
		for alive(old) {
			if time.Now().After(deadline) {
				t.Fatalf("upgrade %d: the old process %d still runs after its streams ended:\n%s", i, old, u.logs())
			}
			time.Sleep(20 * time.Millisecond)
		}
		if !alive(now) {
			t.Fatalf("upgrade %d: the successor %d does not run", i, now)
		}
	}
	load.check(t)
	t.Logf("5 upgrades: %d connections, %d requests, %d streams; failed: %d connections, %d requests, %d streams; signal to successor ready: %v",
		load.conns.Load(), load.reqs.Load(), load.streams.Load(), load.failedConns.Load(), load.failedReqs.Load(), load.failedStreams.Load(), took)

	// A bad configuration: the successor exits, the reason is logged
	// and answered, the running process serves on.
	serving := u.readyPids()[len(u.readyPids())-1]
	f.write(base + "bogus = 1\n")
	streams := []chan struct{}{load.stream(t, 2*time.Second)}
	_, stderr, err := upgradeCLI()
	if err == nil || !strings.Contains(stderr, "upgrade failed; the running process keeps serving") ||
		!strings.Contains(stderr, "bogus: unknown setting") || !strings.Contains(stderr, "sealproxy: hint: the running process still serves") {
		t.Fatalf("bad configuration: %v\n%s", err, stderr)
	}
	if !regexp.MustCompile(`level=ERROR msg="upgrade failed; this process keeps serving" pid=\d+ err=".*bogus: unknown setting`).MatchString(u.logs()) {
		t.Fatalf("the failed upgrade's reason is not logged:\n%s", u.logs())
	}
	if err := syscall.Kill(serving, syscall.SIGUSR2); err != nil {
		t.Fatal(err)
	}
	u.waitLog(time.Minute, "the second failed upgrade", func(l string) bool {
		return strings.Count(l, "upgrade failed; this process keeps serving") == 2
	})

	// A key whose gate denies the successor; a second upgrade meanwhile
	// is refused.
	g := testenv.StartGate(t, heldGate)
	f.sealedTo("api", g.PinConfig())
	f.write(base + key("api") + f.listener("api", testenv.FreeAddr(t)))
	if err := syscall.Kill(serving, syscall.SIGUSR2); err != nil {
		t.Fatal(err)
	}
	req := g.Next(t, time.Minute)
	// The successor may not speak to systemd yet: the running process
	// shows the code it waits for.
	n.expect(t, "STATUS=serving 1 listener(s); upgrading: ", "code "+req.Code)
	_, stderr, err = upgradeCLI()
	if err == nil || !strings.Contains(stderr, "upgrade refused: an upgrade is already in progress") {
		t.Fatalf("second upgrade while one waits: %v\n%s", err, stderr)
	}
	if code, body := postUpgrade(t, sock); code != http.StatusConflict || !strings.Contains(body, "already in progress") {
		t.Fatalf("POST /upgrade while one waits: %d %q, want 409", code, body)
	}
	if _, err := g.Deny(req.Code, "alice", "not today"); err != nil {
		t.Fatal(err)
	}
	u.waitLog(time.Minute, "the denied upgrade", func(l string) bool {
		return strings.Count(l, "upgrade failed; this process keeps serving") == 3
	})
	if !regexp.MustCompile(`msg="upgrade failed; this process keeps serving" pid=\d+ err=".*recovery denied by operator alice`).MatchString(u.logs()) {
		t.Fatalf("the denial is not the logged reason:\n%s", u.logs())
	}
	for _, s := range streams {
		<-s
	}
	if pids := u.readyPids(); pids[len(pids)-1] != serving || !alive(serving) {
		t.Fatalf("after the failed upgrades: ready pids %v, want %d still serving", pids, serving)
	}
	time.Sleep(500 * time.Millisecond) // load on the survivor
	close(load.stop)
	load.wg.Wait()
	load.check(t)
	if os.Getenv("UPGRADE_DUMP") != "" {
		t.Log(u.logs())
	}
	t.Logf("in all: %d connections, %d requests, %d streams; failed: %d connections, %d requests, %d streams",
		load.conns.Load(), load.reqs.Load(), load.streams.Load(), load.failedConns.Load(), load.failedReqs.Load(), load.failedStreams.Load())

	// The peer, for the figures only: a restart (SIGTERM, then a new
	// process), as without upgrades. A prober dials every 10ms; the
	// outage is from the signal to its first answer again.
	probe := &upgradeLoad{addr: addr, tls: load.tls}
	ok := func() bool {
		c, err := probe.dial()
		if err != nil {
			return false
		}
		defer c.Close()
		_, err = io.WriteString(c, "probe\n")
		if err == nil {
			_, err = bufio.NewReader(c).ReadString('\n')
		}
		return err == nil
	}
	f.write(base)
	start := time.Now()
	if err := syscall.Kill(serving, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	for alive(serving) {
		if time.Since(start) > 45*time.Second { // shutdown_timeout is 30s
			t.Fatalf("the process did not stop on SIGTERM:\n%s", u.logs())
		}
		time.Sleep(5 * time.Millisecond)
	}
	again := startUpgradeCommand(t, bin, "run", "--config", path)
	failed := 0
	for !ok() {
		failed++
		if time.Since(start) > time.Minute {
			t.Fatalf("no answer a minute after the restart:\n%s", again.logs())
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Logf("peer: a restart (SIGTERM, then start) left %d probes every 10ms unanswered: unavailable for %v", failed, time.Since(start).Round(time.Millisecond))
}

// postUpgrade sends POST /upgrade to the unix admin socket.
func postUpgrade(t *testing.T, sock string) (int, string) {
	t.Helper()
	client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", sock)
		},
	}}
	resp, err := client.Post("http://sealproxy/upgrade", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestUpgradeUnderSystemd: the successor is the binary now at the
// running one's path (replaced by rename, as a package upgrade does), it
// takes over a socket systemd passed (listen = "systemd:web", from
// systemd-socket-activate) and the TLS pool's and the admin unix
// sockets. Towards NOTIFY_SOCKET, which sees each sender's pid as
// systemd does, nobody says STOPPING=1 (it would stop the unit), and a
// failed upgrade leaves the main process alone:
//   - with the unit's PIDFile= ($PIDFILE, as the shipped unit has), the
//     successor writes its pid there and stays silent while the old
//     process, still the main one, drains saying only STATUS= and
//     WATCHDOG=1; once it has exited, the successor says READY=1.
//     Nobody says MAINPID=. A second upgrade while the old process
//     drains is refused; a failed one leaves the PID file naming the
//     process that serves.
//   - without, the old process names the successor in MAINPID= before
//     the successor's READY=1, and then says nothing.
func TestUpgradeUnderSystemd(t *testing.T) {
	t.Run("pidfile", func(t *testing.T) { upgradeUnderSystemd(t, true) })
	t.Run("mainpid", func(t *testing.T) { upgradeUnderSystemd(t, false) })
}

func upgradeUnderSystemd(t *testing.T, withPidFile bool) {
	built := testenv.BuildCommand(t, "sealproxy")
	activate := testenv.LookTool(t, "systemd-socket-activate", "systemd")
	f := newFixture(t)
	tangSrv := testenv.EmbeddedTang(t)
	f.sealed("web", tangSrv)
	bin := filepath.Join(f.dir, "sealproxy")
	install := func() uint64 {
		t.Helper()
		b, err := os.ReadFile(built)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(bin+".new", b, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(bin+".new", bin); err != nil {
			t.Fatal(err)
		}
		var st syscall.Stat_t
		if err := syscall.Stat(bin, &st); err != nil {
			t.Fatal(err)
		}
		return st.Ino
	}
	exeInode := func(pid int) uint64 {
		t.Helper()
		var st syscall.Stat_t
		if err := syscall.Stat(fmt.Sprintf("/proc/%d/exe", pid), &st); err != nil {
			t.Fatal(err)
		}
		return st.Ino
	}
	first := install()
	sock := adminSocket(t)
	addr := testenv.FreeAddr(t)
	poolSock := filepath.Join(filepath.Dir(sock), "pool.sock")
	base := key("web") + f.listener("web", "systemd:web") + "[admin]\nlisten = \"unix:" + sock + "\"\nupgrade = true\n\n" +
		fmt.Sprintf("[pool]\nlisten = \"unix:%s\"\nmode = \"0600\"\n\n[[pool.service]]\nname = \"web\"\nrole = \"server\"\nkeys = [\"web\"]\nusers = [\"%d\"]\n\n", poolSock, os.Getuid())
	path := f.write(base)
	n := listenNotify(t)
	pidFile := filepath.Join(filepath.Dir(sock), "sealproxy.pid")
	env := []string{"-E", "NOTIFY_SOCKET=" + os.Getenv("NOTIFY_SOCKET")}
	if withPidFile {
		env = append(env, "-E", "PIDFILE="+pidFile)
	}
	u := startUpgradeCommand(t, append(append([]string{activate, "-l", addr, "--fdname=web"}, env...),
		bin, "run", "--config", path)...)
	names := func(pid int) bool { return pidFileNames(pidFile, pid) }
	// systemd-socket-activate starts sealproxy at the first connection.
	testenv.Eventually(t, 30*time.Second, "systemd-socket-activate listening", func() bool {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
	f.roundTrip(addr, "web", "socket activated")
	n.expect(t, "READY=1")
	old := u.readyPids()[0]
	if exeInode(old) != first {
		t.Fatalf("pid %d does not run %s", old, bin)
	}
	if withPidFile != names(old) {
		t.Fatalf("with PIDFILE %v: the PID file names the first process: %v", withPidFile, names(old))
	}
	// A connection held open keeps the old process draining.
	held, err := f.tlsTo(addr, "web")
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	if _, err := io.WriteString(held, "held"); err != nil {
		t.Fatal(err)
	}
	if b := make([]byte, 4); func() error { _, err := io.ReadFull(held, b); return err }() != nil || string(b) != "held" {
		t.Fatalf("held connection: %q", b)
	}
	for len(n.sent) > 0 {
		<-n.sent
	}
	var seen []notifyMsg // what each process says from the upgrade on
	collect := func() {
		for len(n.sent) > 0 {
			seen = append(seen, <-n.sent)
		}
	}

	second := install()
	out, err := exec.Command(bin, "upgrade", "--admin", "unix:"+sock).CombinedOutput()
	if err != nil {
		t.Fatalf("sealproxy upgrade: %v\n%s\n%s", err, out, u.logs())
	}
	var now int
	if _, err := fmt.Sscanf(string(out), "upgraded: pid %d serves", &now); err != nil || now == old {
		t.Fatalf("sealproxy upgrade said %q (old pid %d)", out, old)
	}
	if ino := exeInode(now); ino != second || second == first {
		t.Fatalf("successor %d runs inode %d, want the replaced binary's %d (the first was %d)", now, ino, second, first)
	}
	f.roundTrip(addr, "web", "served by the successor")
	if withPidFile {
		if !names(now) {
			t.Fatalf("the PID file does not name the successor %d once it serves", now)
		}
		if !alive(old) {
			t.Fatal("the old process exited with a connection open")
		}
		// The successor is not systemd's main process yet: another
		// upgrade would make its own successor a main process whose
		// parent lives.
		out, err := exec.Command(bin, "upgrade", "--admin", "unix:"+sock).CombinedOutput()
		if err == nil || !strings.Contains(string(out), "the previous process still drains") {
			t.Fatalf("an upgrade while the old process drains: %v\n%s", err, out)
		}
		time.Sleep(500 * time.Millisecond)
		collect()
		for _, m := range seen {
			if m.pid == now {
				t.Fatalf("the successor spoke while the old process, the main one, drained: %q", seen)
			}
		}
	}
	held.Close()
	deadline := time.Now().Add(40 * time.Second)
	for alive(old) {
		if time.Now().After(deadline) {
			t.Fatalf("old process %d still runs:\n%s", old, u.logs())
		}
		time.Sleep(20 * time.Millisecond)
	}
	// The unix sockets the successor took over (the pool's, the admin
	// one) are still in place after the old process closed them, and
	// answer.
	for _, p := range []string{poolSock, sock} {
		c, err := net.Dial("unix", p)
		if err != nil {
			t.Fatalf("after the old process exited: %v", err)
		}
		c.Close()
	}
	// Up to the successor's READY=1 (with a PID file: once the old one
	// has exited).
	timeout := time.After(time.Minute)
	for ready := false; !ready; {
		select {
		case m := <-n.sent:
			seen = append(seen, m)
			ready = m.pid == now && strings.Contains(m.text, "READY=1")
		case <-timeout:
			t.Fatalf("no READY=1 from the successor %d: %q\n%s", now, seen, u.logs())
		}
	}
	time.Sleep(300 * time.Millisecond) // and whatever follows at once
	collect()
	mainpid, oldDone := false, false
	for _, m := range seen {
		switch {
		case m.pid != old && m.pid != now:
			t.Fatalf("a message from pid %d (old %d, successor %d): %q", m.pid, old, now, m.text)
		case strings.Contains(m.text, "STOPPING=1"):
			t.Fatalf("STOPPING=1 during the upgrade, from pid %d: %q", m.pid, seen)
		case m.pid == old && strings.Contains(m.text, "READY=1"):
			t.Fatalf("the old process said READY=1: %q", seen)
		case withPidFile && strings.Contains(m.text, "MAINPID="):
			t.Fatalf("MAINPID= with a PID file, from pid %d: %q", m.pid, seen)
		case !withPidFile && m.pid == now && !mainpid:
			t.Fatalf("the successor spoke before the old process named it in MAINPID=: %q", seen)
		case m.pid == old && m.text == fmt.Sprintf("MAINPID=%d", now):
			mainpid = true
		case m.pid == old && withPidFile:
			// Still the main process while it drains: only alive.
			for _, line := range strings.Split(m.text, "\n") {
				if line != "WATCHDOG=1" && !strings.HasPrefix(line, "STATUS=") {
					t.Fatalf("the draining main process said %q", m.text)
				}
			}
			oldDone = oldDone || strings.Contains(m.text, fmt.Sprintf("upgraded: pid %d serves", now))
		case m.pid == old && mainpid:
			t.Fatalf("the old process spoke after it named its successor: %q", seen)
		}
	}
	if withPidFile && !oldDone || !withPidFile && !mainpid {
		t.Fatalf("the old process's STATUS= or MAINPID= is missing: %q", seen)
	}

	// A failed upgrade: no MAINPID=, a STATUS= with the reason.
	for len(n.msgs) > 0 {
		<-n.msgs // seen through n.sent above
	}
	f.write(base + "bogus = 1\n")
	if err := syscall.Kill(now, syscall.SIGUSR2); err != nil {
		t.Fatal(err)
	}
	for _, m := range n.expect(t, "STATUS=serving 1 listener(s); last upgrade failed: successor (pid ") {
		if strings.Contains(m, "MAINPID=") || strings.Contains(m, "STOPPING=1") {
			t.Fatalf("a failed upgrade said %q", m)
		}
	}
	if withPidFile && !names(now) {
		t.Fatalf("after a failed upgrade the PID file does not name %d, which serves", now)
	}
	f.write(base)
	f.roundTrip(addr, "web", "still served after the failed upgrade")
}
