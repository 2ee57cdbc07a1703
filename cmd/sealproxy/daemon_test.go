package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sealproxy/sealproxy/cmd/internal/cli"
	"github.com/sealproxy/sealproxy/internal/secmem"
	"github.com/sealproxy/sealproxy/testenv"
	"github.com/sealproxy/sealproxy/unlock"
)

// fixture is a directory with a CA, certificates, sealed keys and an echo
// backend, for running the daemon in-process.
type fixture struct {
	t       *testing.T
	dir     string
	ca      *testenv.CA
	backend string
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	return &fixture{t: t, dir: t.TempDir(), ca: testenv.NewCA(t, "test CA"), backend: testenv.StartEcho(t, nil).Addr}
}

// sealed writes NAME.crt and NAME.key.jwe, sealed to tangSrv.
func (f *fixture) sealed(name string, tangSrv *testenv.Tang) {
	f.t.Helper()
	leaf := f.ca.Server(f.t, name+".test")
	leaf.WriteFiles(f.t, f.dir, name)
	jwe, err := unlock.Encrypt(context.Background(), "tang", []byte(tangSrv.Config()), leaf.KeyPEM(f.t), nil)
	if err != nil {
		f.t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(f.dir, name+".key.jwe"), jwe, 0o600); err != nil {
		f.t.Fatal(err)
	}
	os.Remove(filepath.Join(f.dir, name+".key"))
}

// key is the [[key]] table of a sealed key.
func key(name string) string {
	return fmt.Sprintf("[[key]]\nname = %q\ncert = \"%s.crt\"\nsource = \"sealed:%s.key.jwe\"\n\n", name, name, name)
}

// listener is an offload [[listener]] named after its key.
func (f *fixture) listener(name, listen string) string {
	return fmt.Sprintf("[[listener]]\nname = %q\nlisten = %q\nmode = \"offload\"\nkeys = [%q]\nbackend = %q\n\n", name, listen, name, f.backend)
}

// write writes sealproxy.toml. A binary built without runtime/secret
// refuses sealed keys (TestRunRefusesUnprotectedMemory); the fixture
// accepts that in such a build, so the same tests run in both modes,
// and a runtimesecret build runs them on the default.
func (f *fixture) write(cfg string) string {
	f.t.Helper()
	if !secmem.Erasing() {
		cfg = "allow_unprotected_memory = true\n" + cfg
	}
	path := filepath.Join(f.dir, "sealproxy.toml")
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		f.t.Fatal(err)
	}
	return path
}

// roundTrip sends msg through a TLS listener and checks the echo.
func (f *fixture) roundTrip(addr, name, msg string) {
	f.t.Helper()
	c, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: f.ca.Pool(), ServerName: name + ".test"})
	if err != nil {
		f.t.Fatalf("dialing %s: %v", addr, err)
	}
	defer c.Close()
	io.WriteString(c, msg)
	c.CloseWrite()
	got, err := io.ReadAll(c)
	if err != nil || string(got) != msg {
		f.t.Fatalf("echo through %s: %q, %v", addr, got, err)
	}
}

// notifySocket is a unixgram socket standing in for systemd's
// NOTIFY_SOCKET; it collects the messages the daemon sends.
type notifySocket struct {
	msgs chan string
	// sent has every message with its sender's pid where the platform
	// tells it (Linux: SO_PASSCRED), else 0; it drops what overflows.
	sent chan notifyMsg
}

type notifyMsg struct {
	pid  int
	text string
}

func (m notifyMsg) String() string { return fmt.Sprintf("pid %d: %s", m.pid, m.text) }

func listenNotify(t *testing.T) *notifySocket {
	t.Helper()
	if runtime.GOOS == "windows" {
		t.Skip("stands in for systemd's NOTIFY_SOCKET with a Unix datagram socket, which Windows lacks")
	}
	dir, err := os.MkdirTemp("", "sd") // short: unix socket paths are bounded
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	path := filepath.Join(dir, "notify")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	t.Setenv("NOTIFY_SOCKET", path)
	n := &notifySocket{msgs: make(chan string, 1000), sent: make(chan notifyMsg, 1000)}
	passCred(t, conn)
	go func() {
		buf, oob := make([]byte, 4096), make([]byte, 256)
		for {
			k, oobn, _, _, err := conn.ReadMsgUnix(buf, oob)
			if err != nil {
				close(n.msgs)
				close(n.sent)
				return
			}
			n.msgs <- string(buf[:k])
			select {
			case n.sent <- notifyMsg{pid: senderPid(oob[:oobn]), text: string(buf[:k])}:
			default:
			}
		}
	}()
	return n
}

