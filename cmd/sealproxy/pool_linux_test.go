package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sealproxy/sealproxy/proxy/pool"
	"github.com/sealproxy/sealproxy/testenv"
)

// TestRunPoolOnly: `sealproxy run` with a [pool] and no [[listener]]
// serves the pool with a sealed key recovered from Tang; a remote TLS
// client's bytes reach the application through it; a SIGHUP that takes
// the caller off the service's users refuses new requests (not_allowed)
// while the connection made before goes on.
func TestRunPoolOnly(t *testing.T) {
	f := newFixture(t)
	tangSrv := testenv.EmbeddedTang(t)
	f.sealed("web", tangSrv)
	sock := filepath.Join(f.dir, "pool.sock")
	poolCfg := func(users string) string {
		return key("web") + fmt.Sprintf("[pool]\nlisten = \"unix:%s\"\nmode = \"0600\"\n\n[[pool.service]]\nname = \"web\"\nrole = \"server\"\nkeys = [\"web\"]\nusers = [%s]\n", sock, users)
	}
	path := f.write(poolCfg(fmt.Sprintf("%q", fmt.Sprint(os.Getuid()))))
	n := listenNotify(t)
	r := startDaemon(t, &daemon{}, path)
	n.expect(t, "READY=1")
	if fi, err := os.Stat(sock); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("pool socket: %v, %v", fi, err)
	}

	serve := func() (net.Conn, *tls.Conn, error) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		remote := make(chan *tls.Conn, 1)
		go func() {
			c, err := tls.Dial("tcp", ln.Addr().String(), &tls.Config{RootCAs: f.ca.Pool(), ServerName: "web.test"})
			if err != nil {
				c = nil
			}
			remote <- c
		}()
		c, err := ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		plain, ans, err := pool.Server(ctx, sock, c, "web")
		if err == nil && (ans.LocalKey != "web" || ans.Version != "TLS1.3") {
			t.Errorf("answer %+v", ans)
		}
		return plain, <-remote, err
	}
	plain, remote, err := serve()
	if err != nil {
		t.Fatalf("%v\n%s", err, r.logs.String())
	}
	defer plain.Close()
	defer remote.Close()
	echo := func(msg string) {
		t.Helper()
		fmt.Fprintln(remote, msg)
		line, err := bufio.NewReader(plain).ReadString('\n')
		if err != nil || line != msg+"\n" {
			t.Fatalf("app read %q, %v", line, err)
		}
	}
	echo("before the reload")

	if err := os.WriteFile(path, []byte(poolCfg(`"54321"`)), 0o600); err != nil {
		t.Fatal(err)
	}
	r.sigs <- syscall.SIGHUP
	testenv.Eventually(t, 30*time.Second, "the reload", func() bool { return strings.Contains(r.logs.String(), "msg=reloaded") })
	_, remote2, err := serve()
	if remote2 != nil {
		remote2.Close()
	}
	var rf *pool.Refusal
	if !errors.As(err, &rf) || rf.Reason != pool.ReasonNotAllowed {
		t.Fatalf("after the reload: %v, want not_allowed", err)
	}
	echo("after the reload")
}

// TestCheckPool: `sealproxy check` accepts a pool-only configuration
// (reading its certificates and CAs, opening no key), and names the file
// and line of a pool mistake and of a missing CA bundle.
func TestCheckPool(t *testing.T) {
	dir := t.TempDir()
	testenv.NewCA(t, "test CA").Server(t, "web.test").WriteFiles(t, dir, "web")
	cfg := key("web") + "[pool]\nlisten = \"unix:" + filepath.Join(dir, "pool.sock") + "\"\n\n[[pool.service]]\nname = \"web\"\nrole = \"server\"\nkeys = [\"web\"]\nusers = [\"root\"]\n"
	path := filepath.Join(dir, "sealproxy.toml")
	for _, tt := range []struct {
		name, cfg string
		code      int
		out       string
	}{
		{"valid", cfg, 0, "configuration is valid"},
		{"bad role", strings.Replace(cfg, `role = "server"`, `role = "proxy"`, 1), 2,
			"sealproxy: error: " + path + ":11: pool.service[0].role: unknown role \"proxy\" (want server or client)"},
		{"missing client CA", strings.Replace(cfg, `users = ["root"]`, "users = [\"root\"]\ntls = { client_auth = \"require\", client_ca = \"nope.pem\" }", 1), 2,
			`sealproxy: error: pool service "web": client_ca: reading certificate chain`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if err := os.WriteFile(path, []byte(tt.cfg), 0o644); err != nil {
				t.Fatal(err)
			}
			stdout, stderr, code := runCLI(t, "check", "--config", path)
			if code != tt.code || !strings.Contains(stdout+stderr, tt.out) {
				t.Errorf("code %d\nstdout: %s\nstderr: %s\nwant code %d and %q", code, stdout, stderr, tt.code, tt.out)
			}
		})
	}
}

