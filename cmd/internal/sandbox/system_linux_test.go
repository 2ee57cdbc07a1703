//go:build linux

package sandbox

import (
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// trustChildEnv marks the re-executed test binary of
// TestTrustStoreConfines; its value is the stand-in tree.
const trustChildEnv = "SANDBOX_TRUST_CHILD"

// TestTrustStoreConfines: under the system policy the trust store still
// loads (as many roots as unconfined) while the rest of /etc/ssl, its
// private/ directory and openssl.cnf among it, is refused. The same on a
// stand-in tree the test controls: a cert directory with a link into a
// source directory and a link to a file elsewhere, beside a private/
// directory holding a key.
func TestTrustStoreConfines(t *testing.T) {
	if dir := os.Getenv(trustChildEnv); dir != "" {
		trustChild(t, dir)
		return
	}
	if ABI() == 0 {
		if os.Getenv("SEALPROXY_REQUIRE_LANDLOCK") == "1" {
			t.Fatal("SEALPROXY_REQUIRE_LANDLOCK=1 but this kernel has no Landlock")
		}
		t.Skip("this kernel has no Landlock: nothing to enforce")
	}
	dir := t.TempDir()
	for path, content := range map[string]string{
		"ssl/certs/bundle.crt":    "bundle",
		"ssl/private/server.key":  "PRIVATE KEY",
		"ssl/openssl.cnf":         "config",
		"share/mozilla/root.crt":  "root",
		"elsewhere/extra.crt":     "extra",
		"elsewhere/neighbour.key": "PRIVATE KEY",
	} {
		path = filepath.Join(dir, path)
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for link, target := range map[string]string{
		"ssl/certs/root.pem":  "../../share/mozilla/root.crt",
		"ssl/certs/1a2b.0":    "root.pem",
		"ssl/certs/extra.pem": filepath.Join(dir, "elsewhere/extra.crt"),
		"ssl/cert.pem":        "certs/bundle.crt",
		"ssl/certs/keys":      filepath.Join(dir, "ssl/private"), // a directory: Go reads no file through it
	} {
		if err := os.Symlink(target, filepath.Join(dir, link)); err != nil {
			t.Fatal(err)
		}
	}
	roots := 0
	if pool, err := x509.SystemCertPool(); err == nil {
		//lint:ignore SA1019 on Linux the system pool is a plain pool: Subjects counts its roots
		roots = len(pool.Subjects())
	}
	if _, err := os.Stat(certFiles[0]); err == nil && roots == 0 {
		t.Fatalf("%s exists but no system root loads", certFiles[0])
	}
	t.Logf("%d system roots", roots)
	cmd := exec.Command(os.Args[0], "-test.run=^TestTrustStoreConfines$", "-test.v")
	cmd.Env = append(os.Environ(), trustChildEnv+"="+dir, "SANDBOX_TRUST_ROOTS="+strconv.Itoa(roots))
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("confined child: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "trust child: all checks passed") {
		t.Fatalf("confined child did not run its checks:\n%s", out)
	}
}

func trustChild(t *testing.T, dir string) {
	in := func(p string) string { return filepath.Join(dir, p) }
	p := System()
	p.Read = append(p.Read, TrustStore(
		[]string{in("ssl/certs/missing.crt"), in("ssl/cert.pem")},
		[]string{in("ssl/certs")},
		[]string{in("share")})...)
	if _, err := Apply(p, Required); err != nil {
		t.Fatal(err)
	}
	allowed := func(path string) {
		t.Helper()
		if _, err := os.ReadFile(path); err != nil {
			t.Errorf("read %s: %v, want allowed", path, err)
		}
	}
	denied := func(what string, err error) {
		t.Helper()
		if !errors.Is(err, fs.ErrPermission) {
			t.Errorf("%s: %v, want a permission error", what, err)
		}
	}
	// The stand-in tree.
	for _, f := range []string{"ssl/certs/bundle.crt", "ssl/cert.pem", "ssl/certs/root.pem", "ssl/certs/1a2b.0", "ssl/certs/extra.pem"} {
		allowed(in(f))
	}
	if _, err := os.ReadDir(in("ssl/certs")); err != nil {
		t.Errorf("list the cert directory: %v", err)
	}
	_, err := os.ReadFile(in("ssl/private/server.key"))
	denied("read ssl/private/server.key", err)
	_, err = os.ReadDir(in("ssl/private"))
	denied("list ssl/private", err)
	_, err = os.ReadFile(in("ssl/openssl.cnf"))
	denied("read ssl/openssl.cnf", err)
	_, err = os.ReadFile(in("elsewhere/neighbour.key"))
	denied("read beside a linked file", err)

	// The real one: roots load, the rest of /etc/ssl does not.
	want, _ := strconv.Atoi(os.Getenv("SANDBOX_TRUST_ROOTS"))
	pool, err := x509.SystemCertPool()
	if err != nil {
		t.Fatalf("loading system roots under the sandbox: %v", err)
	}
	//lint:ignore SA1019 on Linux the system pool is a plain pool: Subjects counts its roots
	if got := len(pool.Subjects()); got != want {
		t.Errorf("%d system roots under the sandbox, %d without", got, want)
	}
	for _, path := range []string{"/etc/ssl/private", "/etc/pki/tls/private"} {
		if _, err := os.Stat(path); err == nil {
			_, err = os.ReadDir(path)
			denied("list "+path, err)
		}
	}
	if _, err := os.Stat("/etc/ssl/openssl.cnf"); err == nil {
		_, err = os.ReadFile("/etc/ssl/openssl.cnf")
		denied("read /etc/ssl/openssl.cnf", err)
	}
	if !t.Failed() {
		fmt.Println("trust child: all checks passed")
	}
}