// expect waits for a message containing every one of want, and returns
// the messages seen before it (itself included).
func (n *notifySocket) expect(t *testing.T, want ...string) []string {
	t.Helper()
	var seen []string
	timeout := time.After(time.Minute)
	for {
		select {
		case m, ok := <-n.msgs:
			if !ok {
				t.Fatalf("notify socket closed; seen %q, want %q", seen, want)
			}
			seen = append(seen, m)
			all := true
			for _, w := range want {
				all = all && strings.Contains(m, w)
			}
			if all {
				return seen
			}
		case <-timeout:
			t.Fatalf("no notify message with %q; seen %q", want, seen)
		}
	}
}

// running is a daemon started in-process.
type running struct {
	t      *testing.T
	logs   *testenv.SyncBuffer
	done   chan error
	cancel context.CancelFunc
	sigs   chan os.Signal
}

func startDaemon(t *testing.T, d *daemon, path string) *running {
	t.Helper()
	sigs := make(chan os.Signal, 4)
	d.signals = sigs
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{t: t, logs: &testenv.SyncBuffer{}, done: make(chan error, 1), cancel: cancel, sigs: sigs}
	go func() {
		r.done <- d.run(ctx, []string{"run", "--config", path}, strings.NewReader(""), io.Discard, r.logs)
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-r.done:
		case <-time.After(time.Minute):
			t.Error("daemon did not stop")
		}
	})
	return r
}

// addr returns the bound address of a listener from the logs.
func (r *running) addr(name string) string {
	r.t.Helper()
	re := regexp.MustCompile(`msg=listening listener=` + name + ` addr=(\S+)`)
	m := re.FindAllStringSubmatch(r.logs.String(), -1)
	if m == nil {
		r.t.Fatalf("no listening line for %s:\n%s", name, r.logs.String())
	}
	return m[len(m)-1][1]
}

// wait returns the daemon's error once it stopped.
func (r *running) wait() error {
	r.t.Helper()
	select {
	case err := <-r.done:
		r.done <- err // for the cleanup
		return err
	case <-time.After(time.Minute):
		r.t.Fatalf("daemon did not stop:\n%s", r.logs.String())
	}
	return nil
}

// TestStartWaitsForTang: the Tang server is down at start-up; the daemon
// retries with backoff, reports it in STATUS=, listens on nothing, and
// becomes ready once Tang is back.
func TestStartWaitsForTang(t *testing.T) {
	f := newFixture(t)
	tangSrv := testenv.EmbeddedTang(t)
	f.sealed("web", tangSrv)
	tangSrv.Stop()
	// A fixed port, so that the test can see nothing listens early.
	port := testenv.FreeAddr(t)
	path := f.write(key("web") + f.listener("web", port) + "[unlock]\nretry_backoff = \"10ms\"\nretry_backoff_max = \"50ms\"\n")
	n := listenNotify(t)
	r := startDaemon(t, &daemon{}, path)

	n.expect(t, "STATUS=unlocking keys: 0 of 1 open; web: "+tangSrv.URL+" unreachable (attempt 2)")
	if c, err := net.Dial("tcp", port); err == nil {
		c.Close()
		t.Fatal("listening before the key is open")
	}
	tangSrv.Start()
	seen := n.expect(t, "READY=1")
	for _, m := range seen {
		if strings.Contains(m, "READY=1") && !strings.Contains(m, "STATUS=serving 1 listener(s)") {
			t.Errorf("READY without the serving status: %q", m)
		}
	}
	f.roundTrip(r.addr("web"), "web", "after the wait")
	logs := r.logs.String()
	for _, want := range []string{
		`msg="unlocking key" key=web tang_url=` + tangSrv.URL,
		`msg="Tang server unreachable; retrying" key=web tang_url=` + tangSrv.URL,
		`msg="key unlocked" key=web tang_url=` + tangSrv.URL + " took=",
	} {
		if !strings.Contains(logs, want) {
			t.Errorf("logs lack %q:\n%s", want, logs)
		}
	}
	r.cancel()
	if err := r.wait(); err != nil {
		t.Fatal(err)
	}
}