// poolSession makes a loopback TCP connection, hands its accepted end to
// the pool's server service, and runs a TLS client (cc) on the dialled
// end: the plaintext the application got, the remote TLS client, and
// the pool's answer. It calls no t.Fatal: load goroutines use it.
func poolSession(ctx context.Context, sock, service string, cc *tls.Config) (net.Conn, *tls.Conn, *pool.Answer, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, nil, nil, err
	}
	defer ln.Close()
	type dialled struct {
		c   *tls.Conn
		err error
	}
	remote := make(chan dialled, 1)
	go func() {
		raw, err := (&net.Dialer{}).DialContext(ctx, "tcp", ln.Addr().String())
		if err != nil {
			remote <- dialled{nil, err}
			return
		}
		c := tls.Client(raw, cc)
		if err := c.HandshakeContext(ctx); err != nil {
			c.Close()
			remote <- dialled{nil, fmt.Errorf("remote handshake: %w", err)}
			return
		}
		remote <- dialled{c, nil}
	}()
	c, err := ln.Accept()
	if err != nil {
		return nil, nil, nil, err
	}
	plain, ans, err := pool.Server(ctx, sock, c, service)
	if err != nil {
		if r := <-remote; r.c != nil {
			r.c.Close()
		}
		return nil, nil, ans, err
	}
	r := <-remote
	if r.err != nil {
		plain.Close()
		return nil, nil, ans, r.err
	}
	return plain, r.c, ans, nil
}

// poolPid is the pid of the process that made the application's
// plaintext socket (SO_PEERCRED of a socketpair names its creator): the
// sealproxy generation that served the request.
func poolPid(plain net.Conn) (int, error) {
	rc, err := plain.(syscall.Conn).SyscallConn()
	if err != nil {
		return 0, err
	}
	var cred *syscall.Ucred
	var serr error
	if err := rc.Control(func(fd uintptr) {
		cred, serr = syscall.GetsockoptUcred(int(fd), syscall.SOL_SOCKET, syscall.SO_PEERCRED)
	}); err != nil {
		return 0, err
	}
	if serr != nil {
		return 0, serr
	}
	return int(cred.Pid), nil
}

// poolServed is one pool request of TestPoolUpgradeUnderLoad: when it
// started and which process served it.
type poolServed struct {
	at  time.Time
	pid int
}

