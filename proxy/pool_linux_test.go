package proxy

import (
	"bufio"
	"bytes"
	"context"
	"crypto"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/sealproxy/sealproxy/proxy/config"
	"github.com/sealproxy/sealproxy/proxy/pool"
	"github.com/sealproxy/sealproxy/testenv"
)

// poolEnv is a running pool and the certificates around it: the pool
// serves web.test (key "web") and presents "pool-client" (key "client")
// as a client; alice is a client the front CA issued, mallory one from
// another CA.
type poolEnv struct {
	dir     string
	ca      *testenv.CA
	web     *testenv.Leaf
	client  *testenv.Leaf
	alice   *testenv.Leaf
	mallory *testenv.Leaf
	path    string // the pool socket
	p       *Pool
	m       *Metrics
	log     *testenv.SyncBuffer
	cancel  context.CancelFunc
	done    chan error
}

// poolTOML is a configuration of two keys and the services the tests
// add; %[1]d is the test's uid.
const poolKeysTOML = `
allow_plaintext_keys = true
[[key]]
name = "web"
cert = "web.crt"
source = "file:web.key"
[[key]]
name = "client"
cert = "client.crt"
source = "file:client.key"
[[listener]]
name = "unused"
listen = "127.0.0.1:0"
mode = "offload"
keys = ["web"]
backend = "127.0.0.1:1"
`