// TestUnlockTimeout: when Tang stays away, start-up gives up after
// [unlock] timeout with one error naming each key still locked, and
// exits 5.
func TestUnlockTimeout(t *testing.T) {
	f := newFixture(t)
	a, b := testenv.EmbeddedTang(t), testenv.EmbeddedTang(t)
	f.sealed("a", a)
	f.sealed("b", b)
	a.Stop()
	b.Stop()
	path := f.write(key("a") + key("b") + f.listener("a", "127.0.0.1:0") + f.listener("b", "127.0.0.1:0") +
		"[unlock]\ntimeout = \"300ms\"\nretry_backoff = \"10ms\"\n")
	_, stderr, code := runCLI(t, "run", "--config", path)
	if code != exitUnlock {
		t.Errorf("exit code %d, want %d", code, exitUnlock)
	}
	for _, want := range []string{
		"sealproxy: error: gave up unlocking after ",
		// A slow host (Wine, load) may fit one attempt into the timeout,
		// and a single attempt is not counted in the message.
		"([unlock] timeout): 2 key(s) still locked: key \"a\"",
		"recovering sealed key sealed:a.key.jwe: tang " + a.URL,
		"tang server unreachable",
		"; key \"b\"",
		"tang " + b.URL,
		"sealproxy: hint: check that this host reaches the Tang servers",
	} {
		if !strings.Contains(stderr, want) {
			t.Errorf("stderr lacks %q:\n%s", want, stderr)
		}
	}
	if strings.Contains(stderr, "msg=listening") {
		t.Error("listened although keys stayed locked")
	}
}

// TestUnlockFailsFast: a key that cannot be opened at all (its JWE is
// damaged) ends start-up at once, without waiting for the timeout; the
// error names it first, and the key still waiting for Tang after it.
func TestUnlockFailsFast(t *testing.T) {
	f := newFixture(t)
	a, b := testenv.EmbeddedTang(t), testenv.EmbeddedTang(t)
	f.sealed("bad", a)
	f.sealed("wait", b)
	b.Stop()
	if err := os.WriteFile(filepath.Join(f.dir, "bad.key.jwe"), []byte("not.a.jwe.at.all"), 0o600); err != nil {
		t.Fatal(err)
	}
	path := f.write(key("wait") + key("bad") + f.listener("wait", "127.0.0.1:0") + f.listener("bad", "127.0.0.1:0") +
		"[unlock]\ntimeout = \"10m\"\nretry_backoff = \"10ms\"\n")
	_, stderr, code := runCLI(t, "run", "--config", path)
	if code != exitUnlock {
		t.Errorf("exit code %d, want %d", code, exitUnlock)
	}
	if strings.Contains(stderr, "gave up unlocking after") {
		t.Error("waited for the timeout")
	}
	re := regexp.MustCompile(`2 key\(s\) still locked: key "bad": recovering sealed key sealed:bad.key.jwe: .*; key "wait"( \(\d+ attempts\))?: not waited for: another key failed`)
	if !re.MatchString(stderr) {
		t.Errorf("stderr does not match %s:\n%s", re, stderr)
	}
}