// TestPoolUpgradeUnderLoad: with applications continuously handing
// sockets to the pool (a new remote TLS connection, a pool request and
// an echoed line each) and pool sessions that outlive the upgrade, two
// upgrades (SIGUSR2) in a row. The sessions made before an upgrade go on
// with the old process (the pid that made their plaintext socket) until
// they end; the old process closes the pool socket while it drains, and
// the requests made after that are all served by the successor; then an upgrade with a broken
// configuration leaves the pool serving on the same pid. No pool
// request, exchange or session fails.
func TestPoolUpgradeUnderLoad(t *testing.T) {
	testenv.SkipIfShort(t, "builds sealproxy and runs it through upgrades")
	bin := testenv.BuildCommand(t, "sealproxy")
	f := newFixture(t)
	f.sealed("web", testenv.EmbeddedTang(t))
	sock := filepath.Join(f.dir, "pool.sock")
	base := "shutdown_timeout = \"30s\"\n" + key("web") +
		fmt.Sprintf("[pool]\nlisten = \"unix:%s\"\nmode = \"0600\"\n\n[[pool.service]]\nname = \"web\"\nrole = \"server\"\nkeys = [\"web\"]\nusers = [\"%d\"]\n\n", sock, os.Getuid())
	path := f.write(base)
	u := startUpgradeRun(t, bin, path)

	listening := unixSocketInode(t, sock)
	cc := &tls.Config{RootCAs: f.ca.Pool(), ServerName: "web.test"}
	var mu sync.Mutex
	var served []poolServed
	load := &upgradeLoad{stop: make(chan struct{})}
	load.dialer = func() (net.Conn, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		at := time.Now()
		plain, remote, ans, err := poolSession(ctx, sock, "web", cc)
		if err != nil {
			return nil, fmt.Errorf("pool request: %w", err)
		}
		pid, err := poolPid(plain)
		if err != nil || ans.LocalKey != "web" {
			plain.Close()
			remote.Close()
			return nil, fmt.Errorf("pool answer %+v, pid %d: %v", ans, pid, err)
		}
		mu.Lock()
		served = append(served, poolServed{at, pid})
		mu.Unlock()
		// The application echoes the remote's bytes.
		go func() {
			defer plain.Close()
			_, _ = io.Copy(plain, plain)
		}()
		return remote, nil
	}
	load.handshakes(3)
	defer func() {
		select {
		case <-load.stop:
		default:
			close(load.stop)
		}
		load.wg.Wait()
	}()
	// servedBy is the pids of the requests that started in [from, to).
	servedBy := func(from, to time.Time) map[int]int {
		mu.Lock()
		defer mu.Unlock()
		m := map[int]int{}
		for _, s := range served {
			if !s.at.Before(from) && s.at.Before(to) {
				m[s.pid]++
			}
		}
		return m
	}

	for i := 1; i <= 2; i++ {
		old := u.readyPids()[len(u.readyPids())-1]
		since := time.Now()
		var streams []chan struct{}
		for range 2 {
			streams = append(streams, load.stream(t, 4*time.Second))
		}
		if by := servedBy(since, time.Now()); len(by) != 1 || by[old] == 0 {
			t.Fatalf("upgrade %d: the sessions before it were served by %v, want pid %d", i, by, old)
		}
		if err := syscall.Kill(old, syscall.SIGUSR2); err != nil {
			t.Fatal(err)
		}
		u.waitLog(time.Minute, fmt.Sprintf("upgrade %d", i), func(string) bool { return len(u.readyPids()) == i+1 })
		now := u.readyPids()[i]
		readyAt := time.Now()
		u.waitLog(time.Minute, fmt.Sprintf("pid %d stopping", old), func(l string) bool {
			return strings.Contains(l, fmt.Sprintf(`why="upgraded: pid %d serves"`, now))
		})
		for _, s := range streams {
			select {
			case <-s:
				t.Fatalf("upgrade %d: a session ended before the handover (the upgrade took over 4s): it proves nothing", i)
			default:
			}
		}
		// The old process has stopped accepting once it no longer holds
		// the listening socket (the successor still does).
		testenv.Eventually(t, 20*time.Second, fmt.Sprintf("pid %d closing the pool socket", old), func() bool {
			return !holdsSocket(t, old, listening)
		})
		if !holdsSocket(t, now, listening) {
			t.Fatalf("upgrade %d: the successor %d does not hold the pool socket", i, now)
		}
		stopped := time.Now()
		if !alive(old) {
			t.Fatalf("upgrade %d: the old process %d held the pool socket until it exited, not only until the handover", i, old)
		}
		t.Logf("upgrade %d: pid %d closed the pool socket %v after the successor's ready line was read", i, old, stopped.Sub(readyAt).Round(time.Millisecond))
		testenv.Eventually(t, 20*time.Second, "requests after the handover", func() bool {
			n := 0
			for _, c := range servedBy(stopped, time.Now()) {
				n += c
			}
			return n >= 5
		})
		if after := servedBy(stopped, time.Now()); len(after) != 1 || after[now] == 0 {
			t.Fatalf("upgrade %d: requests after the old process stopped accepting were served by %v, want all by %d (old %d)", i, after, now, old)
		}
		for _, s := range streams {
			<-s
		}
		deadline := time.Now().Add(20 * time.Second)
		for alive(old) {
			if time.Now().After(deadline) {
				t.Fatalf("upgrade %d: the old process %d still runs after its sessions ended:\n%s", i, old, u.logs())
			}
			time.Sleep(20 * time.Millisecond)
		}
		// The pool socket is still there once the old process exited.
		exited := time.Now()
		testenv.Eventually(t, 20*time.Second, "requests after the old process exited", func() bool { return servedBy(exited, time.Now())[now] >= 3 })
		if by := servedBy(exited, time.Now()); len(by) != 1 {
			t.Fatalf("upgrade %d: after the old process exited, requests were served by %v, want %d", i, by, now)
		}
	}
	load.check(t)

	// A broken configuration: the successor fails, the pool serves on,
	// on the same process.
	serving := u.readyPids()[len(u.readyPids())-1]
	f.write(base + "bogus = 1\n")
	stream := load.stream(t, 2*time.Second)
	since := time.Now()
	if err := syscall.Kill(serving, syscall.SIGUSR2); err != nil {
		t.Fatal(err)
	}
	u.waitLog(time.Minute, "the failed upgrade", func(l string) bool {
		return strings.Contains(l, "upgrade failed; this process keeps serving") && strings.Contains(l, "bogus: unknown setting")
	})
	<-stream
	time.Sleep(500 * time.Millisecond) // load on the survivor
	close(load.stop)
	load.wg.Wait()
	load.check(t)
	if by := servedBy(since, time.Now()); len(by) != 1 || by[serving] == 0 {
		t.Fatalf("around the failed upgrade, requests were served by %v, want all by %d", by, serving)
	}
	t.Logf("pool through 2 upgrades and a failed one: %d requests and exchanges, %d sessions; failed: %d requests, %d exchanges, %d sessions",
		load.reqs.Load(), load.streams.Load(), load.failedConns.Load(), load.failedReqs.Load(), load.failedStreams.Load())
}

// unixSocketInode is the inode of the unix socket listening at path
// (/proc/net/unix), as /proc/PID/fd links name it.
func unixSocketInode(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile("/proc/net/unix")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		// Num RefCount Protocol Flags Type St Inode Path; Flags 00010000 is __SO_ACCEPTCON.
		f := strings.Fields(line)
		if len(f) == 8 && f[7] == path && f[3] == "00010000" {
			return f[6]
		}
	}
	t.Fatalf("no unix socket listens at %s", path)
	return ""
}

// holdsSocket reports whether pid has a descriptor of the socket inode.
func holdsSocket(t *testing.T, pid int, inode string) bool {
	t.Helper()
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	ents, err := os.ReadDir(dir)
	if err != nil {
		return false // exited
	}
	for _, e := range ents {
		if l, err := os.Readlink(filepath.Join(dir, e.Name())); err == nil && l == "socket:["+inode+"]" {
			return true
		}
	}
	return false
}
