package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/sealproxy/sealproxy/cmd/internal/cli"
	"github.com/sealproxy/sealproxy/internal/secmem"
	"github.com/sealproxy/sealproxy/testenv"
	"github.com/sealproxy/sealproxy/unlock"
)

// exampleConfig is the configuration of issue 4, as written there.
const exampleConfig = `[[key]]
name = "web"
cert = "web.crt"                  # PEM chain, leaf first
source = "sealed:web.key.jwe"     # or pkcs11:..., winstore:..., file:... (see the vault issue)

[[listener]]
name = "web"
listen = "127.0.0.1:8443"
mode = "offload"                  # offload | bridge | encrypt | connect
keys = ["web"]                    # SNI chooses among these; the first is the default
backend = "127.0.0.1:9000"

[admin]
listen = "127.0.0.1:9090"         # /metrics (Prometheus), /healthz, /readyz
`

func runCLI(t *testing.T, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	var out, errb bytes.Buffer
	err := run(context.Background(), args, strings.NewReader(""), &out, &errb)
	code = cli.Report("sealproxy", err, &errb)
	return out.String(), errb.String(), code
}

func TestCheckExampleConfig(t *testing.T) {
	dir := t.TempDir()
	ca := testenv.NewCA(t, "test CA")
	ca.Server(t, "web.test").WriteFiles(t, dir, "web")
	path := filepath.Join(dir, "sealproxy.toml")
	if err := os.WriteFile(path, []byte(exampleConfig), 0o644); err != nil {
		t.Fatal(err)
	}
	// Run from elsewhere: paths are relative to the file, not the cwd.
	stdout, stderr, code := runCLI(t, "check", "--config", path)
	if code != 0 || !strings.Contains(stdout, "configuration is valid: 1 listener(s), 1 key(s)") {
		t.Fatalf("check: code %d\nstdout: %s\nstderr: %s", code, stdout, stderr)
	}
}

// TestCheckWarnsWeakSuites: a CBC suite named in cipher_suites is
// accepted (old clients may need it) and check says what it gives up;
// the example configuration, on the defaults, gets no warning.
func TestCheckWarnsWeakSuites(t *testing.T) {
	dir := t.TempDir()
	testenv.NewCA(t, "test CA").Server(t, "web.test").WriteFiles(t, dir, "web")
	path := filepath.Join(dir, "sealproxy.toml")
	cfg := strings.Replace(exampleConfig, "\n[admin]", "\n[listener.tls]\ncipher_suites = [\"TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256\", \"TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA\"]\n\n[admin]", 1)
	for _, tt := range []struct {
		cfg, warning string
	}{
		{exampleConfig, ""},
		{cfg, "sealproxy: warning: " + path + ":14: listener[0].tls.cipher_suites: TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA is a CBC suite (MAC-then-encrypt: testssl.sh reports LUCKY13), outside Mozilla's intermediate profile (the default)"},
	} {
		if err := os.WriteFile(path, []byte(tt.cfg), 0o644); err != nil {
			t.Fatal(err)
		}
		stdout, stderr, code := runCLI(t, "check", "--config", path)
		if code != 0 || !strings.Contains(stdout, "configuration is valid") {
			t.Fatalf("check: code %d\nstdout: %s\nstderr: %s", code, stdout, stderr)
		}
		if tt.warning == "" && stderr != "" || !strings.Contains(stderr, tt.warning) {
			t.Errorf("stderr:\n%s\nwant %q", stderr, tt.warning)
		}
	}
}

func TestCheckErrors(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	for _, tt := range []struct {
		name   string
		args   []string
		code   int
		stderr string
	}{
		{"unknown key", []string{"check", "--config", write("a.toml", exampleConfig+"colour = \"blue\"\n")}, cli.ExitUsage,
			"sealproxy: error: " + filepath.Join(dir, "a.toml") + ":15: admin.colour: unknown setting\n"},
		{"type error", []string{"check", "--config", write("b.toml", strings.Replace(exampleConfig, `keys = ["web"]`, `keys = 1`, 1))}, cli.ExitUsage,
			filepath.Join(dir, "b.toml") + ":10: listener[0].keys: incompatible types"},
		{"missing cert", []string{"check", "--config", write("c.toml", exampleConfig)}, cli.ExitUsage,
			`sealproxy: error: listener "web": key "web": reading certificate chain`},
		{"no config", []string{"check"}, cli.ExitUsage, "sealproxy: hint: pass --config"},
		{"unknown command", []string{"serve"}, cli.ExitUsage, `sealproxy: error: unknown command "serve"`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, stderr, code := runCLI(t, tt.args...)
			if code != tt.code || !strings.Contains(stderr, tt.stderr) {
				t.Errorf("code %d, stderr:\n%s\nwant code %d and %q", code, stderr, tt.code, tt.stderr)
			}
		})
	}
}

