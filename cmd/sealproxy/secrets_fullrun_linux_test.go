//go:build linux

package main

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sealproxy/sealproxy/testenv"
	"github.com/sealproxy/sealproxy/unlock/gate"
	"github.com/sealproxy/sealproxy/unlock/tang"
)

// TestSecretsFullRun runs the real binaries (seal, sealgate, sealproxy,
// built as `make build` builds them) through a whole life: a gate that requires
// approval, a TLS key sealed to it, a start-up whose approval is denied,
// one approved with `seal approve` (after a wrong token), TLS traffic, a
// reload, both metrics endpoints, the operator API, and failures (corrupt
// JWE, wrong thumbprint, unreachable Tang, bad configuration, a PKCS#11
// key with a wrong PIN), then a stop. Everything the programs print,
// answer or write is collected and searched for every secret in play: the
// TLS private key, the Tang private scalars, the PKCS#11 PINs, the
// operator token and the JWE's content-encryption key, each in the
// encodings it could leak in. A failure names the secret and the
// artifact, never the secret itself.
func TestSecretsFullRun(t *testing.T) {
	testenv.SkipIfShort(t, "builds and runs seal, sealgate and sealproxy")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	r := &fullRun{t: t, ctx: ctx, bins: map[string]string{}, inputs: t.TempDir()}
	r.build()
	gateDir := filepath.Join(t.TempDir(), "gate")
	proxyDir := t.TempDir()
	audit := filepath.Join(t.TempDir(), "audit.jsonl")

	// The gate: keys, an operator, serving with approval required.
	thp := strings.TrimSpace(r.mustRun("sealgate keygen", nil, "sealgate", "keygen", "--dir", gateDir))
	token, _, err := r.run("", nil, "sealgate", "operator", "add", "alice", "--dir", gateDir) // prints the token: not an artifact
	token = strings.TrimSpace(token)
	if err != nil || len(token) < 20 {
		t.Fatalf("operator add: %v", err)
	}
	tokenFile := r.input("token", token+"\n")
	wrongToken := strings.Repeat("x", len(token)-4) + "nope"
	wrongTokenFile := r.input("wrong-token", wrongToken+"\n")
	gateAddr := testenv.FreeAddr(t)
	gateURL := "http://" + gateAddr
	gateProc := r.start("sealgate serve", "sealgate", "serve", "--dir", gateDir, "--listen", gateAddr,
		"--approval", "required", "--audit", audit, "--hold", "2s")
	r.waitFor("the gate to serve", func() bool {
		_, err := (&tang.Client{}).Advertisement(ctx, gateURL, thp)
		return err == nil
	})

	// A fresh TLS key, sealed with `seal encrypt tang` from stdin.
	ca := testenv.NewCA(t, "full run CA")
	leaf := ca.Server(t, "localhost")
	keyPEM := leaf.KeyPEM(t)
	if err := os.WriteFile(filepath.Join(proxyDir, "web.crt"), leaf.ChainPEM(), 0o644); err != nil {
		t.Fatal(err)
	}
	jwe := r.mustRun("seal encrypt tang", keyPEM, "seal", "encrypt", "tang", `{"url":"`+gateURL+`","thp":"`+thp+`"}`)
	if err := os.WriteFile(filepath.Join(proxyDir, "web.key.jwe"), []byte(jwe), 0o600); err != nil {
		t.Fatal(err)
	}

	echo := testenv.StartEcho(t, nil).Addr
	listen, adminAddr := testenv.FreeAddr(t), testenv.FreeAddr(t)
	cfg := filepath.Join(proxyDir, "sealproxy.toml")
	if err := os.WriteFile(cfg, fmt.Appendf(nil, `shutdown_timeout = "5s"

[[key]]
name = "web"
cert = "web.crt"
source = "sealed:web.key.jwe"

[[listener]]
name = "web"
listen = %q
mode = "offload"
keys = ["web"]
backend = %q

[admin]
listen = %q
reload = true

[unlock]
timeout = "30s"
`, listen, echo, adminAddr), 0o644); err != nil {
		t.Fatal(err)
	}
	r.mustRun("sealproxy check", nil, "sealproxy", "check", "--config", cfg)

	// 1. A start-up the operator denies.
	denied := r.start("sealproxy run (denied)", "sealproxy", "run", "--config", cfg)
	code := r.code(denied)
	r.run("seal deny", nil, "seal", "deny", code, "--gate", gateURL, "--token-file", tokenFile)
	if err := denied.wait(30 * time.Second); err == nil {
		t.Error("sealproxy started although its approval was denied")
	}

	// 2. A start-up approved after a wrong token.
	proxy := r.start("sealproxy run", "sealproxy", "run", "--config", cfg)
	code = r.code(proxy)
	if _, _, err := r.run("seal approve (wrong token)", nil, "seal", "approve", code, "--gate", gateURL, "--token-file", wrongTokenFile); err == nil {
		t.Error("seal approve with a wrong token succeeded")
	}
	r.http("GET /gate/pending (wrong token)", http.MethodGet, gateURL+"/gate/pending", wrongToken, "")
	r.http("GET /gate/pending", http.MethodGet, gateURL+"/gate/pending", token, "")
	r.mustRun("seal pending", nil, "seal", "pending", "--gate", gateURL, "--token-file", tokenFile)
	r.mustRun("seal pending --json", nil, "seal", "pending", "--json", "--gate", gateURL, "--token-file", tokenFile)
	r.http("POST /gate/approve (wrong token)", http.MethodPost, gateURL+"/gate/approve", wrongToken, `{"code":"`+code+`"}`)
	r.mustRun("seal approve", nil, "seal", "approve", code, "--gate", gateURL, "--token-file", tokenFile)
	r.http("POST /gate/approve (again)", http.MethodPost, gateURL+"/gate/approve", token, `{"code":"`+code+`"}`)
	r.waitFor("sealproxy to be ready", func() bool {
		resp, err := http.Get("http://" + adminAddr + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})

	// Traffic, a reload, more traffic, the metrics.
	roundTripTLS(t, listen, ca.Pool(), "hello through the full run")
	r.http("POST /reload", http.MethodPost, "http://"+adminAddr+"/reload", "", "")
	roundTripTLS(t, listen, ca.Pool(), "hello after the reload")
	r.http("GET /metrics", http.MethodGet, "http://"+adminAddr+"/metrics", "", "")
	r.http("GET /healthz", http.MethodGet, "http://"+adminAddr+"/healthz", "", "")
	r.http("GET /readyz", http.MethodGet, "http://"+adminAddr+"/readyz", "", "")
	r.http("GET /gate/metrics", http.MethodGet, gateURL+"/gate/metrics", token, "")
	r.http("GET /gate/metrics (wrong token)", http.MethodGet, gateURL+"/gate/metrics", wrongToken, "")
	r.http("GET /adv", http.MethodGet, gateURL+"/adv", "", "")

	// Failures.
	parts := strings.Split(jwe, ".")
	if _, _, err := r.run("seal decrypt (corrupt JWE)", []byte(parts[0][:len(parts[0])/2]+"!"+parts[0][len(parts[0])/2+1:]+"."+strings.Join(parts[1:], ".")), "seal", "decrypt"); err == nil {
		t.Error("seal decrypt of a corrupt JWE succeeded")
	}
	// A tampered ciphertext fails only after the recovery: the CEK is in
	// the process when the failure is reported. The operator approves it.
	tampered := strings.Join([]string{parts[0], parts[1], parts[2], flipFirst(parts[3]), parts[4]}, ".")
	dec := r.start("seal decrypt (tampered ciphertext)", "seal", "decrypt", "-i", r.input("tampered.jwe", tampered))
	// The operator types the code seal decrypt shows (the gate lists none).
	var code2 string
	r.waitFor("seal decrypt to show its code", func() bool {
		if m := sealCodeRE.FindStringSubmatch(dec.stderr.String()); m != nil {
			code2 = m[1]
			return true
		}
		return false
	})
	op := &gate.Client{URL: gateURL, Token: token}
	if _, err := op.Approve(ctx, code2); err != nil {
		t.Fatal(err)
	}
	if err := dec.wait(30 * time.Second); err == nil {
		t.Error("seal decrypt of a tampered ciphertext succeeded")
	}
	wrongThp := strings.Repeat("A", len(thp))
	r.run("seal encrypt (wrong thumbprint)", keyPEM, "seal", "encrypt", "tang", `{"url":"`+gateURL+`","thp":"`+wrongThp+`"}`)
	dead := "http://" + testenv.FreeAddr(t)
	r.run("seal encrypt (unreachable Tang)", keyPEM, "seal", "encrypt", "tang", `{"url":"`+dead+`","thp":"`+thp+`"}`)
	r.run("seal inspect", []byte(jwe), "seal", "inspect")
	badCfg := filepath.Join(proxyDir, "bad.toml")
	if err := os.WriteFile(badCfg, []byte("[[key]]\nname = \"web\"\nsorce = \"sealed:web.key.jwe\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	r.run("sealproxy check (bad config line)", nil, "sealproxy", "check", "--config", badCfg)
	r.run("sealproxy run (bad config line)", nil, "sealproxy", "run", "--config", badCfg)

	var pins []needle
	t.Run("pkcs11-wrong-pin", func(t *testing.T) {
		parent := r.t
		r.t = t
		defer func() { r.t = parent }()
		h := testenv.NewSoftHSM(t) // skips (fails under SEALPROXY_REQUIRE_INTEROP=1) without softhsm2
		wrongPIN := "wrong-" + strings.TrimPrefix(h.PIN, "pin-")
		pins = append(pins, needle{"PKCS#11 PIN", []byte(h.PIN)}, needle{"PKCS#11 SO PIN", []byte("so-" + h.PIN)},
			needle{"PKCS#11 wrong PIN", []byte(wrongPIN)})
		certFile := filepath.Join(r.inputs, "hsm.crt")
		if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: h.Certs["ec256"].Raw}), 0o644); err != nil {
			t.Fatal(err)
		}
		wrongPINFile := r.input("wrong-pin", wrongPIN+"\n")
		for i, pin := range []string{"pin-value=" + wrongPIN, "pin-source=file:" + wrongPINFile} {
			uri := fmt.Sprintf("pkcs11:token=%s;object=ec256;type=private?module-path=%s&%s", h.Token, h.Module, pin)
			// The configuration names the wrong PIN by design: an input.
			hsmCfg := r.input(fmt.Sprintf("hsm%d.toml", i), fmt.Sprintf("[[key]]\nname = \"hsm\"\ncert = %q\nsource = %q\n\n[[listener]]\nname = \"hsm\"\nlisten = %q\nmode = \"offload\"\nkeys = [\"hsm\"]\nbackend = %q\n",
				certFile, uri, testenv.FreeAddr(t), echo))
			name := fmt.Sprintf("sealproxy run (PKCS#11, wrong PIN, %s)", strings.SplitN(pin, "=", 2)[0])
			_, stderr, err := r.run(name, nil, "sealproxy", "run", "--config", hsmCfg)
			if err == nil {
				t.Errorf("%s succeeded", name)
			}
			if !strings.Contains(stderr, "hint: check the PIN of the pkcs11: key") {
				t.Errorf("%s: the hint does not point at the PIN:\n%s", name, stderr)
			}
			r.run(fmt.Sprintf("sealproxy check (PKCS#11 %d)", i), nil, "sealproxy", "check", "--config", hsmCfg)
		}
	})

	// Stop.
	proxy.cmd.Process.Signal(syscall.SIGTERM)
	if err := proxy.wait(30 * time.Second); err != nil {
		t.Errorf("sealproxy did not stop cleanly: %v", err)
	}
	gateProc.cmd.Process.Signal(syscall.SIGTERM)
	if err := gateProc.wait(30 * time.Second); err != nil {
		t.Errorf("sealgate did not stop cleanly: %v", err)
	}
	// The gate is gone: recoveries find Tang unreachable.
	r.run("seal decrypt (Tang stopped)", []byte(jwe), "seal", "decrypt")
	downCfg := filepath.Join(proxyDir, "tang-down.toml")
	cfgData, err := os.ReadFile(cfg)
	if err != nil {
		t.Fatal(err)
	}
	cfgData = bytes.Replace(cfgData, []byte(`timeout = "30s"`), []byte(`timeout = "2s"`), 1)
	cfgData = bytes.Replace(cfgData, []byte(listen), []byte(testenv.FreeAddr(t)), 1)
	cfgData = bytes.Replace(cfgData, []byte(adminAddr), []byte(testenv.FreeAddr(t)), 1)
	if err := os.WriteFile(downCfg, cfgData, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, _, err := r.run("sealproxy run (Tang stopped)", nil, "sealproxy", "run", "--config", downCfg); err == nil {
		t.Error("sealproxy started with its Tang server stopped")
	}

	for _, p := range r.procs {
		r.add(p.name+" stdout", []byte(p.stdout.String()))
		r.add(p.name+" stderr", []byte(p.stderr.String()))
	}
	// Every file the programs wrote, but the gate's keys (its secrets by
	// design) and the sealed JWE.
	r.addFiles(gateDir, func(path string) bool { return strings.HasSuffix(path, ".jwk") })
	r.addFiles(proxyDir, func(path string) bool { return strings.HasSuffix(path, ".jwe") })
	r.addFiles(filepath.Dir(audit), nil)

	// SEALPROXY_TEST_CANARY=1 plants secrets in an artifact, to see the
	// test fail (it must).
	if os.Getenv("SEALPROXY_TEST_CANARY") == "1" {
		r.add("canary", []byte(token+string(keyPEM)))
	}
	// The secrets.
	var ns []needle
	ns = append(ns, tlsKeyNeedles(t, keyPEM)...)
	ns = append(ns, tangNeedles(t, gateDir)...)
	ns = append(ns, needle{"operator token", []byte(token)})
	ns = append(ns, cekNeedles(t, gateDir, jwe, keyPEM)...)
	ns = append(ns, pins...)

	found := 0
	for _, a := range r.arts {
		for _, n := range ns {
			if bytes.Contains(a.data, n.b) {
				found++
				t.Errorf("%s found in %s", n.name, a.name)
			}
		}
	}
	t.Logf("searched %d artifacts (%d bytes) for %d secret encodings; %d found", len(r.arts), r.bytes(), len(ns), found)
	// SEALPROXY_TEST_ARTIFACTS=DIR keeps the artifacts for reading.
	if dump := os.Getenv("SEALPROXY_TEST_ARTIFACTS"); dump != "" {
		for i, a := range r.arts {
			name := fmt.Sprintf("%02d %s", i, strings.NewReplacer("/", "_", " ", "_").Replace(a.name))
			if err := os.WriteFile(filepath.Join(dump, name), a.data, 0o600); err != nil {
				t.Error(err)
			}
		}
	}
}

type artifact struct {
	name string
	data []byte
}

type needle struct {
	name string
	b    []byte
}

type fullRun struct {
	t      *testing.T
	ctx    context.Context
	bins   map[string]string // command name -> binary
	inputs string            // files the test writes that hold secrets by design
	arts   []artifact
	procs  []*fullProc
}

func (r *fullRun) add(name string, data []byte) { r.arts = append(r.arts, artifact{name, data}) }

func (r *fullRun) bytes() int {
	n := 0
	for _, a := range r.arts {
		n += len(a.data)
	}
	return n
}

func (r *fullRun) build() {
	r.t.Helper()
	for _, name := range []string{"seal", "sealgate", "sealproxy"} {
		// As `make build` and the package build them: without
		// runtime/secret sealproxy refuses sealed keys.
		r.bins[name] = testenv.BuildCommand(r.t, name, "GOFLAGS=", "GOEXPERIMENT=runtimesecret")
	}
}

func (r *fullRun) input(name, content string) string {
	r.t.Helper()
	path := filepath.Join(r.inputs, name)
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		r.t.Fatal(err)
	}
	return path
}

