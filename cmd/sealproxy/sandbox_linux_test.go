//go:build linux

package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sealproxy/sealproxy/cmd/internal/sandbox"
	"github.com/sealproxy/sealproxy/proxy/config"
	"github.com/sealproxy/sealproxy/testenv"
)

// servedSerial dials addr and returns the serial of the leaf it serves.
func (f *fixture) servedSerial(addr, name string) string {
	f.t.Helper()
	c, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: f.ca.Pool(), ServerName: name + ".test"})
	if err != nil {
		f.t.Fatalf("dialing %s: %v", addr, err)
	}
	defer c.Close()
	return c.ConnectionState().PeerCertificates[0].SerialNumber.String()
}

// startConfined starts `sealproxy run` and waits until it is confined
// and ready.
func startConfined(t *testing.T, bin, path string) *process {
	t.Helper()
	p := startProcess(t, exec.Command(bin, "run", "--config", path))
	p.logs.WaitFor(t, time.Minute, `msg="landlock sandbox applied" landlock_abi=`)
	p.logs.WaitFor(t, time.Minute, "msg=ready")
	return p
}

// TestSandboxedProcess runs the built binary with [sandbox] landlock =
// "required": it serves; a reload after the certificate and sealed key
// were replaced in their directory serves the new certificate; a reload
// naming a file in a directory outside the sandbox fails with the
// sandbox's message and the old state keeps serving; the unix listener's
// socket is removed at exit.
func TestSandboxedProcess(t *testing.T) {
	testenv.NeedLandlock(t)
	bin := testenv.BuildCommand(t, "sealproxy")
	f := newFixture(t)
	tangSrv := testenv.EmbeddedTang(t)
	f.sealed("web", tangSrv)
	addr := testenv.FreeAddr(t)
	sockDir := filepath.Join(f.dir, "run")
	if err := os.Mkdir(sockDir, 0o755); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(sockDir, "web.sock")
	head := "[sandbox]\nlandlock = \"required\"\n\n"
	listeners := f.listener("web", addr) + f.listener("local", "unix:"+sock)
	listeners = strings.Replace(listeners, `keys = ["local"]`, `keys = ["web"]`, 1)
	path := f.write(head + key("web") + listeners)

	p := startConfined(t, bin, path)
	logs := p.logs
	f.roundTrip(addr, "web", "confined")
	before := f.servedSerial(addr, "web")

	// A certificate and sealed key replaced in the same directory.
	f.sealed("web", tangSrv)
	p.signal(syscall.SIGHUP)
	logs.WaitFor(t, time.Minute, "msg=reloaded")
	rotated := f.servedSerial(addr, "web")
	if rotated == before {
		t.Fatalf("the reload still serves certificate %s", before)
	}
	f.roundTrip(addr, "web", "rotated")

	// A certificate in a new directory: outside the sandbox.
	outside := t.TempDir()
	leaf := f.ca.Server(t, "web.test")
	certPath, _ := leaf.WriteFiles(t, outside, "web")
	f.write(head + strings.Replace(key("web"), `cert = "web.crt"`, fmt.Sprintf("cert = %q", certPath), 1) + listeners)
	p.signal(syscall.SIGHUP)
	logs.WaitFor(t, time.Minute, "reload failed; the previous configuration stays")
	got := logs.String()
	for _, want := range []string{certPath + ": permission denied", "sandbox: restart sealproxy to allow new paths"} {
		if !strings.Contains(got, want) {
			t.Errorf("the refused reload's error lacks %q:\n%s", want, got)
		}
	}
	if serial := f.servedSerial(addr, "web"); serial != rotated {
		t.Errorf("after the refused reload: serving %s, want the previous %s", serial, rotated)
	}
	f.roundTrip(addr, "web", "old state")

	// A unix listener in a new directory: no socket can be made there.
	newSock := filepath.Join(t.TempDir(), "new.sock")
	extra := strings.Replace(f.listener("web", "unix:"+newSock), `name = "web"`, `name = "new"`, 1)
	f.write(head + key("web") + listeners + extra)
	p.signal(syscall.SIGHUP)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if !testenv.Poll(ctx, func() bool {
		return strings.Count(logs.String(), "reload failed; the previous configuration stays") >= 2
	}) {
		t.Fatalf("the second refused reload was not logged:\n%s", logs.String())
	}
	if want := newSock + " is outside the paths allowed at start-up; sandbox: restart sealproxy to allow new paths"; !strings.Contains(logs.String(), want) {
		t.Errorf("the refused unix listener's error lacks %q:\n%s", want, logs.String())
	}
	f.roundTrip(addr, "web", "still the old state")

	p.signal(syscall.SIGTERM)
	p.waitExit(time.Minute, "SIGTERM")
	if _, err := os.Stat(sock); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("unix socket %s left behind (removing it is allowed): %v", sock, err)
	}
	t.Logf("logs:\n%s", logs.String())
}