func TestVersion(t *testing.T) {
	stdout, _, code := runCLI(t, "version")
	if code != 0 || !strings.HasPrefix(stdout, "sealproxy ") {
		t.Fatalf("version: %d %q", code, stdout)
	}
}

var listenRE = regexp.MustCompile(`msg=listening listener=web addr=(\S+)`)
var adminRE = regexp.MustCompile(`msg="admin listening" addr=(\S+)`)

// TestRunEndToEnd runs the daemon in-process with the issue's example
// configuration (addresses made free ports), once with a file: key and
// once with a sealed: key recovered from an embedded Tang server; sends
// traffic through it with a real TLS client, reads the admin endpoints and
// stops it by cancelling its context.
func TestRunEndToEnd(t *testing.T) {
	for _, source := range []string{"file", "sealed"} {
		t.Run(source, func(t *testing.T) { testRunEndToEnd(t, source) })
	}
}

func testRunEndToEnd(t *testing.T, source string) {
	dir := t.TempDir()
	ca := testenv.NewCA(t, "test CA")
	leaf := ca.Server(t, "web.test")
	leaf.WriteFiles(t, dir, "web")
	if source == "sealed" {
		tangSrv := testenv.EmbeddedTang(t)
		jwe, err := unlock.Encrypt(context.Background(), "tang", []byte(tangSrv.Config()), leaf.KeyPEM(t), nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "web.key.jwe"), jwe, 0o600); err != nil {
			t.Fatal(err)
		}
		os.Remove(filepath.Join(dir, "web.key")) // nothing in the clear
	}
	backend := testenv.StartEcho(t, nil)

	replace := []string{
		"127.0.0.1:8443", "127.0.0.1:0",
		"127.0.0.1:9000", backend.Addr,
		"127.0.0.1:9090", "127.0.0.1:0",
	}
	if source == "file" {
		replace = append(replace, `source = "sealed:web.key.jwe"`, `source = "file:web.key"`)
	}
	cfg := strings.NewReplacer(replace...).Replace(exampleConfig)
	if source == "file" {
		cfg = "allow_plaintext_keys = true\n" + cfg
	} else if !secmem.Erasing() {
		cfg = "allow_unprotected_memory = true\n" + cfg // TestRunRefusesUnprotectedMemory
	}
	path := filepath.Join(dir, "sealproxy.toml")
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var stdout, stderr testenv.SyncBuffer
	done := make(chan error, 1)
	go func() { done <- run(ctx, []string{"run", "--config", path}, strings.NewReader(""), &stdout, &stderr) }()

	var addr, admin string
	deadline := time.Now().Add(10 * time.Second)
	for addr == "" || admin == "" {
		select {
		case err := <-done:
			t.Fatalf("run returned early: %v\n%s", err, stderr.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("no listening line:\n%s", stderr.String())
		}
		if m := listenRE.FindStringSubmatch(stderr.String()); m != nil {
			addr = m[1]
		}
		if m := adminRE.FindStringSubmatch(stderr.String()); m != nil {
			admin = m[1]
		}
		time.Sleep(5 * time.Millisecond)
	}

	c, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: ca.Pool(), ServerName: "web.test"})
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(c, "end to end")
	c.CloseWrite()
	got, err := io.ReadAll(c)
	c.Close()
	if err != nil || string(got) != "end to end" {
		t.Fatalf("echo %q, %v", got, err)
	}

	for path, want := range map[string]string{
		"/readyz":   "ready",
		"/healthz":  "ok",
		"/metrics":  `sealproxy_connections_accepted_total{listener="web"} 1`,
		"/metrics#": `sealproxy_key_sign_duration_seconds_count{key="web"} 1`,
		// issue 14: the served certificate's NotAfter, as a Unix time
		"/metrics##": `sealproxy_certificate_expiry_timestamp_seconds{key="web"} `,
	} {
		path, _, _ = strings.Cut(path, "#")
		resp, err := http.Get("http://" + admin + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !strings.Contains(string(body), want) {
			t.Errorf("GET %s = %d, body lacks %q:\n%.2000s", path, resp.StatusCode, want, body)
		}
	}

	cancel()
	if err := <-done; err != nil {
		t.Fatalf("run: %v", err)
	}
	logs := stderr.String()
	wantLogs := []string{
		`msg="connection closed" listener=web`,
		"sni=web.test",
		"bytes_in=10 bytes_out=10",
		"reason=",
		"msg=stopped",
	}
	if source == "file" {
		wantLogs = append(wantLogs, "using a plaintext key file")
	}
	for _, want := range wantLogs {
		if !strings.Contains(logs, want) {
			t.Errorf("logs lack %q:\n%s", want, logs)
		}
	}
	if strings.Contains(logs, "PRIVATE KEY") {
		t.Error("logs show key material")
	}
}

