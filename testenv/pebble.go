package testenv

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"sync"
	"testing"
	"time"
)

// PebbleVersion is the pinned version of Pebble, the ACME test server,
// that the tests build from the Go module proxy.
const PebbleVersion = "v2.10.3"

const pebbleModule = "github.com/letsencrypt/pebble/v2"

// Pebble is an ACME CA (Pebble, with pebble-challtestsrv as its DNS
// server answering 127.0.0.1 for every name) on 127.0.0.1, for one test.
// Its validation authority really checks the challenges: http-01 on
// HTTPPort and tls-alpn-01 on TLSPort of 127.0.0.1.
type Pebble struct {
	Directory string // https://127.0.0.1:PORT/dir
	CA        string // PEM file the directory's TLS certificate chains to
	Mgmt      string // https://127.0.0.1:PORT, the management API

	t       testing.TB
	mu      sync.Mutex
	start   func() (func(), error)
	stop    func()
	addr    string
	mgmtTLS *tls.Config
}

// PebbleOptions configure StartPebble.
type PebbleOptions struct {
	HTTPPort, TLSPort int // where the CA validates http-01 and tls-alpn-01
	// Validity of issued certificates (default 90 days).
	Validity time.Duration
	// EAB, when set, makes external account binding required, with these
	// MAC keys (base64url) by key id.
	EAB map[string]string
}

var pebbleBuild struct {
	once           sync.Once
	bin, src, fail string
}

// pebbleRequired reports whether a missing Pebble fails the test: in CI.
func pebbleRequired() bool { return RequireInterop() || os.Getenv("CI") == "true" }

// buildPebble installs pebble and pebble-challtestsrv at PebbleVersion
// into the user's cache (once per test binary; the go command's own cache
// makes a rebuild quick) and returns their directory and the module's
// source directory (for its test certificates).
func buildPebble(t testing.TB) (bin, src string) {
	t.Helper()
	SkipIfShort(t, "builds and runs Pebble")
	if runtime.GOOS != "linux" {
		t.Skip("the ACME tests run Pebble on Linux")
	}
	goTool := LookTool(t, "go", "golang-go")
	b := &pebbleBuild
	b.once.Do(func() {
		cache, err := os.UserCacheDir()
		if err != nil {
			cache = os.TempDir()
		}
		dir := filepath.Join(cache, "sealproxy-testenv", "pebble-"+PebbleVersion)
		if err := os.MkdirAll(dir, 0o700); err != nil {
			b.fail = err.Error()
			return
		}
		tmp, err := os.MkdirTemp(dir, "install-")
		if err != nil {
			b.fail = err.Error()
			return
		}
		defer os.RemoveAll(tmp)
		// Outside our module: Pebble's dependencies never enter go.mod.
		cmd := exec.Command(goTool, "install",
			pebbleModule+"/cmd/pebble@"+PebbleVersion, pebbleModule+"/cmd/pebble-challtestsrv@"+PebbleVersion)
		cmd.Dir = tmp
		cmd.Env = append(os.Environ(), "GOBIN="+tmp, "GOFLAGS=", "GOEXPERIMENT=", "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			b.fail = fmt.Sprintf("go install pebble@%s: %v\n%s", PebbleVersion, err, out)
			return
		}
		for _, name := range []string{"pebble", "pebble-challtestsrv"} {
			if err := os.Rename(filepath.Join(tmp, name), filepath.Join(dir, name)); err != nil {
				b.fail = err.Error()
				return
			}
		}
		cmd = exec.Command(goTool, "mod", "download", "-json", pebbleModule+"@"+PebbleVersion)
		cmd.Dir = tmp
		cmd.Env = append(os.Environ(), "GOFLAGS=")
		out, err := cmd.Output()
		var mod struct{ Dir string }
		if err == nil {
			err = json.Unmarshal(out, &mod)
		}
		if err != nil {
			b.fail = fmt.Sprintf("go mod download %s@%s: %v", pebbleModule, PebbleVersion, err)
			return
		}
		b.bin, b.src = dir, mod.Dir
	})
	if b.fail != "" {
		msg := "Pebble could not be built (go install " + pebbleModule + "/cmd/pebble@" + PebbleVersion + "): " + b.fail
		if pebbleRequired() {
			t.Fatal(msg)
		}
		t.Skip("skipping: " + msg)
	}
	return b.bin, b.src
}

