package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
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