func newPoolEnv(t testing.TB, services string, before ...func(*Pool)) *poolEnv {
	t.Helper()
	e := &poolEnv{dir: t.TempDir(), log: &testenv.SyncBuffer{}}
	e.ca = testenv.NewCA(t, "pool CA")
	e.web = e.ca.Server(t, "web.test")
	e.client = e.ca.Client(t, "pool-client")
	e.alice = e.ca.Client(t, "alice")
	e.mallory = testenv.NewCA(t, "other CA").Client(t, "alice")
	e.ca.WriteCA(t, e.dir, "ca.crt")
	e.web.WriteFiles(t, e.dir, "web")
	e.client.WriteFiles(t, e.dir, "client")
	e.path = filepath.Join(e.dir, "pool.sock")
	pc := e.build(t, services)
	e.m = NewMetrics(nil)
	p, err := NewPool(pc, &Options{Log: slog.New(slog.NewTextHandler(e.log, nil)), Metrics: e.m, Global: NewLimiter(0)}, nil)
	if err != nil {
		t.Fatal(err)
	}
	e.p = p
	for _, f := range before {
		f(p)
	}
	ctx, cancel := context.WithCancel(context.Background())
	e.cancel, e.done = cancel, make(chan error, 1)
	go func() { e.done <- p.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-e.done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return e
}

// build parses a configuration of the keys and services and builds it.
func (e *poolEnv) build(t testing.TB, services string) *PoolConfig {
	t.Helper()
	data := fmt.Sprintf(poolKeysTOML+"[pool]\nlisten = \"unix:%s\"\n", e.path) + fmt.Sprintf(services, os.Getuid())
	cfg, err := config.Parse(filepath.Join(e.dir, "sealproxy.toml"), []byte(data))
	if err != nil {
		t.Fatal(err)
	}
	keys := map[string]crypto.Signer{"web": e.web.Key, "client": e.client.Key}
	pc, err := BuildPool(context.Background(), cfg, func(_ context.Context, k *config.Key) (crypto.Signer, error) {
		return keys[k.Name], nil
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return pc
}

const webService = `
[[pool.service]]
name = "web"
role = "server"
keys = ["web"]
users = ["%[1]d"]
tls = { client_auth = "require", client_ca = "ca.crt", allow = { cn = ["alice"] } }

[[pool.service]]
name = "open"
role = "server"
keys = ["web"]
users = ["%[1]d"]

[[pool.service]]
name = "out"
role = "client"
users = ["%[1]d"]
ca = "ca.crt"
key = "client"
`

// accepted is what the application side of a server-role test got.
type accepted struct {
	plain net.Conn
	ans   *pool.Answer
	err   error
}

// serveOne accepts one TCP connection on 127.0.0.1 and hands it to the
// pool's service, as an application would.
func (e *poolEnv) serveOne(t testing.TB, service string) (string, <-chan accepted) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	out := make(chan accepted, 1)
	go func() {
		defer ln.Close()
		c, err := ln.Accept()
		if err != nil {
			out <- accepted{err: err}
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		plain, ans, err := pool.Server(ctx, e.path, c, service)
		out <- accepted{plain, ans, err}
	}()
	return ln.Addr().String(), out
}

func (e *poolEnv) dialTLS(t testing.TB, addr string, client *testenv.Leaf) (*tls.Conn, error) {
	cfg := &tls.Config{RootCAs: e.ca.Pool(), ServerName: "web.test"}
	if client != nil {
		// Sent even when the server's CA list does not name its issuer.
		cert := client.TLSCertificate()
		cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &cert, nil }
	}
	c, err := tls.Dial("tcp", addr, cfg)
	if err != nil {
		return nil, err
	}
	// TLS 1.3: a refused client certificate shows on the first read.
	_ = c.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	if _, err := c.Read(make([]byte, 1)); err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
		c.Close()
		return nil, err
	}
	_ = c.SetReadDeadline(time.Time{})
	return c, nil
}

// TestPoolServerRoleGoClient: a remote TLS client's bytes arrive as
// plaintext on the fd the pool returns and back, the answer names the
// verified client and the key presented, and closes travel both ways.
func TestPoolServerRoleGoClient(t *testing.T) {
	e := newPoolEnv(t, webService)
	addr, app := e.serveOne(t, "web")
	remote, err := e.dialTLS(t, addr, e.alice)
	if err != nil {
		t.Fatal(err)
	}
	defer remote.Close()
	a := <-app
	if a.err != nil {
		t.Fatal(a.err)
	}
	defer a.plain.Close()
	if a.ans.Peer == nil || a.ans.Peer.CN != "alice" || a.ans.LocalKey != "web" || a.ans.Version != "TLS1.3" || a.ans.ServerName != "web.test" {
		t.Fatalf("answer %+v peer %+v", a.ans, a.ans.Peer)
	}
	if a.ans.Peer.SPKISHA256 != SPKIPin(e.alice.Cert) {
		t.Errorf("spki_sha256 %q, want alice's", a.ans.Peer.SPKISHA256)
	}
	poolRoundTrip(t, remote, a.plain)

	// The remote half-closes: the application reads EOF, can still
	// answer, then its close reaches the remote as close_notify.
	if err := remote.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	if b, err := io.ReadAll(a.plain); err != nil || len(b) != 0 {
		t.Fatalf("app after the remote's half-close: %q, %v", b, err)
	}
	if _, err := a.plain.Write([]byte("late")); err != nil {
		t.Fatal(err)
	}
	_ = a.plain.(*net.UnixConn).CloseWrite()
	if b, err := io.ReadAll(remote); err != nil || string(b) != "late" {
		t.Fatalf("remote after the app's half-close: %q, %v", b, err)
	}
	testenv.Eventually(t, 5*time.Second, "the connection's log line", func() bool {
		return strings.Contains(e.log.String(), "listener=pool/web") && strings.Contains(e.log.String(), "client=alice")
	})
	if got := testutil.ToFloat64(e.m.PoolRequests.WithLabelValues("web", "ok")); got != 1 {
		t.Errorf("pool requests ok = %v", got)
	}
}

func poolRoundTrip(t *testing.T, remote, plain net.Conn) {
	t.Helper()
	if _, err := remote.Write([]byte("ping from remote\n")); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(plain).ReadString('\n')
	if err != nil || line != "ping from remote\n" {
		t.Fatalf("app read %q, %v", line, err)
	}
	if _, err := plain.Write([]byte("pong from app\n")); err != nil {
		t.Fatal(err)
	}
	line, err = bufio.NewReader(remote).ReadString('\n')
	if err != nil || line != "pong from app\n" {
		t.Fatalf("remote read %q, %v", line, err)
	}
}

// TestPoolServerRoleNoClientCert: without client_auth the answer's peer
// is empty, not absent.
func TestPoolServerRoleNoClientCert(t *testing.T) {
	e := newPoolEnv(t, webService)
	addr, app := e.serveOne(t, "open")
	remote, err := e.dialTLS(t, addr, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer remote.Close()
	a := <-app
	if a.err != nil {
		t.Fatal(a.err)
	}
	defer a.plain.Close()
	if a.ans.Peer == nil || a.ans.Peer.CN != "" || a.ans.Peer.SPKISHA256 != "" {
		t.Fatalf("peer %+v, want empty", a.ans.Peer)
	}
	poolRoundTrip(t, remote, a.plain)
}

// TestPoolPeerRefused: a client certificate from another CA, or one the
// allow rules do not name, is peer_refused, and the log says why.
func TestPoolPeerRefused(t *testing.T) {
	e := newPoolEnv(t, webService)
	bob := e.ca.Client(t, "bob")
	for _, c := range []*testenv.Leaf{e.mallory, bob} {
		addr, app := e.serveOne(t, "web")
		if remote, err := e.dialTLS(t, addr, c); err == nil {
			remote.Close()
		}
		a := <-app
		var rf *pool.Refusal
		if !errors.As(a.err, &rf) || rf.Reason != pool.ReasonPeerRefused {
			t.Fatalf("%s: %v, want peer_refused", c.Cert.Issuer.CommonName, a.err)
		}
	}
	// The log line follows the answer.
	testenv.Eventually(t, 5*time.Second, "log lines saying why", func() bool {
		s := e.log.String()
		return strings.Contains(s, "client_denied") && strings.Contains(s, "client_cert")
	})
}

// rawRequest sends line with fds over a fresh pool connection and
// returns the answer and how many fds came with it.
func rawRequest(t *testing.T, path string, line []byte, fds ...int) (*pool.Answer, int) {
	t.Helper()
	c, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var oob []byte
	if len(fds) > 0 {
		oob = syscall.UnixRights(fds...)
	}
	if _, _, err := c.WriteMsgUnix(line, oob, nil); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	buf, ob := make([]byte, 4096), make([]byte, 256)
	var got []byte
	nfd := 0
	for !bytes.Contains(got, []byte("\n")) {
		n, oobn, _, _, err := c.ReadMsgUnix(buf, ob)
		got = append(got, buf[:n]...)
		if oobn > 0 {
			msgs, _ := syscall.ParseSocketControlMessage(ob[:oobn])
			for _, m := range msgs {
				r, _ := syscall.ParseUnixRights(&m)
				for _, fd := range r {
					syscall.Close(fd)
				}
				nfd += len(r)
			}
		}
		if err != nil {
			break
		}
	}
	var a pool.Answer
	if err := json.Unmarshal(bytes.TrimSpace(got), &a); err != nil {
		t.Fatalf("answer %q: %v", got, err)
	}
	return &a, nfd
}

// tcpPair returns both ends of a loopback TCP connection as files.
func tcpPair(t *testing.T) (app *os.File, remote net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	remote, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	c, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	f, err := c.(*net.TCPConn).File()
	c.Close()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close(); remote.Close() })
	return f, remote
}

