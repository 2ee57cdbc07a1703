package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"math/big"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sealproxy/sealproxy/cmd/internal/cli"
	"github.com/sealproxy/sealproxy/proxy/control"
	"github.com/sealproxy/sealproxy/testenv"
	"github.com/sealproxy/sealproxy/unlock"
	"github.com/sealproxy/sealproxy/unlock/gate"
)

// adminSocket returns a short path for a unix admin socket.
func adminSocket(t *testing.T) string {
	t.Helper()
	if runtime.GOOS != "linux" {
		t.Skip("the control API checks callers with SO_PEERCRED (linux)")
	}
	dir, err := os.MkdirTemp("", "ctl")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return filepath.Join(dir, "admin.sock")
}

// sealedAs writes FILE.crt, a certificate for dnsName, and FILE.key.jwe,
// its key sealed with pinConfig; it returns the certificate's serial.
func (f *fixture) sealedAs(file, dnsName, pinConfig string) *big.Int {
	f.t.Helper()
	leaf := f.ca.Server(f.t, dnsName)
	leaf.WriteFiles(f.t, f.dir, file)
	jwe, err := unlock.Encrypt(context.Background(), "tang", []byte(pinConfig), leaf.KeyPEM(f.t), nil)
	if err != nil {
		f.t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(f.dir, file+".key.jwe"), jwe, 0o600); err != nil {
		f.t.Fatal(err)
	}
	os.Remove(filepath.Join(f.dir, file+".key"))
	return leaf.Cert.SerialNumber
}

// ctl runs `sealproxy ctl --admin unix:SOCK ARGS` in-process.
func ctl(t *testing.T, sock string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	var errb testenv.SyncBuffer
	stdout, code = ctlTo(sock, &errb, args...)
	return stdout, errb.String(), code
}

// ctlTo is ctl writing stderr to errb as it comes.
func ctlTo(sock string, errb io.Writer, args ...string) (stdout string, code int) {
	var out bytes.Buffer
	err := run(context.Background(), append([]string{"ctl", "--admin", "unix:" + sock}, args...), strings.NewReader(""), &out, errb)
	return out.String(), cli.Report("sealproxy", err, errb)
}

func mustCtl(t *testing.T, sock string, args ...string) string {
	t.Helper()
	out, errs, code := ctl(t, sock, args...)
	if code != 0 {
		t.Fatalf("ctl %s: exit %d\n%s", strings.Join(args, " "), code, errs)
	}
	return out
}

// served returns the serial of the certificate a handshake for name gets
// (the serial is what is compared: the name is not verified, so that a
// handshake also shows which certificate a name does not get yet).
func (f *fixture) served(addr, name string) *big.Int {
	f.t.Helper()
	c, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true, ServerName: name})
	if err != nil {
		f.t.Fatalf("handshake for %s: %v", name, err)
	}
	defer c.Close()
	return c.ConnectionState().PeerCertificates[0].SerialNumber
}

