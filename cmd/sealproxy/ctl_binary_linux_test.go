package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"io"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sealproxy/sealproxy/testenv"
)

// TestCtlBinary is the independent check of issue 14, against the real
// binaries and openssl: sealproxy starts with one sealed key and a unix
// admin socket; `sealproxy ctl` adds a second certificate and sealed key
// and attaches it, and `openssl s_client -servername` receives it; the
// first certificate is replaced: new handshakes see the new serial while
// a connection opened before keeps working; after SIGHUP and after a
// restart both changes are still served.
func TestCtlBinary(t *testing.T) {
	bin := testenv.BuildCommand(t, "sealproxy")
	openssl := testenv.LookTool(t, "openssl", "openssl")
	sock := adminSocket(t)
	f := newFixture(t)
	tangSrv := testenv.EmbeddedTang(t)
	f.sealed("web", tangSrv)
	apiSerial := f.sealedAs("api", "api.test", tangSrv.Config())
	newSerial := f.sealedAs("webnew", "web.test", tangSrv.Config())
	addr := testenv.FreeAddr(t)
	path := f.write(key("web") + f.listener("web", addr) +
		"[admin]\nlisten = \"unix:" + sock + "\"\nstate_file = \"state.json\"\n")

	start := func() *process {
		t.Helper()
		p := startProcess(t, exec.Command(bin, "run", "--config", path))
		p.logs.WaitFor(t, time.Minute, "msg=ready")
		return p
	}
	ctlBin := func(args ...string) string {
		t.Helper()
		out, err := exec.Command(bin, append([]string{"ctl", "--admin", "unix:" + sock}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("sealproxy ctl %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	// sClient returns the serial of the certificate openssl receives for
	// name.
	sClient := func(name string) *big.Int {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, openssl, "s_client", "-connect", addr, "-servername", name)
		cmd.Stdin = strings.NewReader("")
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("openssl s_client -servername %s: %v\n%s", name, err, out)
		}
		block, _ := pem.Decode(out[strings.Index(string(out), "-----BEGIN CERTIFICATE-----"):])
		if block == nil {
			t.Fatalf("openssl s_client printed no certificate:\n%s", out)
		}
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		return cert.SerialNumber
	}
	expect := func(when, name string, want *big.Int) {
		t.Helper()
		if got := sClient(name); got.Cmp(want) != 0 {
			t.Fatalf("%s: openssl receives serial %x for %s, want %x", when, got, name, want)
		}
	}

	p := start()
	oldSerial := sClient("web.test")
	ctlBin("set-key", "api", "--cert", filepath.Join(f.dir, "api.crt"), "--source", "sealed:api.key.jwe")
	ctlBin("commit", "api")
	ctlBin("attach", "web", "api")
	expect("after attach", "api.test", apiSerial)
	expect("after attach", "web.test", oldSerial)

	open, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: f.ca.Pool(), ServerName: "web.test"})
	if err != nil {
		t.Fatal(err)
	}
	defer open.Close()
	echo := func(msg string) {
		t.Helper()
		io.WriteString(open, msg)
		buf := make([]byte, len(msg))
		open.SetReadDeadline(time.Now().Add(30 * time.Second))
		if _, err := io.ReadFull(open, buf); err != nil || string(buf) != msg {
			t.Fatalf("the connection opened before the swap: %q, %v", buf, err)
		}
	}
	echo("before")
	ctlBin("set-key", "web", "--cert", filepath.Join(f.dir, "webnew.crt"), "--source", "sealed:webnew.key.jwe")
	ctlBin("commit", "web")
	expect("after replacing web", "web.test", newSerial)
	echo("after the swap")
	if got := open.ConnectionState().PeerCertificates[0].SerialNumber; got.Cmp(oldSerial) != 0 {
		t.Fatalf("the open connection's certificate changed: %x", got)
	}

	reloads := strings.Count(p.logs.String(), "msg=reloaded")
	p.signal(syscall.SIGHUP)
	testenv.Eventually(t, time.Minute, "SIGHUP reload", func() bool { return strings.Count(p.logs.String(), "msg=reloaded") > reloads })
	expect("after SIGHUP", "web.test", newSerial)
	expect("after SIGHUP", "api.test", apiSerial)
	echo("after SIGHUP")

	open.Close()
	p.signal(syscall.SIGTERM)
	p.waitExit(time.Minute, "SIGTERM")
	p = start()
	expect("after a restart", "web.test", newSerial)
	expect("after a restart", "api.test", apiSerial)
	if out := ctlBin("keys"); !strings.Contains(out, "api ") || strings.Count(out, " state ") != 2 {
		t.Fatalf("ctl keys after a restart:\n%s", out)
	}

	// Another uid, identified by the kernel (SO_PEERCRED, no test hook):
	// refused, although the socket's file mode lets it connect.
	if os.Getuid() != 0 {
		t.Log("not root: the call from another uid is left to proxy/control's TestRefusals")
		return
	}
	os.Chmod(filepath.Dir(sock), 0o755)
	os.Chmod(sock, 0o777)
	// A copy of the binary that uid can run (the cached one is private).
	pub, err := os.MkdirTemp("", "ctlbin")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(pub)
	data, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	os.Chmod(pub, 0o755)
	if err := os.WriteFile(filepath.Join(pub, "sealproxy"), data, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(filepath.Join(pub, "sealproxy"), "ctl", "--admin", "unix:"+sock, "remove-key", "api")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "uid 65534 may not use the control API") {
		t.Fatalf("ctl as uid 65534: %v\n%s", err, out)
	}
	if !strings.Contains(p.logs.String(), "uid=65534") {
		t.Fatalf("the refusal is not in the log with the caller's uid:\n%s", p.logs.String())
	}
	expect("after a refused call", "api.test", apiSerial)
}