// run runs a binary to completion; its stdout, stderr and error are
// artifacts under name (none if name is empty).
func (r *fullRun) run(name string, stdin []byte, bin string, args ...string) (string, string, error) {
	r.t.Helper()
	cmd := exec.CommandContext(r.ctx, r.bins[bin], args...)
	cmd.Stdin = bytes.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	if name != "" {
		r.add(name+" stdout", out.Bytes())
		r.add(name+" stderr", errb.Bytes())
		if err != nil {
			r.add(name+" error", []byte(err.Error()))
		}
	}
	return out.String(), errb.String(), err
}

func (r *fullRun) mustRun(name string, stdin []byte, bin string, args ...string) string {
	r.t.Helper()
	out, errOut, err := r.run(name, stdin, bin, args...)
	if err != nil {
		r.t.Fatalf("%s: %v\n%s", name, err, errOut)
	}
	return out
}

// http makes a request (with a bearer token if given) and keeps the
// response's status line and body.
func (r *fullRun) http(name, method, url, token, body string) {
	r.t.Helper()
	req, err := http.NewRequestWithContext(r.ctx, method, url, strings.NewReader(body))
	if err != nil {
		r.t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		r.t.Fatalf("%s: %v", name, err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	var hdr bytes.Buffer
	resp.Header.Write(&hdr)
	r.add(name, append(append([]byte(resp.Status+"\n"), hdr.Bytes()...), data...))
}

func (r *fullRun) addFiles(dir string, skip func(string) bool) {
	r.t.Helper()
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || (skip != nil && skip(path)) {
			return err
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		r.add("file "+filepath.Base(path), data)
		return nil
	})
	if err != nil {
		r.t.Fatal(err)
	}
}

func (r *fullRun) waitFor(what string, cond func() bool) {
	r.t.Helper()
	if !testenv.Poll(r.ctx, cond) {
		r.t.Fatalf("waiting for %s: %v", what, r.ctx.Err())
	}
}

// fullProc is a program running in the background.
type fullProc struct {
	name           string
	cmd            *exec.Cmd
	stdout, stderr *testenv.SyncBuffer
	done           chan error
}

func (r *fullRun) start(name, bin string, args ...string) *fullProc {
	r.t.Helper()
	p := &fullProc{name: name, cmd: exec.Command(r.bins[bin], args...),
		stdout: &testenv.SyncBuffer{}, stderr: &testenv.SyncBuffer{}, done: make(chan error, 1)}
	p.cmd.Stdout, p.cmd.Stderr = p.stdout, p.stderr
	if err := p.cmd.Start(); err != nil {
		r.t.Fatal(err)
	}
	go func() { p.done <- p.cmd.Wait() }()
	r.procs = append(r.procs, p)
	r.t.Cleanup(func() {
		p.cmd.Process.Kill()
		<-p.done
		p.done <- nil
		if r.t.Failed() {
			r.t.Logf("%s stderr:\n%s", name, p.stderr.String())
		}
	})
	return p
}

func (p *fullProc) wait(d time.Duration) error {
	select {
	case err := <-p.done:
		p.done <- err
		return err
	case <-time.After(d):
		return fmt.Errorf("%s still running after %s", p.name, d)
	}
}

var sealCodeRE = regexp.MustCompile(`seal: waiting for approval of code ([A-Z0-9]{4}-[A-Z0-9]{4}) at `)

var approvalCodeRE = regexp.MustCompile(`msg="waiting for approval" key=web tang_url=\S+ code=([A-Z0-9]{4}-[A-Z0-9]{4})`)

// code waits for p to log the approval code it shows.
func (r *fullRun) code(p *fullProc) string {
	r.t.Helper()
	var code string
	r.waitFor(p.name+" to wait for approval", func() bool {
		if m := approvalCodeRE.FindStringSubmatch(p.stderr.String()); m != nil {
			code = m[1]
			return true
		}
		select {
		case err := <-p.done:
			p.done <- err
			r.t.Fatalf("%s exited: %v\n%s", p.name, err, p.stderr.String())
		default:
		}
		return false
	})
	return code
}

func roundTripTLS(t *testing.T, addr string, pool *x509.CertPool, msg string) {
	t.Helper()
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 10 * time.Second}, "tcp", addr, &tls.Config{RootCAs: pool, ServerName: "localhost"})
	if err != nil {
		t.Fatalf("TLS to sealproxy: %v", err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, msg); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(c, got); err != nil || string(got) != msg {
		t.Fatalf("echo through sealproxy: %q, %v", got, err)
	}
}