// TestPoolRefusals: each malformed or disallowed request gets its reason,
// no fd, and the passed socket is not kept (the remote sees it close).
func TestPoolRefusals(t *testing.T) {
	e := newPoolEnv(t, webService)
	for _, tc := range []struct {
		name   string
		line   string
		fds    int
		reason string
	}{
		{"unknown service", `{"v":1,"service":"nope"}`, 1, pool.ReasonUnknownService},
		{"malformed", `{"v":1,"service":`, 1, pool.ReasonBadRequest},
		{"wrong version", `{"v":2,"service":"web"}`, 1, pool.ReasonBadRequest},
		{"unknown field", `{"v":1,"service":"web","key":"x"}`, 1, pool.ReasonBadRequest},
		{"repeated field", `{"v":1,"service":"nope","service":"web"}`, 1, pool.ReasonBadRequest},
		{"no fd", `{"v":1,"service":"web"}`, 0, pool.ReasonBadRequest},
		{"two fds", `{"v":1,"service":"web"}`, 2, pool.ReasonBadRequest},
		{"two requests", `{"v":1,"service":"web"}` + "\n" + `{"v":1,"service":"web"}`, 1, pool.ReasonBadRequest},
		{"too long", `{"v":1,"service":"web","server_name":"` + strings.Repeat("a", 5000) + `"}`, 1, pool.ReasonBadRequest},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var fds []int
			var remotes []net.Conn
			for range tc.fds {
				f, remote := tcpPair(t)
				fds = append(fds, int(f.Fd()))
				remotes = append(remotes, remote)
			}
			a, nfd := rawRequest(t, e.path, []byte(tc.line+"\n"), fds...)
			if a.OK || a.Reason != tc.reason || nfd != 0 || a.Error == "" {
				t.Fatalf("answer %+v with %d fds, want %s and none", a, nfd, tc.reason)
			}
			for _, f := range fds {
				syscall.Close(f) // the test's copies: now nobody holds the socket
			}
			for _, r := range remotes {
				_ = r.SetReadDeadline(time.Now().Add(5 * time.Second))
				if _, err := r.Read(make([]byte, 1)); err != io.EOF {
					t.Errorf("the remote of a refused socket read %v, want EOF (the pool kept a copy)", err)
				}
			}
		})
	}
	// A listening socket is a stream socket with no peer: refused, and
	// the pool does not trip over its missing remote address.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	lf, _ := l.(*net.TCPListener).File()
	defer lf.Close()
	if a, _ := rawRequest(t, e.path, []byte(`{"v":1,"service":"web"}`+"\n"), int(lf.Fd())); a.Reason != pool.ReasonBadRequest {
		t.Errorf("listening socket: %+v", a)
	}
	// A datagram socket is not a stream to run TLS on.
	u, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	uf, _ := u.(*net.UDPConn).File()
	defer uf.Close()
	if a, _ := rawRequest(t, e.path, []byte(`{"v":1,"service":"web"}`+"\n"), int(uf.Fd())); a.Reason != pool.ReasonBadRequest {
		t.Errorf("udp socket: %+v", a)
	}
}