// TestCtl drives every verb against the daemon in-process, keys opened
// through a real (embedded) Tang server: a second sealed key is added and
// attached, the first replaced while a connection stays open, and both
// changes survive a SIGHUP reload and a restart; a certificate that is
// not its key's is refused; a configuration that contradicts the state
// file is refused, naming both.
func TestCtl(t *testing.T) {
	sock := adminSocket(t)
	f := newFixture(t)
	tangSrv := testenv.EmbeddedTang(t)
	f.sealed("web", tangSrv)
	apiSerial := f.sealedAs("api", "api.test", tangSrv.Config())
	newSerial := f.sealedAs("webnew", "web.test", tangSrv.Config())
	admin := "[admin]\nlisten = \"unix:" + sock + "\"\nstate_file = \"state.json\"\n"
	path := f.write(key("web") + f.listener("web", "127.0.0.1:0") + admin)
	r := startDaemon(t, &daemon{}, path)
	testenv.Eventually(t, time.Minute, "ready", func() bool { return strings.Contains(r.logs.String(), "msg=ready") })
	addr := r.addr("web")
	oldSerial := f.served(addr, "web.test")

	out := mustCtl(t, sock, "set-key", "api", "--cert", filepath.Join(f.dir, "api.crt"), "--source", "sealed:api.key.jwe")
	if !strings.Contains(out, "staged key api: CN=api.test") {
		t.Fatalf("set-key: %q", out)
	}
	if got := f.served(addr, "api.test"); got.Cmp(oldSerial) != 0 {
		t.Fatal("a staged key is served before commit")
	}
	mustCtl(t, sock, "commit", "api")
	mustCtl(t, sock, "attach", "web", "api")
	if got := f.served(addr, "api.test"); got.Cmp(apiSerial) != 0 {
		t.Fatalf("after attach, api.test gets serial %v, want %v", got, apiSerial)
	}

	// An open connection, then the first key replaced under it.
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
			t.Fatalf("open connection: %q, %v", buf, err)
		}
	}
	echo("before")
	mustCtl(t, sock, "set-key", "web", "--cert", filepath.Join(f.dir, "webnew.crt"), "--source", "sealed:webnew.key.jwe")
	mustCtl(t, sock, "commit", "web")
	if got := f.served(addr, "web.test"); got.Cmp(newSerial) != 0 {
		t.Fatalf("after commit, web.test gets serial %v, want %v", got, newSerial)
	}
	echo("after the swap")

	// A certificate that is not the key's.
	_, errs, code := ctl(t, sock, "set-key", "bad", "--cert", filepath.Join(f.dir, "api.crt"), "--source", "sealed:webnew.key.jwe")
	if code != cli.ExitFailure || !strings.Contains(errs, "sealproxy: error: staging key \"bad\"") || !strings.Contains(errs, "does not match") {
		t.Fatalf("mismatched cert: exit %d\n%s", code, errs)
	}
	// A key in use.
	_, errs, code = ctl(t, sock, "remove-key", "api")
	if code != cli.ExitFailure || !strings.Contains(errs, "used by listener(s) web") || !strings.Contains(errs, "hint: detach it first") {
		t.Fatalf("remove-key in use: exit %d\n%s", code, errs)
	}

	check := func(when string) {
		t.Helper()
		addr := r.addr("web")
		if got := f.served(addr, "web.test"); got.Cmp(newSerial) != 0 {
			t.Fatalf("%s: web.test gets serial %v, want %v", when, got, newSerial)
		}
		if got := f.served(addr, "api.test"); got.Cmp(apiSerial) != 0 {
			t.Fatalf("%s: api.test gets serial %v, want %v", when, got, apiSerial)
		}
		var keys []control.KeyInfo
		if err := json.Unmarshal([]byte(mustCtl(t, sock, "--json", "keys")), &keys); err != nil {
			t.Fatal(err)
		}
		origins := map[string]string{}
		for _, k := range keys {
			origins[k.Name] = k.Origin
		}
		if origins["web"] != "state" || origins["api"] != "state" {
			t.Fatalf("%s: origins %v", when, origins)
		}
	}
	check("after the changes")

	// A change whose reload fails (the file on disk is broken meanwhile):
	// refused with the reason, nothing swapped, the state file unchanged.
	good, _ := os.ReadFile(path)
	stateBefore, _ := os.ReadFile(filepath.Join(f.dir, "state.json"))
	f.sealedAs("web3", "web.test", tangSrv.Config())
	mustCtl(t, sock, "set-key", "web", "--cert", filepath.Join(f.dir, "web3.crt"), "--source", "sealed:web3.key.jwe")
	os.WriteFile(path, append(append([]byte{}, good...), "bogus = 1\n"...), 0o644)
	_, errs, code = ctl(t, sock, "commit", "web")
	if code != cli.ExitFailure || !strings.Contains(errs, "reload failed, the previous configuration stays") || !strings.Contains(errs, "bogus: unknown setting") {
		t.Fatalf("commit over a broken file: exit %d\n%s", code, errs)
	}
	os.WriteFile(path, good, 0o644)
	if stateAfter, _ := os.ReadFile(filepath.Join(f.dir, "state.json")); string(stateAfter) != string(stateBefore) {
		t.Fatalf("a refused commit changed the state file:\n%s", stateAfter)
	}
	check("after a refused commit")
	echo("after a refused commit")
	reloads := strings.Count(r.logs.String(), "msg=reloaded")
	r.sigs <- syscall.SIGHUP
	testenv.Eventually(t, time.Minute, "reloaded", func() bool { return strings.Count(r.logs.String(), "msg=reloaded") > reloads })
	check("after SIGHUP")
	echo("after the reload")

	// A restart: stop, start again on the same files.
	open.Close() // else the stop drains it for shutdown_timeout
	r.cancel()
	if err := r.wait(); err != nil {
		t.Fatal(err)
	}
	r = startDaemon(t, &daemon{}, path)
	testenv.Eventually(t, time.Minute, "ready again", func() bool { return strings.Contains(r.logs.String(), "msg=ready") })
	check("after a restart")
	fi, err := os.Stat(filepath.Join(f.dir, "state.json"))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("state file: %v %v", fi, err)
	}

	// The configuration now defines api differently: the reload is
	// refused and the changes stay.
	f.write(key("web") + key("api") + f.listener("web", "127.0.0.1:0") + admin)
	r.sigs <- syscall.SIGHUP
	testenv.Eventually(t, time.Minute, "refused reload", func() bool { return strings.Contains(r.logs.String(), "reload failed") })
	logs := r.logs.String()
	data, _ := os.ReadFile(path)
	apiLine := strings.Count(string(data[:strings.LastIndex(string(data), "[[key]]")]), "\n") + 1
	if !strings.Contains(logs, fmt.Sprintf("%s:%d", path, apiLine)) || !strings.Contains(logs, filepath.Join(f.dir, "state.json")) {
		t.Fatalf("the refusal names not both files:\n%s", logs)
	}
	check("after a refused reload")

	// Started on the conflicting configuration: refused, naming both.
	r.cancel()
	if err := r.wait(); err != nil {
		t.Fatal(err)
	}
	_, stderr, code := runCLI(t, "run", "--config", path)
	if code != cli.ExitUsage || !strings.Contains(stderr, fmt.Sprintf("%s:%d", path, apiLine)) || !strings.Contains(stderr, "state.json") ||
		!strings.Contains(stderr, "sealproxy: hint: make the configuration and [admin] state_file agree") {
		t.Fatalf("start on a conflicting configuration: exit %d\n%s", code, stderr)
	}
}