// flipFirst changes the first character of a base64url string.
func flipFirst(s string) string {
	if s[0] == 'A' {
		return "B" + s[1:]
	}
	return "A" + s[1:]
}

// encodings returns b as it could leak: raw, hex, base64 and base64url.
func encodings(name string, b []byte) []needle {
	return []needle{
		{name + " (raw)", b},
		{name + " (hex)", []byte(hex.EncodeToString(b))},
		{name + " (HEX)", []byte(strings.ToUpper(hex.EncodeToString(b)))},
		{name + " (base64)", []byte(base64.RawStdEncoding.EncodeToString(b))},
		{name + " (base64url)", []byte(base64.RawURLEncoding.EncodeToString(b))},
	}
}

func tlsKeyNeedles(t *testing.T, keyPEM []byte) []needle {
	t.Helper()
	block, _ := pem.Decode(keyPEM)
	if block == nil {
		t.Fatal("no PEM key")
	}
	key, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	ec, ok := key.(*ecdsa.PrivateKey)
	if !ok {
		t.Fatalf("TLS key is a %T, want ECDSA", key)
	}
	ns := []needle{{"TLS key PEM", keyPEM}, {"TLS key PKCS#8 DER", block.Bytes}}
	sec1, err := x509.MarshalECPrivateKey(ec)
	if err != nil {
		t.Fatal(err)
	}
	ns = append(ns, needle{"TLS key SEC 1 DER", sec1})
	for i, line := range strings.Split(string(keyPEM), "\n") {
		if len(line) >= 32 && !strings.HasPrefix(line, "-----") {
			ns = append(ns, needle{fmt.Sprintf("TLS key PEM line %d", i), []byte(line)})
		}
	}
	scalar, err := ec.Bytes()
	if err != nil {
		t.Fatal(err)
	}
	return append(ns, encodings("TLS key scalar", scalar)...)
}