func TestRunRefusesPlaintextKeyWithoutOptIn(t *testing.T) {
	dir := t.TempDir()
	ca := testenv.NewCA(t, "test CA")
	ca.Server(t, "web.test").WriteFiles(t, dir, "web")
	cfg := strings.Replace(exampleConfig, `source = "sealed:web.key.jwe"`, `source = "file:web.key"`, 1)
	path := filepath.Join(dir, "sealproxy.toml")
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	_, stderr, code := runCLI(t, "run", "--config", path)
	if code != cli.ExitUsage || !strings.Contains(stderr, "allow_plaintext_keys") {
		t.Fatalf("code %d, stderr:\n%s", code, stderr)
	}
}

func TestRunAddressInUse(t *testing.T) {
	dir := t.TempDir()
	ca := testenv.NewCA(t, "test CA")
	ca.Server(t, "web.test").WriteFiles(t, dir, "web")
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	cfg := "allow_plaintext_keys = true\n" + strings.NewReplacer(
		`source = "sealed:web.key.jwe"`, `source = "file:web.key"`,
		"127.0.0.1:8443", busy.Addr().String(),
		"127.0.0.1:9090", "127.0.0.1:0",
	).Replace(exampleConfig)
	path := filepath.Join(dir, "sealproxy.toml")
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	_, stderr, code := runCLI(t, "run", "--config", path)
	if code != cli.ExitFailure || !strings.Contains(stderr, `sealproxy: error: listener "web": listen tcp`) ||
		!strings.Contains(stderr, "sealproxy: hint: another process may hold that address") {
		t.Fatalf("code %d, stderr:\n%s", code, stderr)
	}
}

// TestCheckWarnsExpiryAndStaleCRL: `sealproxy check` warns about a
// certificate that expires within 30 days and a CRL past its NextUpdate,
// and still says the configuration is valid (exit 0).
func TestCheckWarnsExpiryAndStaleCRL(t *testing.T) {
	dir := t.TempDir()
	ca := testenv.NewCA(t, "test CA")
	ca.Issue(t, testenv.LeafOptions{CN: "web.test", DNS: []string{"web.test"}, NotAfter: time.Now().Add(10 * 24 * time.Hour)}).WriteFiles(t, dir, "web")
	ca.WriteCA(t, dir, "clients.pem")
	tmpl := &x509.RevocationList{Number: big.NewInt(1), ThisUpdate: time.Now().Add(-48 * time.Hour), NextUpdate: time.Now().Add(-time.Hour)}
	der, err := x509.CreateRevocationList(rand.Reader, tmpl, ca.Cert, ca.Key)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "clients.crl"), der, 0o644); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "sealproxy.toml")
	cfg := strings.Replace(exampleConfig, "\n[admin]", "\n[listener.tls]\nclient_auth = \"require\"\nclient_ca = \"clients.pem\"\ncrl = [\"clients.crl\"]\n\n[admin]", 1)
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	stdout, stderr, code := runCLI(t, "check", "--config", path)
	if code != 0 || !strings.Contains(stdout, "configuration is valid") {
		t.Fatalf("check: code %d\nstdout: %s\nstderr: %s", code, stdout, stderr)
	}
	for _, want := range []string{
		"sealproxy: warning: " + path + `:3: key[0].cert: the certificate of key "web" expires in 9 days`,
		"sealproxy: warning: " + path + `: CRL ` + filepath.Join(dir, "clients.crl") + ` of CA "test CA" is past its NextUpdate`,
	} {
		if !strings.Contains(stderr, want) {
			t.Errorf("stderr:\n%s\nwant %q", stderr, want)
		}
	}
}