// TestReloadAndDrain drives the daemon through its signals: SIGHUP adds
// a listener with a new sealed key (the old key is not recovered again,
// and a connection open across the reload keeps working), systemd hears
// RELOADING=1 with MONOTONIC_USEC= and READY=1; SIGTERM stops accepting,
// sends STOPPING=1, lets the connection in flight finish, and exits 0.
func TestReloadAndDrain(t *testing.T) {
	f := newFixture(t)
	tangSrv := testenv.EmbeddedTang(t)
	f.sealed("web", tangSrv)
	f.sealed("api", tangSrv)
	path := f.write("shutdown_timeout = \"1m\"\n" + key("web") + key("api") + f.listener("web", "127.0.0.1:0"))
	n := listenNotify(t)
	r := startDaemon(t, &daemon{}, path)
	n.expect(t, "READY=1")
	web := r.addr("web")

	// A connection in flight across the reload and into the stop.
	inflight, err := tls.Dial("tcp", web, &tls.Config{RootCAs: f.ca.Pool(), ServerName: "web.test"})
	if err != nil {
		t.Fatal(err)
	}
	defer inflight.Close()
	echo := func(msg string) {
		t.Helper()
		io.WriteString(inflight, msg)
		buf := make([]byte, len(msg))
		if _, err := io.ReadFull(inflight, buf); err != nil || string(buf) != msg {
			t.Fatalf("in-flight echo %q: %q, %v", msg, buf, err)
		}
	}
	echo("before")

	// Traffic keeps flowing while the reload happens.
	stopTraffic := make(chan struct{})
	var traffic sync.WaitGroup
	var trafficErr error
	traffic.Add(1)
	go func() {
		defer traffic.Done()
		for i := 0; ; i++ {
			select {
			case <-stopTraffic:
				return
			default:
			}
			c, err := tls.Dial("tcp", web, &tls.Config{RootCAs: f.ca.Pool(), ServerName: "web.test"})
			if err != nil {
				trafficErr = err
				return
			}
			msg := fmt.Sprintf("message %d", i)
			io.WriteString(c, msg)
			c.CloseWrite()
			got, err := io.ReadAll(c)
			c.Close()
			if err != nil || string(got) != msg {
				trafficErr = fmt.Errorf("echo %q: %q, %v", msg, got, err)
				return
			}
		}
	}()

	f.write("shutdown_timeout = \"1m\"\n" + key("web") + key("api") + f.listener("web", "127.0.0.1:0") + f.listener("api", "127.0.0.1:0"))
	r.sigs <- syscall.SIGHUP
	n.expect(t, "RELOADING=1", "MONOTONIC_USEC=")
	n.expect(t, "READY=1", "STATUS=serving 2 listener(s)")
	close(stopTraffic)
	traffic.Wait()
	if trafficErr != nil {
		t.Fatalf("traffic during the reload: %v", trafficErr)
	}
	f.roundTrip(r.addr("api"), "api", "new listener")
	echo("after reload")
	logs := r.logs.String()
	if got := strings.Count(logs, `msg="key unlocked" key=web`); got != 1 {
		t.Errorf("web unlocked %d times, want once (kept across the reload):\n%s", got, logs)
	}
	if got := strings.Count(logs, `msg="key unlocked" key=api`); got != 1 {
		t.Errorf("api unlocked %d times, want once:\n%s", got, logs)
	}

	r.sigs <- syscall.SIGTERM
	n.expect(t, "STOPPING=1")
	// Stopped accepting...
	testenv.Eventually(t, time.Minute, "the listener to refuse after SIGTERM (still accepting)", func() bool {
		c, err := net.Dial("tcp", web)
		if err != nil {
			return true
		}
		c.Close()
		return false
	})
	// ...but the connection in flight is served to its end.
	select {
	case err := <-r.done:
		t.Fatalf("stopped with a connection in flight: %v", err)
	default:
	}
	echo("during the drain")
	inflight.CloseWrite()
	if rest, err := io.ReadAll(inflight); err != nil || len(rest) != 0 {
		t.Fatalf("end of the in-flight connection: %q, %v", rest, err)
	}
	if err := r.wait(); err != nil {
		t.Fatalf("run after SIGTERM: %v", err)
	}
	if !strings.Contains(r.logs.String(), "msg=stopped") {
		t.Errorf("no stopped line:\n%s", r.logs.String())
	}
}

