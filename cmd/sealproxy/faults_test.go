package main

import (
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
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sealproxy/sealproxy/testenv"
)

// Fault injection, end to end: each TestFault runs the real daemon (in
// process, or as a process in faults_linux_test.go) against real TLS
// clients, injects one fault, and asserts the outcome. Each logs one line
// "FAULT name: outcome" with the figures; collect them with
//
//	go test -run TestFault -v ./cmd/sealproxy/ ./unlock/gate/ | grep FAULT

// faultTimeout bounds every wait of the fault tests.
const faultTimeout = 30 * time.Second

// plainHTTP makes one request per connection: no idle connection (and
// goroutine) outlives a request.
var plainHTTP = &http.Client{Timeout: faultTimeout, Transport: &http.Transport{DisableKeepAlives: true}}

// waitReady waits for the daemon's ready line; it fails at once if the
// daemon stopped instead (hence its own loop, not testenv.Eventually).
func (r *running) waitReady() {
	r.t.Helper()
	deadline := time.Now().Add(faultTimeout)
	for !strings.Contains(r.logs.String(), "msg=ready") {
		select {
		case err := <-r.done:
			r.done <- err
			r.t.Fatalf("daemon stopped before it was ready: %v\n%s", err, r.logs.String())
		default:
		}
		if time.Now().After(deadline) {
			r.t.Fatalf("daemon not ready:\n%s", r.logs.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// alive fails the test if the daemon has stopped.
func (r *running) alive() {
	r.t.Helper()
	select {
	case err := <-r.done:
		r.done <- err
		r.t.Fatalf("daemon stopped: %v\n%s", err, r.logs.String())
	default:
	}
}

// admin returns the admin listener's address from the logs.
func (r *running) admin() string {
	r.t.Helper()
	m := adminRE.FindStringSubmatch(r.logs.String())
	if m == nil {
		r.t.Fatalf("no admin line:\n%s", r.logs.String())
	}
	return m[1]
}

// reload asks the admin listener to reload and returns its answer.
func (r *running) reload() (int, string) {
	r.t.Helper()
	resp, err := plainHTTP.Post("http://"+r.admin()+"/reload", "", nil)
	if err != nil {
		r.t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// metric reads one sample from the admin listener's /metrics: series is
// the metric's name and labels as exposed, e.g.
// `sealproxy_reloads_total{result="failure"}`; absent is 0.
func (r *running) metric(series string) float64 {
	r.t.Helper()
	resp, err := plainHTTP.Get("http://" + r.admin() + "/metrics")
	if err != nil {
		r.t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(body), "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				r.t.Fatalf("metric %s: %q", series, line)
			}
			return f
		}
	}
	return 0
}

// tlsTo dials a listener of the fixture as a client that checks its
// certificate.
func (f *fixture) tlsTo(addr, name string) (*tls.Conn, error) {
	d := &net.Dialer{Timeout: faultTimeout}
	return tls.DialWithDialer(d, "tcp", addr, &tls.Config{RootCAs: f.ca.Pool(), ServerName: name + ".test"})
}

// echo sends msg through a listener to an echo backend and checks that it
// comes back; unlike roundTrip it returns the failure (for goroutines).
func (f *fixture) echo(addr, name, msg string) error {
	c, err := f.tlsTo(addr, name)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(faultTimeout))
	if _, err := io.WriteString(c, msg); err != nil {
		return err
	}
	if err := c.CloseWrite(); err != nil {
		return err
	}
	got, err := io.ReadAll(c)
	if err != nil {
		return err
	}
	if string(got) != msg {
		return fmt.Errorf("echo of %q came back as %q", msg, got)
	}
	return nil
}

// traffic is continuous traffic through a listener: workers doing TLS round
// trips in a loop, counting successes and failures.
type traffic struct {
	ok, failed atomic.Int64
	mu         sync.Mutex
	firstErr   error
	stop       chan struct{}
	wg         sync.WaitGroup
}

func (f *fixture) startTraffic(workers int, addr, name string) *traffic {
	l := &traffic{stop: make(chan struct{})}
	for w := range workers {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			for i := 0; ; i++ {
				select {
				case <-l.stop:
					return
				default:
				}
				if err := f.echo(addr, name, fmt.Sprintf("worker %d round %d", w, i)); err != nil {
					l.failed.Add(1)
					l.mu.Lock()
					if l.firstErr == nil {
						l.firstErr = err
					}
					l.mu.Unlock()
					continue
				}
				l.ok.Add(1)
			}
		}()
	}
	return l
}

// waitRounds waits for n more successful round trips.
func (l *traffic) waitRounds(t *testing.T, n int64) {
	t.Helper()
	target := l.ok.Load() + n
	testenv.Eventually(t, faultTimeout, fmt.Sprintf("%d round trips under load", n), func() bool { return l.ok.Load() >= target })
}

func (l *traffic) end() (ok, failed int64, err error) {
	close(l.stop)
	l.wg.Wait()
	return l.ok.Load(), l.failed.Load(), l.firstErr
}

// flapper stands at a fixed address in front of a Tang server and makes
// it come and go: down, nothing listens (connections are refused) and
// every connection open is reset; up, connections are forwarded. With
// cut set, the next connection accepted is reset at once and the flapper
// goes down: a Tang server that dies with a request in flight.
type flapper struct {
	t      *testing.T
	addr   string
	target string

	mu    sync.Mutex
	ln    net.Listener
	conns map[net.Conn]bool
	cut   bool
	cuts  chan struct{} // one per connection cut
	downs int
	wg    sync.WaitGroup
}

func newFlapper(t *testing.T, target string) *flapper {
	fl := &flapper{t: t, addr: testenv.FreeAddr(t), target: target, conns: map[net.Conn]bool{}, cuts: make(chan struct{}, 100)}
	t.Cleanup(func() {
		fl.down()
		fl.wg.Wait()
	})
	return fl
}

func (fl *flapper) URL() string { return "http://" + fl.addr }

// up listens again and forwards; cut makes it reset the next connection
// and go down.
func (fl *flapper) up(cut bool) {
	fl.t.Helper()
	ln := testenv.ListenAgain(fl.t, fl.addr, faultTimeout)
	fl.mu.Lock()
	fl.ln, fl.cut = ln, cut
	fl.mu.Unlock()
	fl.wg.Add(1)
	go func() {
		defer fl.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			fl.mu.Lock()
			if fl.cut {
				fl.cut = false
				reset(c)
				fl.downLocked()
				fl.mu.Unlock()
				fl.cuts <- struct{}{}
				return
			}
			fl.conns[c] = true
			fl.mu.Unlock()
			fl.wg.Add(1)
			go func() {
				defer fl.wg.Done()
				fl.forward(c)
			}()
		}
	}()
}

func (fl *flapper) forward(c net.Conn) {
	defer func() {
		fl.mu.Lock()
		delete(fl.conns, c)
		fl.mu.Unlock()
		c.Close()
	}()
	b, err := net.DialTimeout("tcp", fl.target, faultTimeout)
	if err != nil {
		return
	}
	defer b.Close()
	fl.mu.Lock()
	if !fl.conns[c] { // went down meanwhile
		fl.mu.Unlock()
		return
	}
	fl.conns[b] = true
	fl.mu.Unlock()
	go func() { io.Copy(b, c); b.(*net.TCPConn).CloseWrite() }()
	io.Copy(c, b)
	fl.mu.Lock()
	delete(fl.conns, b)
	fl.mu.Unlock()
}

func (fl *flapper) down() {
	fl.mu.Lock()
	defer fl.mu.Unlock()
	fl.downLocked()
}

func (fl *flapper) downLocked() {
	if fl.ln == nil {
		return
	}
	fl.ln.Close()
	fl.ln = nil
	fl.downs++
	for c := range fl.conns {
		reset(c)
		delete(fl.conns, c)
	}
}

// reset closes c with an RST instead of a FIN.
func reset(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		tc.SetLinger(0)
	}
	c.Close()
}