// StartPebble builds (once) and starts Pebble and its DNS server on
// 127.0.0.1 free ports; both stop at the end of the test. Outside CI a
// failed build skips the test; under CI=true (or
// SEALPROXY_REQUIRE_INTEROP=1) it fails.
func StartPebble(t testing.TB, o PebbleOptions) *Pebble {
	t.Helper()
	bin, src := buildPebble(t)
	if o.Validity == 0 {
		o.Validity = 90 * 24 * time.Hour
	}
	dir := t.TempDir()
	dns := FreeAddr(t)
	addr := FreeAddr(t)
	mgmt := FreeAddr(t)
	cfg := map[string]any{"pebble": map[string]any{
		"listenAddress":                  addr,
		"managementListenAddress":        mgmt,
		"certificate":                    filepath.Join(src, "test/certs/localhost/cert.pem"),
		"privateKey":                     filepath.Join(src, "test/certs/localhost/key.pem"),
		"httpPort":                       o.HTTPPort,
		"tlsPort":                        o.TLSPort,
		"ocspResponderURL":               "",
		"externalAccountBindingRequired": len(o.EAB) > 0,
		"externalAccountMACKeys":         o.EAB,
		"retryAfter":                     map[string]int{"authz": 1, "order": 1},
		"keyAlgorithm":                   "ecdsa",
		"profiles": map[string]any{"default": map[string]any{
			"description": "test", "validityPeriod": int(o.Validity / time.Second),
		}},
	}}
	data, _ := json.Marshal(cfg)
	cfgPath := filepath.Join(dir, "pebble.json")
	if err := os.WriteFile(cfgPath, data, 0o600); err != nil {
		t.Fatal(err)
	}
	// DNS: every name is 127.0.0.1 (no AAAA, so the CA dials IPv4).
	startProc(t, "pebble-challtestsrv", filepath.Join(bin, "pebble-challtestsrv"), nil,
		"-dnsserver", dns, "-management", FreeAddr(t), "-http01", "", "-https01", "", "-tlsalpn01", "", "-doh", "",
		"-defaultIPv4", "127.0.0.1", "-defaultIPv6", "")
	p := &Pebble{Directory: "https://" + addr + "/dir", CA: filepath.Join(src, "test/certs/pebble.minica.pem"),
		Mgmt: "https://" + mgmt, t: t, addr: addr}
	pool := x509.NewCertPool()
	caPEM, err := os.ReadFile(p.CA)
	if err != nil || !pool.AppendCertsFromPEM(caPEM) {
		t.Fatalf("reading Pebble's test CA %s: %v", p.CA, err)
	}
	p.mgmtTLS = &tls.Config{RootCAs: pool}
	env := []string{"PEBBLE_VA_NOSLEEP=1", "PEBBLE_WFE_NONCEREJECT=0", "PEBBLE_AUTHZREUSE=0"}
	p.start = func() (func(), error) {
		return startProc(t, "pebble", filepath.Join(bin, "pebble"), env, "-config", cfgPath, "-dnsserver", dns), nil
	}
	p.Start()
	t.Cleanup(p.Stop)
	return p
}

// Stop stops the CA (the ACME server answers nothing: "CA down"); Start
// brings it back on the same address, with a new root.
func (p *Pebble) Stop() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.stop != nil {
		p.stop()
		p.stop = nil
		waitRefused(p.addr)
	}
}

// Start starts a stopped CA and waits until its directory answers.
func (p *Pebble) Start() {
	p.t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.stop != nil {
		return
	}
	stop, err := p.start()
	if err != nil {
		p.t.Fatal(err)
	}
	p.stop = stop
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: p.mgmtTLS}, Timeout: 5 * time.Second}
	if !Poll(context.Background(), func() bool {
		resp, err := hc.Get(p.Directory)
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}) {
		p.t.Fatalf("Pebble did not answer at %s", p.Directory)
	}
}

// Roots returns the pool of the roots Pebble issues under, fetched from
// its management API (a new one each time Pebble starts).
func (p *Pebble) Roots(t testing.TB) *x509.CertPool {
	t.Helper()
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: p.mgmtTLS}, Timeout: 10 * time.Second}
	pool := x509.NewCertPool()
	resp, err := hc.Get(p.Mgmt + "/roots/0")
	if err != nil {
		t.Fatalf("fetching Pebble's root: %v", err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil || resp.StatusCode != http.StatusOK || !pool.AppendCertsFromPEM(data) {
		t.Fatalf("fetching Pebble's root: HTTP %d, %v", resp.StatusCode, err)
	}
	return pool
}

// startProc starts a program for the test with its output kept for the
// test's failure message; the returned function kills it and waits.
func startProc(t testing.TB, name, path string, env []string, args ...string) func() {
	t.Helper()
	cmd := exec.Command(path, args...)
	cmd.Env = append(os.Environ(), env...)
	out := new(SyncBuffer)
	cmd.Stdout, cmd.Stderr = out, out
	cmd.WaitDelay = 2 * time.Second
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", name, err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cmd.Process.Kill()
			<-exited
		})
	}
	t.Cleanup(func() {
		stop()
		if t.Failed() {
			t.Logf("%s output:\n%s", name, lastBytes([]byte(out.String()), 4096))
		}
	})
	return stop
}

func lastBytes(b []byte, n int) []byte {
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return bytes.ToValidUTF8(b, []byte("?"))
}

// PortOf returns the port of a host:port as an int.
func PortOf(t testing.TB, addr string) int {
	t.Helper()
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	n, err := strconv.Atoi(port)
	if err != nil {
		t.Fatal(err)
	}
	return n
}
