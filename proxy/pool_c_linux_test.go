package proxy

import (
	"bufio"
	"context"
	"io"
	"net"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sealproxy/sealproxy/testenv"
)

// buildCClient compiles the C pool client and the test application with
// the system cc (strict warnings: the client must stay clean C99).
func buildCClient(t *testing.T) string {
	t.Helper()
	testenv.SkipIfShort(t, "compiles C")
	cc := testenv.LookTool(t, "cc", "gcc")
	bin := filepath.Join(t.TempDir(), "pool_c_driver")
	out, err := exec.Command(cc, "-std=c99", "-Wall", "-Wextra", "-Werror", "-O1", "-Ipool/c",
		"-o", bin, "pool/c/sealpool.c", "testdata/pool_c_driver.c").CombinedOutput()
	if err != nil {
		t.Fatalf("cc: %v\n%s", err, out)
	}
	return bin
}

// TestPoolCClientServerRole: the C client's starttls_server hands an
// accepted connection to the pool; openssl s_client (alice's
// certificate) completes TLS, its line reaches the C application as
// plaintext and the answer returns; the C client parsed alice's CN and
// the key from the answer. A second run asks for a service that does
// not exist and gets the reason.
func TestPoolCClientServerRole(t *testing.T) {
	bin := buildCClient(t)
	openssl := testenv.LookTool(t, "openssl", "openssl")
	e := newPoolEnv(t, webService)
	cert, key := e.alice.WriteFiles(t, e.dir, "alice")

	run := func(service string, withClient bool) (string, string) {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		app := exec.CommandContext(ctx, bin, "server", e.path, service)
		stdout, _ := app.StdoutPipe()
		if err := app.Start(); err != nil {
			t.Fatal(err)
		}
		br := bufio.NewReader(stdout)
		first, err := br.ReadString('\n')
		if err != nil || !strings.HasPrefix(first, "port ") {
			t.Fatalf("driver: %q, %v", first, err)
		}
		port := strings.TrimSpace(strings.TrimPrefix(first, "port "))
		args := []string{"s_client", "-connect", net.JoinHostPort("127.0.0.1", port), "-servername", "web.test",
			"-CAfile", e.dir + "/ca.crt", "-quiet"}
		if withClient {
			args = append(args, "-cert", cert, "-key", key)
		}
		remote := exec.CommandContext(ctx, openssl, args...)
		remote.Stdin = strings.NewReader("hello from s_client\n")
		remoteOut, _ := remote.CombinedOutput()
		rest, _ := io.ReadAll(br)
		_ = app.Wait()
		return first + string(rest), string(remoteOut)
	}

	appOut, remoteOut := run("web", true)
	if !strings.Contains(appOut, "server ok version=TLS1.3 peer_present=1 peer_cn=alice local_key=web server_name=web.test") {
		t.Errorf("C application printed:\n%s", appOut)
	}
	if !strings.Contains(remoteOut, "pong: hello from s_client") {
		t.Errorf("s_client printed:\n%s", remoteOut)
	}
	if appOut, _ := run("nope", false); !strings.Contains(appOut, "refused unknown_service no service \"nope\"") {
		t.Errorf("unknown service: the C application printed:\n%s", appOut)
	}
}

// TestPoolCClientClientRole: the C client's starttls_client against an
// openssl s_server that requires a client certificate: the pool
// presents its key, the C client reads the server's CN from the answer,
// and the page s_server sends names the pool's client certificate.
func TestPoolCClientClientRole(t *testing.T) {
	bin := buildCClient(t)
	openssl := testenv.LookTool(t, "openssl", "openssl")
	e := newPoolEnv(t, webService)
	_, port, _ := net.SplitHostPort(testenv.FreeAddr(t))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	srv := exec.CommandContext(ctx, openssl, "s_server", "-accept", "127.0.0.1:"+port, "-cert", e.dir+"/web.crt",
		"-key", e.dir+"/web.key", "-CAfile", e.dir+"/ca.crt", "-Verify", "1", "-verify_return_error", "-www")
	srv.Stdout, srv.Stderr = io.Discard, io.Discard
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cancel(); _ = srv.Wait() }()
	testenv.Eventually(t, 10*time.Second, "s_server to listen", func() bool {
		c, err := net.Dial("tcp", "127.0.0.1:"+port)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
	out, err := exec.CommandContext(ctx, bin, "client", e.path, "out", port, "web.test").CombinedOutput()
	if err != nil {
		t.Fatalf("C application: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "client ok version=TLS1.3 peer_present=1 peer_cn=web.test local_key=client server_name=web.test") ||
		!strings.Contains(string(out), "pool-client") {
		t.Fatalf("C application printed:\n%s", out)
	}
}