var unlockedRE = regexp.MustCompile(`msg="key unlocked" key=(\S+) .*attempts=(\d+)`)

// unlocks counts the "key unlocked" lines of each key, and returns the
// largest attempt count.
func unlocks(logs string) (map[string]int, int) {
	count := map[string]int{}
	most := 0
	for _, m := range unlockedRE.FindAllStringSubmatch(logs, -1) {
		count[m[1]]++
		if n, _ := strconv.Atoi(m[2]); n > most {
			most = n
		}
	}
	return count, most
}

// TestFaultTangFlapping: the Tang server comes and goes every 300 to
// 700 ms during start-up, three times dying with a recovery in flight.
// Start-up completes with no crash and each key opened once. Then a
// reload that needs a new key while Tang is down fails after its
// [unlock] timeout, keeps the old state (still serving, throughout), and
// is counted; once Tang is back the same reload succeeds.
func TestFaultTangFlapping(t *testing.T) {
	tangSrv := testenv.EmbeddedTang(t)
	fl := newFlapper(t, strings.TrimPrefix(tangSrv.URL, "http://"))
	fl.up(false) // sealing needs it
	pin := fmt.Sprintf(`{"url":%q,"thp":%q}`, fl.URL(), tangSrv.Thp)
	f := newFixture(t)
	for _, k := range []string{"web", "mail", "api"} {
		f.sealedTo(k, pin)
	}
	fl.down()
	admin := "[admin]\nlisten = \"127.0.0.1:0\"\nreload = true\n\n"
	base := key("web") + key("mail") + key("api") + f.listener("web", "127.0.0.1:0") + f.listener("mail", "127.0.0.1:0") + admin
	path := f.write(base + "[unlock]\ntimeout = \"1m\"\nretry_backoff = \"50ms\"\nretry_backoff_max = \"200ms\"\n")
	start := time.Now()
	r := startDaemon(t, &daemon{}, path)

	// The flaps, on the test's goroutine: down for a while, then up
	// until a connection arrives, which is cut (three times), or for a
	// while (after that), until the daemon is ready.
	windows := []time.Duration{400 * time.Millisecond, 300 * time.Millisecond, 650 * time.Millisecond, 500 * time.Millisecond, 350 * time.Millisecond, 700 * time.Millisecond}
	cuts, flaps := 0, 0
	deadline := time.Now().Add(faultTimeout)
	for i := 0; !strings.Contains(r.logs.String(), "msg=ready"); i++ {
		r.alive()
		if time.Now().After(deadline) {
			t.Fatalf("not ready after %d flaps:\n%s", flaps, r.logs.String())
		}
		wait := time.NewTimer(windows[i%len(windows)])
		<-wait.C // down
		cut := cuts < 3
		fl.up(cut)
		flaps++
		wait.Reset(windows[(i+1)%len(windows)])
		select {
		case <-fl.cuts:
			cuts++
			wait.Stop()
		case <-wait.C:
			fl.down()
		}
	}
	took := time.Since(start)
	r.waitReady()
	counts, most := unlocks(r.logs.String())
	if counts["web"] != 1 || counts["mail"] != 1 || len(counts) != 2 {
		t.Fatalf("keys unlocked %v, want web and mail once each:\n%s", counts, r.logs.String())
	}
	if cuts < 3 || most < 2 {
		t.Fatalf("%d recoveries cut, most attempts %d: the fault was not injected", cuts, most)
	}
	if strings.Contains(r.logs.String(), "unlocking key failed") {
		t.Fatalf("a key failed for good:\n%s", r.logs.String())
	}
	f.roundTrip(r.addr("web"), "web", "after the flapping")
	f.roundTrip(r.addr("mail"), "mail", "after the flapping")

	// A reload that needs a new key, with Tang down, under traffic.
	fl.down()
	l := f.startTraffic(2, r.addr("web"), "web")
	l.waitRounds(t, 4)
	f.write(base + f.listener("api", "127.0.0.1:0") + "[unlock]\ntimeout = \"1s\"\nretry_backoff = \"50ms\"\nretry_backoff_max = \"200ms\"\n")
	code, body := r.reload()
	if code != http.StatusInternalServerError || !strings.Contains(body, "the previous configuration stays") ||
		!strings.Contains(body, `key "api"`) || !strings.Contains(body, "tang server unreachable") {
		t.Fatalf("reload with Tang down = %d %q, want 500 naming key api", code, body)
	}
	l.waitRounds(t, 4)
	if got := r.metric(`sealproxy_reloads_total{result="failure"}`); got != 1 {
		t.Errorf("failed reloads counted %v, want 1", got)
	}
	if strings.Contains(r.logs.String(), "listener=api") {
		t.Errorf("the failed reload bound listener api:\n%s", r.logs.String())
	}
	fl.up(false)
	if code, body := r.reload(); code != http.StatusOK {
		t.Fatalf("reload with Tang back = %d %q", code, body)
	}
	ok, failed, err := l.end()
	if failed != 0 {
		t.Fatalf("%d of %d round trips failed across the reloads: %v", failed, ok+failed, err)
	}
	f.roundTrip(r.addr("api"), "api", "reloaded")
	counts, _ = unlocks(r.logs.String())
	if counts["web"] != 1 || counts["mail"] != 1 || counts["api"] != 1 {
		t.Fatalf("keys unlocked %v, want each once", counts)
	}
	t.Logf("FAULT %s: %d flaps (%d recoveries cut in flight), ready after %v with up to %d attempts, each key unlocked once; reload with Tang down failed (500, reloads_total{failure}=1), %d round trips 0 failed; reload with Tang back ok",
		"tang flapping", flaps, cuts, took.Round(time.Millisecond), most, ok)
}