// TestCtlGate: a staged key held by a gate; `ctl set-key` prints the
// approval code while it waits, and a denial stages nothing.
func TestCtlGate(t *testing.T) {
	sock := adminSocket(t)
	g := testenv.StartGate(t, heldGate)
	pin, ready := g.PinConfig(), g.Ready
	f := newFixture(t)
	tangSrv := testenv.EmbeddedTang(t)
	f.sealed("web", tangSrv)
	f.sealedAs("api", "api.test", pin)
	path := f.write(key("web") + f.listener("web", "127.0.0.1:0") + "[admin]\nlisten = \"unix:" + sock + "\"\n" +
		"[unlock]\ntimeout = \"10s\"\n") // bounds a recovery nobody approves
	n := listenNotify(t)
	r := startDaemon(t, &daemon{}, path)
	n.expect(t, "READY=1")

	// setKey runs set-key in the background and returns the request it
	// makes at the gate once the command printed its code.
	var (
		wg   sync.WaitGroup
		errb *testenv.SyncBuffer
		code int
	)
	setKey := func() gate.Request {
		t.Helper()
		errb = &testenv.SyncBuffer{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, code = ctlTo(sock, errb, "set-key", "api", "--cert", filepath.Join(f.dir, "api.crt"), "--source", "sealed:api.key.jwe")
		}()
		var req gate.Request
		select {
		case req = <-ready:
		case <-time.After(time.Minute):
			t.Fatalf("no request at the gate:\n%s", r.logs.String())
		}
		testenv.Eventually(t, time.Minute, "the code printed by ctl set-key", func() bool {
			return strings.Contains(errb.String(), "waiting for approval (code "+req.Code+")")
		})
		return req
	}
	req := setKey()
	g.Deny(req.Code, "alice", "test")
	wg.Wait()
	if errs := errb.String(); code != cli.ExitFailure || !strings.Contains(errs, "denied by operator alice") {
		t.Fatalf("denied set-key: exit %d\n%s", code, errs)
	}
	n.expect(t, "STATUS=serving 1 listener(s)") // not left at the staging's "failed"
	if out := mustCtl(t, sock, "keys"); strings.Contains(out, "api") {
		t.Fatalf("a denied key is listed:\n%s", out)
	}
	if _, errs, code := ctl(t, sock, "commit", "api"); code != cli.ExitFailure || !strings.Contains(errs, `nothing staged for key "api"`) {
		t.Fatalf("commit after a denial: exit %d\n%s", code, errs)
	}

	// Approved this time: one approval covers set-key, commit and a
	// later attach (the committed key stays open until attached).
	req = setKey()
	if _, err := g.Approve(req.Code, "alice", "test"); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	if code != 0 {
		t.Fatalf("approved set-key: exit %d\n%s", code, errb.String())
	}
	mustCtl(t, sock, "commit", "api")
	mustCtl(t, sock, "attach", "web", "api")
	select {
	case req := <-ready:
		t.Fatalf("the gate was asked again (code %s) after commit or attach", req.Code)
	default:
	}
	f.roundTrip(r.addr("web"), "api", "served after one approval")
}