// tangKeyFile is a key file of the gate's directory.
type tangKeyFile struct {
	tang.JWK
	raw []byte
}

func tangKeys(t *testing.T, dir string) []tangKeyFile {
	t.Helper()
	files, _ := filepath.Glob(filepath.Join(dir, "*.jwk")) // with the rotated .*.jwk
	var out []tangKeyFile
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var k tang.JWK
		if err := json.Unmarshal(data, &k); err != nil || k.D == "" {
			t.Fatalf("%s: no d (%v)", f, err)
		}
		raw, err := base64.RawURLEncoding.DecodeString(k.D)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, tangKeyFile{k, raw})
	}
	if len(out) == 0 {
		t.Fatalf("no key files in %s", dir)
	}
	return out
}

func tangNeedles(t *testing.T, dir string) []needle {
	var ns []needle
	for i, k := range tangKeys(t, dir) {
		ns = append(ns, encodings(fmt.Sprintf("Tang key %d (%s) d", i, k.Alg), k.raw)...)
	}
	return ns
}

// cekNeedles derives the JWE's content-encryption key the way the
// recovery does (Z = (s·epk).x, Concat KDF), checks it by decrypting the
// JWE, and returns it and Z in every encoding.
func cekNeedles(t *testing.T, dir, jwe string, keyPEM []byte) []needle {
	t.Helper()
	parts := strings.Split(jwe, ".")
	if len(parts) != 5 {
		t.Fatalf("JWE has %d parts", len(parts))
	}
	hdrJSON, err := base64.RawURLEncoding.DecodeString(parts[0])
	if err != nil {
		t.Fatal(err)
	}
	var hdr struct {
		Kid string   `json:"kid"`
		Epk tang.JWK `json:"epk"`
	}
	if err := json.Unmarshal(hdrJSON, &hdr); err != nil {
		t.Fatal(err)
	}
	epk, err := hdr.Epk.Point()
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range tangKeys(t, dir) {
		if !k.IsExchange() || !k.HasThumbprint(hdr.Kid) {
			continue
		}
		priv, err := ecdh.P521().NewPrivateKey(k.raw)
		if err != nil {
			t.Fatal(err)
		}
		pub, err := ecdh.P521().NewPublicKey(epk)
		if err != nil {
			t.Fatal(err)
		}
		z, err := priv.ECDH(pub)
		if err != nil {
			t.Fatal(err)
		}
		// Concat KDF (RFC 7518 4.6.2), one SHA-256 round for 256 bits.
		h := sha256.New()
		binary.Write(h, binary.BigEndian, uint32(1))
		h.Write(z)
		binary.Write(h, binary.BigEndian, uint32(len("A256GCM")))
		h.Write([]byte("A256GCM"))
		binary.Write(h, binary.BigEndian, uint32(0))
		binary.Write(h, binary.BigEndian, uint32(0))
		binary.Write(h, binary.BigEndian, uint32(256))
		cek := h.Sum(nil)
		block, _ := aes.NewCipher(cek)
		gcm, _ := cipher.NewGCM(block)
		iv, _ := base64.RawURLEncoding.DecodeString(parts[2])
		ct, _ := base64.RawURLEncoding.DecodeString(parts[3])
		tag, _ := base64.RawURLEncoding.DecodeString(parts[4])
		plain, err := gcm.Open(nil, iv, append(ct, tag...), []byte(parts[0]))
		if err != nil || !bytes.Equal(plain, keyPEM) {
			t.Fatalf("the derived CEK does not open the JWE to the key (%v)", err)
		}
		return append(encodings("JWE CEK", cek), encodings("JWE ECDH Z", z)...)
	}
	t.Fatalf("no exchange key with the JWE's kid %s", hdr.Kid)
	return nil
}