// backend is a TCP server at a fixed address that can be stopped and
// started again. Each connection's first line chooses what it does:
// "echo" echoes it and the rest; "reset N" sends N bytes of a transfer it
// announces as much larger, then resets the connection. Not
// testenv.StartEcho: that one only echoes, and cannot come back on its
// address after a stop.
type backend struct {
	t    *testing.T
	addr string

	mu    sync.Mutex
	ln    net.Listener
	wg    sync.WaitGroup
	conns sync.WaitGroup
}

func startBackend(t *testing.T) *backend {
	b := &backend{t: t, addr: testenv.FreeAddr(t)}
	b.start()
	t.Cleanup(func() { b.stop(); b.conns.Wait() })
	return b
}

func (b *backend) start() {
	ln := testenv.ListenAgain(b.t, b.addr, faultTimeout)
	b.mu.Lock()
	b.ln = ln
	b.mu.Unlock()
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			b.conns.Add(1)
			go func() {
				defer b.conns.Done()
				b.serve(c.(*net.TCPConn))
			}()
		}
	}()
}

func (b *backend) stop() {
	b.mu.Lock()
	if b.ln != nil {
		b.ln.Close()
		b.ln = nil
	}
	b.mu.Unlock()
	b.wg.Wait()
}

func (b *backend) serve(c *net.TCPConn) {
	defer c.Close()
	c.SetDeadline(time.Now().Add(faultTimeout))
	var line []byte
	one := make([]byte, 1)
	for len(line) < 64 {
		if _, err := c.Read(one); err != nil {
			return
		}
		if one[0] == '\n' {
			break
		}
		line = append(line, one[0])
	}
	cmd, arg, _ := strings.Cut(string(line), " ")
	switch cmd {
	case "echo": // the line too
		if _, err := c.Write(append(line, '\n')); err != nil {
			return
		}
		io.Copy(c, c)
		c.CloseWrite()
	case "reset":
		n, _ := strconv.Atoi(arg)
		chunk := make([]byte, 32<<10)
		for sent := 0; sent < n; sent += len(chunk) {
			if _, err := c.Write(chunk[:min(len(chunk), n-sent)]); err != nil {
				return
			}
		}
		reset(c)
	}
}