// sandboxChildEnv names the configuration a re-executed test binary
// confines itself to: the sandbox cannot be left, so the test process
// never applies it.
const sandboxChildEnv = "SEALPROXY_SANDBOX_TEST_CONFIG"

// TestSandboxPolicyConfines applies the policy computed from a
// configuration in a child process, which then reads what the
// configuration names and is refused a file beside the configuration's
// directory and /etc/shadow.
func TestSandboxPolicyConfines(t *testing.T) {
	if path := os.Getenv(sandboxChildEnv); path != "" {
		policyChild(t, path)
		return
	}
	testenv.NeedLandlock(t)
	f := newFixture(t)
	f.sealed("web", testenv.EmbeddedTang(t))
	path := f.write(key("web") + f.listener("web", "127.0.0.1:1"))
	outside := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(outside, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	testenv.RunConfinedChild(t, []string{sandboxChildEnv + "=" + path, "OUTSIDE=" + outside}, "confined child: checks done")
}

func policyChild(t *testing.T, path string) {
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sandbox.Apply(sandboxPolicy(cfg), sandbox.Required); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{path, cfg.Resolve("web.crt"), cfg.Resolve("web.key.jwe"), "/etc/hosts"} {
		if _, err := os.ReadFile(p); err != nil {
			t.Errorf("reading %s: %v, want allowed", p, err)
		}
	}
	for _, p := range []string{os.Getenv("OUTSIDE"), "/etc/shadow"} {
		if _, err := os.ReadFile(p); !errors.Is(err, fs.ErrPermission) {
			t.Errorf("reading %s: %v, want a permission error", p, err)
		}
	}
	if err := os.WriteFile(cfg.Resolve("web.crt"), nil, 0o644); !errors.Is(err, fs.ErrPermission) {
		t.Errorf("writing the certificate: %v, want a permission error", err)
	}
	fmt.Println("confined child: checks done")
}

// TestSandboxPolicy checks which paths a configuration opens up.
func TestSandboxPolicy(t *testing.T) {
	dir := t.TempDir()
	conf := filepath.Join(dir, "etc", "sealproxy.toml")
	data := `
[sandbox]
read = ["extra"]
write = ["/var/lib/vendor"]

[admin]
listen = "unix:/run/sealproxy/admin.sock"

[[key]]
name = "web"
cert = "certs/web.crt"
source = "sealed:/srv/sealed/web.jwe"
ocsp_staple = "/srv/ocsp/web.der"

[[key]]
name = "hsm"
cert = "hsm.crt"
source = "pkcs11:token=t;object=k?module-path=/opt/hsm/lib/libvendor.so&pin-source=file:/run/pins/hsm"

[[listener]]
name = "web"
listen = "unix:sockets/web.sock"
mode = "bridge"
keys = ["web"]
backend = "unix:/run/app/app.sock"
[listener.tls]
client_auth = "require"
client_ca = "/srv/clients/ca.pem"
crl = ["/srv/crl/a.crl", "/srv/crl2/b.crl"]
[listener.upstream]
ca = "/srv/upstream/ca.pem"
server_name = "app"
`
	// hsm.crt links into another directory, as certbot's live/ does.
	archive := filepath.Join(dir, "archive")
	for _, d := range []string{filepath.Join(dir, "etc"), archive} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(archive, "hsm1.crt"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("../archive/hsm1.crt", filepath.Join(dir, "etc", "hsm.crt")); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Parse(conf, []byte(data))
	if err != nil {
		t.Fatal(err)
	}
	p := sandboxPolicy(cfg)
	etc := filepath.Join(dir, "etc")
	for _, want := range []string{etc, filepath.Join(etc, "certs"), archive, "/srv/sealed", "/srv/ocsp", "/opt/hsm/lib", "/usr/lib",
		"/run/pins", "/srv/clients", "/srv/crl", "/srv/crl2", "/srv/upstream", filepath.Join(etc, "extra"), "/etc/ssl/certs", "/etc/resolv.conf"} {
		if !slices.Contains(p.Read, want) {
			t.Errorf("read lacks %s: %q", want, p.Read)
		}
	}
	if !slices.Equal(p.Write, []string{"/var/lib/vendor"}) {
		t.Errorf("write = %q", p.Write)
	}
	if want := []string{"/run/sealproxy", filepath.Join(etc, "sockets")}; !slices.Equal(p.Sockets, want) {
		t.Errorf("sockets = %q, want %q", p.Sockets, want)
	}
	for _, not := range []string{"/run/app/app.sock", filepath.Join(dir, "x"), "/etc/shadow", "/srv/x", "/x", "/etc/ssl/private/web.key", "/etc/pki/tls/private/web.key"} {
		if p.Readable(not) {
			t.Errorf("%s is readable", not)
		}
	}
}

// TestUnitsAllowLandlock checks that the shipped units let the process
// make its Landlock system calls: systemd before 254 leaves them out of
// @system-service, and SystemCallErrorNumber=EPERM would make the
// sandbox look unavailable.
func TestUnitsAllowLandlock(t *testing.T) {
	for _, u := range []string{"sealproxy.service", "sealgate.service"} {
		data, err := os.ReadFile(filepath.Join(unitDir, u))
		if err != nil {
			t.Fatal(err)
		}
		for _, want := range []string{"\nSystemCallFilter=landlock_create_ruleset landlock_add_rule landlock_restrict_self\n", "\nProtectProc=invisible\n"} {
			if !strings.Contains(string(data), want) {
				t.Errorf("%s lacks %q", u, strings.TrimSpace(want))
			}
		}
	}
}

// TestSandboxPolicyCRLCache: CRLs fetched from URLs are kept in
// [revocation] cache_dir, which the sandbox lets the daemon write; the
// URL itself is no path.
func TestSandboxPolicyCRLCache(t *testing.T) {
	conf := filepath.Join(t.TempDir(), "sealproxy.toml")
	cfg, err := config.Parse(conf, []byte(`
allow_plaintext_keys = true
[revocation]
cache_dir = "/var/cache/sealproxy/crl"
[[key]]
name = "web"
cert = "web.crt"
source = "file:web.key"
[[listener]]
name = "web"
listen = "127.0.0.1:0"
mode = "offload"
keys = ["web"]
backend = "127.0.0.1:1"
[listener.tls]
client_auth = "require"
client_ca = "/srv/clients/ca.pem"
crl = ["http://crl.example.com/ca.crl"]
`))
	if err != nil {
		t.Fatal(err)
	}
	p := sandboxPolicy(cfg)
	if !slices.Contains(p.Write, "/var/cache/sealproxy/crl") {
		t.Errorf("write lacks the CRL cache: %q", p.Write)
	}
	for _, r := range p.Read {
		if strings.Contains(r, "crl.example.com") {
			t.Errorf("the CRL URL became a path: %q", r)
		}
	}
}

func init() { confinedChildEnvs = append(confinedChildEnvs, sandboxChildEnv) }