// TestPoolNotAllowed: a caller whose uid and gid the service does not
// list is refused before any handshake (the credential check's hook
// plays another uid; SO_PEERCRED itself is the kernel's).
func TestPoolNotAllowed(t *testing.T) {
	e := newPoolEnv(t, webService, func(p *Pool) {
		p.peerCred = func(*net.UnixConn) (cred, error) { return cred{pid: 1, uid: 54321, gid: 54321}, nil }
	})
	f, remote := tcpPair(t)
	a, nfd := rawRequest(t, e.path, []byte(`{"v":1,"service":"web"}`+"\n"), int(f.Fd()))
	if a.Reason != pool.ReasonNotAllowed || nfd != 0 {
		t.Fatalf("answer %+v, %d fds", a, nfd)
	}
	f.Close()
	_ = remote.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := remote.Read(make([]byte, 64)); err != io.EOF {
		t.Errorf("remote read %d bytes, %v: want EOF and no handshake", n, err)
	}
	if got := testutil.ToFloat64(e.m.PoolRequests.WithLabelValues("web", pool.ReasonNotAllowed)); got != 1 {
		t.Errorf("not_allowed count = %v", got)
	}
}

// TestPoolReload: a reload changes services and pool-wide settings for
// new requests only. Here the reloaded configuration drops the "open"
// service and lowers max_connections to 1: the connection relayed
// before goes on, a new request for "open" is unknown_service, and any
// other request is answered busy at once while that connection holds
// the only slot. The reload's mode applies to the socket file.
func TestPoolReload(t *testing.T) {
	e := newPoolEnv(t, webService)
	addr, app := e.serveOne(t, "open")
	remote, err := e.dialTLS(t, addr, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer remote.Close()
	a := <-app
	if a.err != nil {
		t.Fatal(a.err)
	}
	defer a.plain.Close()

	only := strings.Replace(webService, `name = "open"`, `name = "renamed"`, 1)
	e.p.Update(e.build(t, "max_connections = 1\nmode = \"0600\"\n"+only))
	if fi, err := os.Stat(e.path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("socket after the reload: %v, %v; want mode 0600", fi, err)
	}

	poolRoundTrip(t, remote, a.plain) // the old connection keeps its service

	f, _ := tcpPair(t)
	ans, nfd := rawRequest(t, e.path, []byte(`{"v":1,"service":"web"}`+"\n"), int(f.Fd()))
	if ans.Reason != pool.ReasonBusy || nfd != 0 {
		t.Fatalf("with the only slot taken: %+v, want busy", ans)
	}
	remote.Close()
	a.plain.Close()
	testenv.Eventually(t, 5*time.Second, "the relayed connection to end", func() bool {
		return testutil.ToFloat64(e.m.Active.WithLabelValues("pool/open")) == 0
	})
	ans, _ = rawRequest(t, e.path, []byte(`{"v":1,"service":"open"}`+"\n"), int(f.Fd()))
	if ans.Reason != pool.ReasonUnknownService {
		t.Fatalf("removed service: %+v", ans)
	}
}

// TestPoolClientRoleGo: the client role verifies the server against the
// pool's CA and the request's server_name, presents the service's key,
// and answers the server's identity; a wrong name is peer_refused.
func TestPoolClientRoleGo(t *testing.T) {
	e := newPoolEnv(t, webService)
	srv := testenv.StartEcho(t, &tls.Config{Certificates: []tls.Certificate{e.web.TLSCertificate()},
		ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: e.ca.Pool()})
	dial := func() net.Conn {
		c, err := net.Dial("tcp", srv.Addr)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	plain, ans, err := pool.Client(ctx, e.path, dial(), "out", "web.test")
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	if ans.Peer.CN != "web.test" || len(ans.Peer.DNS) != 1 || ans.LocalKey != "client" || ans.ServerName != "web.test" {
		t.Fatalf("answer %+v peer %+v", ans, ans.Peer)
	}
	if _, err := plain.Write([]byte("echo me\n")); err != nil {
		t.Fatal(err)
	}
	if line, err := bufio.NewReader(plain).ReadString('\n'); err != nil || line != "echo me\n" {
		t.Fatalf("echo: %q, %v", line, err)
	}

	_, _, err = pool.Client(ctx, e.path, dial(), "out", "other.test")
	var rf *pool.Refusal
	if !errors.As(err, &rf) || rf.Reason != pool.ReasonPeerRefused {
		t.Fatalf("wrong server name: %v, want peer_refused", err)
	}
	_, _, err = pool.Client(ctx, e.path, dial(), "out", "")
	if !errors.As(err, &rf) || rf.Reason != pool.ReasonBadRequest {
		t.Fatalf("no server name at all: %v, want bad_request", err)
	}
}