// TestFaultBackendDown: the first of two backends refuses connections:
// clients are served by the second, and each refused dial is counted.
// With both down, a client's connection is closed cleanly and at once;
// once a backend is back, the proxy serves again.
func TestFaultBackendDown(t *testing.T) {
	tangSrv := testenv.EmbeddedTang(t)
	f := newFixture(t)
	f.sealed("web", tangSrv)
	dead := testenv.FreeAddr(t)
	live := startBackend(t)
	path := f.write(key("web") + fmt.Sprintf("[[listener]]\nname = \"web\"\nlisten = \"127.0.0.1:0\"\nmode = \"offload\"\nkeys = [\"web\"]\nbackends = [%q, %q]\nconnect_timeout = \"2s\"\n\n", dead, live.addr) +
		"[admin]\nlisten = \"127.0.0.1:0\"\n")
	r := startDaemon(t, &daemon{}, path)
	r.waitReady()
	addr := r.addr("web")

	const rounds = 10
	for i := range rounds {
		if err := f.echo(addr, "web", "echo\n"+strconv.Itoa(i)); err != nil {
			t.Fatalf("round %d with the first backend down: %v", i, err)
		}
	}
	deadSeries := fmt.Sprintf(`sealproxy_backend_dial_errors_total{backend=%q,listener="web"}`, dead)
	if got := r.metric(deadSeries); got != rounds {
		t.Fatalf("%s = %v, want %d", deadSeries, got, rounds)
	}

	// Every backend down.
	live.stop()
	c, err := f.tlsTo(addr, "web")
	if err != nil {
		t.Fatalf("handshake with every backend down: %v", err)
	}
	closedAt := time.Now()
	c.SetDeadline(time.Now().Add(faultTimeout))
	// Only read: data the proxy never read would make its close a reset.
	got, err := io.ReadAll(c)
	closedIn := time.Since(closedAt)
	c.Close()
	if isTimeout(err) {
		t.Fatalf("the connection hung with every backend down: read %q", got)
	}
	if err != nil || len(got) != 0 {
		t.Fatalf("with every backend down: read %q, %v; want a clean close", got, err)
	}
	// The close is counted after the connection ends, not before the
	// client can see it.
	unavailable := `sealproxy_connections_closed_total{listener="web",reason="backend_unavailable"}`
	testenv.Eventually(t, faultTimeout, unavailable+" to be 1", func() bool { return r.metric(unavailable) == 1 })
	liveSeries := fmt.Sprintf(`sealproxy_backend_dial_errors_total{backend=%q,listener="web"}`, live.addr)
	if got := r.metric(liveSeries); got != 1 {
		t.Errorf("%s = %v, want 1", liveSeries, got)
	}

	live.start()
	back := time.Now()
	if err := f.echo(addr, "web", "echo\nback"); err != nil {
		t.Fatalf("with a backend back: %v", err)
	}
	r.alive()
	t.Logf("FAULT %s: %d/%d round trips served by the second backend, %v dial errors counted for the first; all down: client closed cleanly (TLS close_notify, no error) in %v, backend_unavailable=1; backend back: served again in %v",
		"backend down", rounds, rounds, rounds, closedIn.Round(time.Millisecond), time.Since(back).Round(time.Millisecond))
}