// TestSecondSignalForces: a second SIGTERM ends a drain that would wait
// for a connection in flight.
func TestSecondSignalForces(t *testing.T) {
	f := newFixture(t)
	tangSrv := testenv.EmbeddedTang(t)
	f.sealed("web", tangSrv)
	path := f.write("shutdown_timeout = \"10m\"\n" + key("web") + f.listener("web", "127.0.0.1:0"))
	n := listenNotify(t)
	r := startDaemon(t, &daemon{}, path)
	n.expect(t, "READY=1")
	c, err := tls.Dial("tcp", r.addr("web"), &tls.Config{RootCAs: f.ca.Pool(), ServerName: "web.test"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	r.sigs <- syscall.SIGTERM
	n.expect(t, "STOPPING=1")
	r.sigs <- syscall.SIGINT
	err = r.wait()
	if !errors.Is(err, errForced) {
		t.Fatalf("run = %v, want %v", err, errForced)
	}
	if code := cli.Report("sealproxy", err, io.Discard); code != cli.ExitFailure {
		t.Errorf("exit code %d", code)
	}
}

// TestAdminReload: POST /reload on a loopback admin listener reloads and
// answers once it is applied; a failed reload answers 500 and keeps the
// previous configuration.
func TestAdminReload(t *testing.T) {
	f := newFixture(t)
	tangSrv := testenv.EmbeddedTang(t)
	f.sealed("web", tangSrv)
	f.sealed("api", tangSrv)
	admin := "[admin]\nlisten = \"127.0.0.1:0\"\nreload = true\n"
	path := f.write(key("web") + key("api") + f.listener("web", "127.0.0.1:0") + admin)
	n := listenNotify(t)
	r := startDaemon(t, &daemon{}, path)
	n.expect(t, "READY=1")
	m := adminRE.FindStringSubmatch(r.logs.String())
	if m == nil {
		t.Fatalf("no admin line:\n%s", r.logs.String())
	}
	post := func() (int, string) {
		resp, err := http.Post("http://"+m[1]+"/reload", "", nil)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}
	f.write(key("web") + key("api") + f.listener("web", "127.0.0.1:0") + f.listener("api", "127.0.0.1:0") + admin)
	if code, body := post(); code != 200 || body != "reloaded\n" {
		t.Fatalf("POST /reload = %d %q", code, body)
	}
	f.roundTrip(r.addr("api"), "api", "reloaded by POST")
	f.write(key("web") + f.listener("web", "127.0.0.1:0") + "bogus = 1\n" + admin)
	if code, body := post(); code != 500 || !strings.Contains(body, "the previous configuration stays") || !strings.Contains(body, "bogus: unknown setting") {
		t.Fatalf("POST /reload of a bad file = %d %q", code, body)
	}
	f.roundTrip(r.addr("api"), "api", "still there")
}

// TestSocketActivation: listen = "systemd:NAME" takes the socket passed
// under that name (here handed over in-process, as activation would).
func TestSocketActivation(t *testing.T) {
	f := newFixture(t)
	tangSrv := testenv.EmbeddedTang(t)
	f.sealed("web", tangSrv)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if runtime.GOOS == "windows" {
		t.Skip("socket activation is systemd's; TCPListener.File is not supported on Windows")
	}
	file, err := ln.(*net.TCPListener).File()
	if err != nil {
		t.Fatal(err)
	}
	defer file.Close()
	sockets := func() map[string][]*os.File { return map[string][]*os.File{"web": {file}, "spare": {file}} }

	path := f.write(key("web") + f.listener("web", "systemd:web"))
	n := listenNotify(t)
	r := startDaemon(t, &daemon{sockets: sockets}, path)
	n.expect(t, "READY=1")
	f.roundTrip(ln.Addr().String(), "web", "activated")
	if !strings.Contains(r.logs.String(), `msg="systemd passed a socket no listener uses (listen = \"systemd:NAME\")" name=spare`) {
		t.Errorf("no warning about the unused socket:\n%s", r.logs.String())
	}
	r.cancel()
	if err := r.wait(); err != nil {
		t.Fatal(err)
	}

	path = f.write(key("web") + f.listener("web", "systemd:api"))
	var stderr testenv.SyncBuffer
	err = (&daemon{sockets: sockets}).run(context.Background(), []string{"run", "--config", path}, nil, io.Discard, &stderr)
	if code := cli.Report("sealproxy", err, &stderr); code != cli.ExitFailure ||
		!strings.Contains(stderr.String(), `listen systemd:api: systemd passed no socket named "api" (FileDescriptorName=); it passed: spare, web`) {
		t.Errorf("code %d, stderr:\n%s", code, stderr.String())
	}
}

// TestWatchdog: with WATCHDOG_USEC set, the daemon pings WATCHDOG=1.
func TestWatchdog(t *testing.T) {
	f := newFixture(t)
	tangSrv := testenv.EmbeddedTang(t)
	f.sealed("web", tangSrv)
	path := f.write(key("web") + f.listener("web", "127.0.0.1:0"))
	n := listenNotify(t)
	t.Setenv("WATCHDOG_USEC", "100000")
	startDaemon(t, &daemon{}, path)
	n.expect(t, "READY=1")
	n.expect(t, "WATCHDOG=1")
}

// TestStopWhileUnlocking: SIGTERM while start-up waits for Tang ends it
// at once, cleanly (exit 0), having listened on nothing; a SIGHUP before
// then is ignored.
func TestStopWhileUnlocking(t *testing.T) {
	f := newFixture(t)
	tangSrv := testenv.EmbeddedTang(t)
	f.sealed("web", tangSrv)
	tangSrv.Stop()
	path := f.write(key("web") + f.listener("web", "127.0.0.1:0") + "[unlock]\ntimeout = \"10m\"\nretry_backoff = \"10ms\"\n")
	n := listenNotify(t)
	r := startDaemon(t, &daemon{}, path)
	n.expect(t, "web: "+tangSrv.URL+" unreachable (attempt 1)")
	r.sigs <- syscall.SIGHUP
	r.sigs <- syscall.SIGTERM
	n.expect(t, "STOPPING=1")
	if err := r.wait(); err != nil {
		t.Fatalf("run = %v, want a clean stop", err)
	}
	logs := r.logs.String()
	if strings.Contains(logs, "msg=listening") || !strings.Contains(logs, `msg="reload signal ignored: still starting"`) ||
		!strings.Contains(logs, `msg="stopped before start-up was complete"`) {
		t.Errorf("logs:\n%s", logs)
	}
}

// TestRunRefusesUnprotectedMemory: a binary built without runtime/secret
// refuses to start with a sealed key, before asking Tang, with a hint to
// use a protected build; allow_unprotected_memory = true accepts it. A
// runtimesecret build (the Makefile's second run) starts on the default.
func TestRunRefusesUnprotectedMemory(t *testing.T) {
	f := newFixture(t)
	tangSrv := testenv.EmbeddedTang(t)
	f.sealed("web", tangSrv)
	cfg := key("web") + f.listener("web", "127.0.0.1:0")
	path := filepath.Join(f.dir, "sealproxy.toml")
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	if secmem.Erasing() {
		n := listenNotify(t)
		r := startDaemon(t, &daemon{}, path)
		n.expect(t, "READY=1")
		f.roundTrip(r.addr("web"), "web", "protected build")
		return
	}
	tangSrv.Stop() // refused before Tang is asked: no unreachable-Tang retries
	_, stderr, code := runCLI(t, "run", "--config", path)
	for _, want := range []string{
		"sealproxy: error: sealed keys are refused: this binary leaves copies of a key in freed memory: it was built without GOEXPERIMENT=runtimesecret",
		"sealproxy: hint: build sealproxy with 'make build' (GOEXPERIMENT=runtimesecret) or install the release package",
		"allow_unprotected_memory = true",
	} {
		if !strings.Contains(stderr, want) {
			t.Errorf("stderr lacks %q:\n%s", want, stderr)
		}
	}
	if code != cli.ExitFailure {
		t.Errorf("exit %d, want %d", code, cli.ExitFailure)
	}
	tangSrv.Start()
	if err := os.WriteFile(path, []byte("allow_unprotected_memory = true\n"+cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	n := listenNotify(t)
	r := startDaemon(t, &daemon{}, path)
	n.expect(t, "READY=1")
	f.roundTrip(r.addr("web"), "web", "accepted")
}

// TestRunLogsConfigWarnings: what `sealproxy check` warns about (a CBC
// suite, outside the intermediate defaults) is logged by `run` too, at
// start-up and at each reload, so an operator who never ran check still
// sees it in the journal.
func TestRunLogsConfigWarnings(t *testing.T) {
	f := newFixture(t)
	f.ca.Server(t, "web.test").WriteFiles(t, f.dir, "web")
	path := f.write("allow_plaintext_keys = true\n\n" +
		"[[key]]\nname = \"web\"\ncert = \"web.crt\"\nsource = \"file:web.key\"\n\n" +
		f.listener("web", "127.0.0.1:0") +
		"[listener.tls]\ncipher_suites = [\"TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256\", \"TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA\"]\n")
	r := startDaemon(t, &daemon{}, path)
	const want = "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA is a CBC suite"
	r.logs.WaitFor(t, time.Minute, "msg=ready")
	if n := strings.Count(r.logs.String(), want); n != 1 {
		t.Fatalf("%d warnings at start-up, want 1:\n%s", n, r.logs.String())
	}
	if runtime.GOOS == "windows" {
		return // no SIGHUP there: the service reloads through the admin API
	}
	r.sigs <- syscall.SIGHUP
	r.logs.WaitFor(t, time.Minute, "msg=reloaded")
	if n := strings.Count(r.logs.String(), want); n != 2 {
		t.Fatalf("%d warnings after a reload, want 2:\n%s", n, r.logs.String())
	}
}
