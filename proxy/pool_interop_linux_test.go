package proxy

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/sealproxy/sealproxy/proxy/pool"
	"github.com/sealproxy/sealproxy/testenv"
)

// answerLine is what a server-role application does with the plaintext
// in the interop tests: read one line, answer "pong: LINE".
func answerLine(t *testing.T, a accepted) {
	t.Helper()
	if a.err != nil {
		t.Fatal(a.err)
	}
	defer a.plain.Close()
	line, err := bufio.NewReader(a.plain).ReadString('\n')
	if err != nil {
		t.Errorf("app read %q, %v", line, err)
		return
	}
	fmt.Fprintf(a.plain, "pong: %s", line)
}

// TestPoolServerRoleOpenSSLClient: openssl s_client, with alice's
// certificate, talks through the pool to the application: its line
// arrives as plaintext and the answer comes back; the pool answered
// alice's name.
func TestPoolServerRoleOpenSSLClient(t *testing.T) {
	testenv.SkipIfShort(t, "drives openssl")
	openssl := testenv.LookTool(t, "openssl", "openssl")
	e := newPoolEnv(t, webService)
	cert, key := e.alice.WriteFiles(t, e.dir, "alice")
	addr, app := e.serveOne(t, "web")
	done := make(chan *pool.Answer, 1)
	go func() {
		a := <-app
		answerLine(t, a)
		done <- a.ans
	}()
	out := runTool(t, "hello pool\n", openssl, "s_client", "-connect", addr, "-servername", "web.test",
		"-CAfile", e.dir+"/ca.crt", "-verify_return_error", "-cert", cert, "-key", key, "-quiet")
	if !strings.Contains(out, "pong: hello pool") {
		t.Fatalf("s_client output:\n%s", out)
	}
	if ans := <-done; ans == nil || ans.Peer.CN != "alice" {
		t.Fatalf("answer %+v", ans)
	}
}

// TestPoolServerRoleCurl: curl's HTTPS request reaches the application
// as plain HTTP, and its plain response is what curl prints.
func TestPoolServerRoleCurl(t *testing.T) {
	testenv.SkipIfShort(t, "drives curl")
	curl := testenv.LookTool(t, "curl", "curl")
	e := newPoolEnv(t, webService)
	addr, app := e.serveOne(t, "open")
	go func() {
		a := <-app
		if a.err != nil {
			t.Error(a.err)
			return
		}
		defer a.plain.Close()
		br := bufio.NewReader(a.plain)
		for {
			line, err := br.ReadString('\n')
			if err != nil || line == "\r\n" {
				break
			}
		}
		fmt.Fprintf(a.plain, "HTTP/1.1 200 OK\r\nContent-Length: 18\r\nConnection: close\r\n\r\nplain from the app")
	}()
	_, port, _ := net.SplitHostPort(addr)
	out := runTool(t, "", curl, "-sS", "--http1.1", "--cacert", e.dir+"/ca.crt",
		"--resolve", "web.test:"+port+":127.0.0.1", "https://web.test:"+port+"/")
	if out != "plain from the app" {
		t.Fatalf("curl printed %q", out)
	}
}

// TestPoolClientRoleOpenSSLServer: the pool connects as a client to an
// openssl s_server that requires a client certificate (-Verify 1): the
// pool presents the service's key, the answer names the server, and
// s_server's status page shows the client certificate it verified.
func TestPoolClientRoleOpenSSLServer(t *testing.T) {
	testenv.SkipIfShort(t, "drives openssl")
	openssl := testenv.LookTool(t, "openssl", "openssl")
	e := newPoolEnv(t, webService)
	_, port, _ := net.SplitHostPort(testenv.FreeAddr(t))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	srv := exec.CommandContext(ctx, openssl, "s_server", "-accept", "127.0.0.1:"+port, "-cert", e.dir+"/web.crt",
		"-key", e.dir+"/web.key", "-CAfile", e.dir+"/ca.crt", "-Verify", "1", "-verify_return_error", "-www")
	srv.Stdout, srv.Stderr = io.Discard, io.Discard
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cancel(); _ = srv.Wait() }()
	var c net.Conn
	testenv.Eventually(t, 10*time.Second, "s_server to listen", func() bool {
		var err error
		c, err = net.Dial("tcp", "127.0.0.1:"+port)
		return err == nil
	})
	rctx, rcancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer rcancel()
	plain, ans, err := pool.Client(rctx, e.path, c, "out", "web.test")
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	if ans.Peer.CN != "web.test" || ans.Peer.SPKISHA256 != SPKIPin(e.web.Cert) || ans.LocalKey != "client" {
		t.Fatalf("answer %+v peer %+v", ans, ans.Peer)
	}
	if _, err := io.WriteString(plain, "GET / HTTP/1.0\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	_ = plain.SetReadDeadline(time.Now().Add(20 * time.Second))
	page, err := io.ReadAll(plain)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(page), "200 ok") || !strings.Contains(string(page), "pool-client") {
		t.Fatalf("s_server page does not show the pool's client certificate:\n%s", page)
	}
}

// TestPoolIndependentPythonCheck runs the independent check: a
// Python client written from docs/pool.md alone (send_fds/recv_fds)
// passes an accepted connection, openssl s_client's bytes cross both
// ways, and the answer's peer is {} without a client certificate and
// names alice's CN with client_auth = "require".
func TestPoolIndependentPythonCheck(t *testing.T) {
	testenv.SkipIfShort(t, "drives python3 and openssl")
	python := testenv.LookTool(t, "python3", "python3")
	testenv.LookTool(t, "openssl", "openssl")
	e := newPoolEnv(t, webService)
	cert, key := e.alice.WriteFiles(t, e.dir, "alice")
	run := func(args ...string) *pool.Answer {
		out := runTool(t, "", python, append([]string{"testdata/pool_check.py", e.path}, args...)...)
		var a pool.Answer
		if err := json.Unmarshal([]byte(strings.TrimSpace(out)), &a); err != nil {
			t.Fatalf("python check printed %q: %v", out, err)
		}
		return &a
	}
	if a := run("open", e.dir+"/ca.crt"); !a.OK || a.Peer == nil || a.Peer.CN != "" || a.Peer.SPKISHA256 != "" || len(a.Peer.DNS)+len(a.Peer.URI) != 0 {
		t.Errorf("without a client certificate: %+v peer %+v, want peer {}", a, a.Peer)
	}
	if a := run("web", e.dir+"/ca.crt", cert, key); !a.OK || a.Peer == nil || a.Peer.CN != "alice" {
		t.Errorf("with client_auth = require: %+v peer %+v, want cn alice", a, a.Peer)
	}
}