// TestFaultBackendReset: backends reset their connections in the middle
// of large transfers while other connections echo through the same
// listener. Each reset client's connection ends promptly, the proxy
// counts a backend error for each, the other connections are
// unaffected, and the goroutines return to their number before.
func TestFaultBackendReset(t *testing.T) {
	if testenv.UnderWine() {
		t.Skip("Wine 8 reads a reset that arrives behind unread data as a clean end (EOF), where Windows and Linux report the reset")
	}
	tangSrv := testenv.EmbeddedTang(t)
	f := newFixture(t)
	f.sealed("web", tangSrv)
	b := startBackend(t)
	f.backend = b.addr
	path := f.write(key("web") + f.listener("web", "127.0.0.1:0") + "[admin]\nlisten = \"127.0.0.1:0\"\n")
	r := startDaemon(t, &daemon{}, path)
	r.waitReady()
	addr := r.addr("web")

	const (
		sent  = 1 << 20  // before the reset
		asked = 64 << 20 // what the client expects
	)
	// resetOnce asks for a large transfer that the backend cuts.
	resetOnce := func() (int64, time.Duration, error) {
		c, err := f.tlsTo(addr, "web")
		if err != nil {
			return 0, 0, err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(faultTimeout))
		if _, err := fmt.Fprintf(c, "reset %d\n", sent); err != nil {
			return 0, 0, err
		}
		start := time.Now()
		n, err := io.Copy(io.Discard, c)
		return n, time.Since(start), err
	}
	// Warm up every path once, so that the baseline counts what the
	// daemon starts lazily.
	if n, _, err := resetOnce(); n >= asked || isTimeout(err) {
		t.Fatalf("warm-up reset: %d bytes, %v", n, err)
	}
	if err := f.echo(addr, "web", "echo\nwarm-up"); err != nil {
		t.Fatal(err)
	}
	// A connection's close is counted before it leaves the active gauge.
	testenv.Eventually(t, faultTimeout, "the warm-up connections to end", func() bool {
		return r.metric(`sealproxy_connections_active{listener="web"}`) == 0
	})
	errorsBefore := r.metric(`sealproxy_connections_closed_total{listener="web",reason="backend_error"}`)
	baseline := runtime.NumGoroutine()

	// Long-lived connections that keep echoing through the resets.
	others := make([]*tls.Conn, 4)
	for i := range others {
		c, err := f.tlsTo(addr, "web")
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(faultTimeout))
		hello := make([]byte, len("echo\n"))
		if _, err := io.WriteString(c, "echo\n"); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(c, hello); err != nil || string(hello) != "echo\n" {
			t.Fatalf("echo line: %q, %v", hello, err)
		}
		others[i] = c
	}
	var wg sync.WaitGroup
	stop := make(chan struct{})
	otherErrs := make([]error, len(others))
	otherRounds := make([]int, len(others))
	for i, c := range others {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, 64)
			for {
				select {
				case <-stop:
					return
				default:
				}
				msg := fmt.Sprintf("conn %d round %d", i, otherRounds[i])
				if _, err := io.WriteString(c, msg); err != nil {
					otherErrs[i] = err
					return
				}
				if _, err := io.ReadFull(c, buf[:len(msg)]); err != nil || string(buf[:len(msg)]) != msg {
					otherErrs[i] = fmt.Errorf("echo %q: %q, %v", msg, buf[:len(msg)], err)
					return
				}
				otherRounds[i]++
			}
		}()
	}

	const resets = 5
	var got []int64
	var slowest time.Duration
	clean := 0
	for range resets {
		n, took, err := resetOnce()
		if isTimeout(err) {
			t.Fatalf("the client hung after the backend's reset: %d bytes, %v", n, err)
		}
		if n >= asked || n > sent {
			t.Fatalf("read %d bytes of a transfer cut after %d", n, sent)
		}
		got = append(got, n)
		slowest = max(slowest, took)
		if err == nil {
			clean++ // TLS close_notify: the client could not tell the cut
		}
	}
	close(stop)
	wg.Wait()
	total := 0
	if clean > 0 {
		t.Errorf("%d of %d clients saw a clean TLS close after the backend's reset: want an error, so a cut stream cannot pass for a whole one", clean, resets)
	}
	for i, err := range otherErrs {
		if err != nil {
			t.Fatalf("connection %d failed during the resets: %v", i, err)
		}
		total += otherRounds[i]
	}
	if total == 0 {
		t.Fatal("the other connections did nothing")
	}
	// The last reset's close is counted just after its client sees it.
	var backendErrors float64
	testenv.Eventually(t, faultTimeout, "the resets to be counted", func() bool {
		backendErrors = r.metric(`sealproxy_connections_closed_total{listener="web",reason="backend_error"}`) - errorsBefore
		return backendErrors >= resets
	})
	if backendErrors != resets {
		t.Errorf("backend errors counted %v, want %d:\n%s", backendErrors, resets, r.logs.String())
	}
	for _, c := range others {
		c.CloseWrite()
		if rest, err := io.ReadAll(c); err != nil || len(rest) != 0 {
			t.Fatalf("end of a connection that outlived the resets: %q, %v", rest, err)
		}
		c.Close()
	}
	testenv.Eventually(t, faultTimeout, "the connections to end", func() bool {
		return r.metric(`sealproxy_connections_active{listener="web"}`) == 0
	})
	var now int
	testenv.Eventually(t, faultTimeout, "goroutines back to the baseline", func() bool {
		now = runtime.NumGoroutine()
		return now <= baseline
	})
	t.Logf("FAULT %s: %d resets after %d of %d bytes: clients read %v bytes and saw the end within %v (%d of them as a clean TLS close_notify, the rest as a reset), %v backend_error counted, %d other connections did %d echo rounds with 0 failures, goroutines %d -> %d",
		"backend reset mid-stream", resets, sent, asked, got, slowest.Round(time.Millisecond), clean, backendErrors, len(others), total, baseline, now)
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// TestFaultReloadBrokenUnderLoad: under continuous traffic (8 workers of
// TLS round trips), reloads of a configuration with a syntax error, of a
// certificate file that is garbage and of a sealed key whose JWE is
// corrupt each fail, are reported (HTTP 500 and
// sealproxy_reloads_total{result="failure"}) and keep the old state;
// once the files are fixed a reload succeeds. Not one round trip fails.
func TestFaultReloadBrokenUnderLoad(t *testing.T) {
	tangSrv := testenv.EmbeddedTang(t)
	f := newFixture(t)
	f.sealed("web", tangSrv)
	admin := "[admin]\nlisten = \"127.0.0.1:0\"\nreload = true\n\n"
	good := key("web") + f.listener("web", "127.0.0.1:0") + admin
	path := f.write(good)
	r := startDaemon(t, &daemon{}, path)
	r.waitReady()
	addr := r.addr("web")

	l := f.startTraffic(8, addr, "web")
	l.waitRounds(t, 16)
	read := func(name string) []byte {
		data, err := os.ReadFile(filepath.Join(f.dir, name))
		if err != nil {
			t.Fatal(err)
		}
		return data
	}
	replace := func(name string, data []byte) {
		// Atomically, as an operator's tools would, and so that the
		// daemon sees a new file (size and time).
		tmp := filepath.Join(f.dir, name+".tmp")
		if err := os.WriteFile(tmp, data, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, filepath.Join(f.dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	crt, jwe := read("web.crt"), read("web.key.jwe")
	broken := []struct {
		name   string
		inject func()
		want   string
	}{
		{"syntax error", func() { f.write(good + "[[listener]\nname = \n") }, "the previous configuration stays"},
		{"garbage certificate", func() { replace("web.crt", []byte("-----BEGIN CERTIFICATE-----\ngarbage\n")) }, "web.crt"},
		{"corrupt sealed key", func() {
			bad := append([]byte{}, jwe...)
			bad[len(bad)/2] ^= 0x55
			replace("web.key.jwe", bad)
		}, `key "web"`},
	}
	failures := 0.0
	for _, b := range broken {
		b.inject()
		code, body := r.reload()
		if code != http.StatusInternalServerError || !strings.Contains(body, "the previous configuration stays") || !strings.Contains(body, b.want) {
			t.Fatalf("reload of a %s = %d %q, want 500 mentioning %q", b.name, code, body, b.want)
		}
		failures++
		if got := r.metric(`sealproxy_reloads_total{result="failure"}`); got != failures {
			t.Errorf("after the %s: reloads_total{failure} = %v, want %v", b.name, got, failures)
		}
		l.waitRounds(t, 16) // the old state serves
		// Fix it for the next one.
		f.write(good)
		replace("web.crt", crt)
		replace("web.key.jwe", jwe)
	}
	if code, body := r.reload(); code != http.StatusOK {
		t.Fatalf("reload of the fixed files = %d %q", code, body)
	}
	l.waitRounds(t, 16)
	ok, failed, err := l.end()
	if failed != 0 {
		t.Fatalf("%d of %d round trips failed: %v", failed, ok+failed, err)
	}
	if got := r.metric(`sealproxy_reloads_total{result="success"}`); got != 1 {
		t.Errorf("reloads_total{success} = %v, want 1", got)
	}
	if got := r.addr("web"); got != addr {
		t.Errorf("the listener moved from %s to %s", addr, got)
	}
	t.Logf("FAULT %s: 3 broken reloads (syntax, garbage cert, corrupt JWE) each 500 and counted (reloads_total{failure}=%v), fixed reload ok; %d round trips by 8 workers, %d failed",
		"reload broken file under load", failures, ok, failed)
}
