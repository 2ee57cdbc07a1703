// The TLS policy does not depend on runtime/secret: make test's second
// pass, built with it, leaves this minute-long audit to the first.

//go:build !goexperiment.runtimesecret

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sealproxy/sealproxy/testenv"
	"github.com/sealproxy/sealproxy/unlock"
)

// TestTestssl audits the TLS side as an outsider would (issue 19): the
// real testssl.sh against the daemon, one listener on the defaults and
// one with client_auth = "require", both with a sealed key. Any finding
// rated MEDIUM or above, or saying "vulnerable" (LUCKY13's "potentially
// vulnerable" included), fails the test; the JSON output is read, not
// the text.
//
// The certificate is made to pass on its own (a CA testssl is told to
// trust, a year's validity, OCSP and CRL URLs), so that what remains is
// the proxy's TLS policy. The check groups are protocols (-p), forward
// secrecy with every suite and group offered (-f), server defaults with
// the certificate and session tickets (-S) and every vulnerability (-U,
// LUCKY13 among them). Left out: -s (cipher categories: NULL, EXPORT,
// RC4 and 3DES are not in crypto/tls or refused by the configuration,
// and -U's checks cover them), -P (the server's cipher order) and -H
// (HTTP headers: the backend is no HTTP server). testssl's socket waits
// are cut to a few seconds: on loopback an answer comes at once or
// never, and the defaults (5 to 10 s each) are a good part of its run.
func TestTestssl(t *testing.T) {
	bin := testenv.LookTool(t, "testssl", "testssl.sh")
	if !testenv.RequireInterop() {
		testenv.SkipIfShort(t, "testssl.sh takes about a minute per listener")
	}
	f := newFixture(t)
	caPath, crtPath, keyPEM := auditCertificate(t, f.dir)
	jwe, err := unlock.Encrypt(context.Background(), "tang", []byte(testenv.EmbeddedTang(t).Config()), keyPEM, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(f.dir, "web.key.jwe"), jwe, 0o600); err != nil {
		t.Fatal(err)
	}
	path := f.write(`[[key]]
name = "web"
cert = "` + filepath.Base(crtPath) + `"
source = "sealed:web.key.jwe"

[[listener]]
name = "defaults"
listen = "127.0.0.1:0"
mode = "offload"
keys = ["web"]
backend = "` + f.backend + `"

[[listener]]
name = "mtls"
listen = "127.0.0.1:0"
mode = "offload"
keys = ["web"]
backend = "` + f.backend + `"
[listener.tls]
client_auth = "require"
client_ca = "` + filepath.Base(caPath) + `"
`)
	r := startDaemon(t, &daemon{}, path)
	r.logs.WaitFor(t, time.Minute, "msg=ready")
	for _, name := range []string{"defaults", "mtls"} {
		addr := r.addr(name)
		t.Run(name, func(t *testing.T) {
			// testssl.sh spends most of its time waiting on sockets:
			// the two audits side by side halve the wall time.
			t.Parallel()
			findings := runTestssl(t, bin, caPath, addr)
			checkAudit(t, findings)
		})
	}
}

// finding is one entry of testssl.sh's flat JSON output (--jsonfile).
type finding struct {
	ID       string `json:"id"`
	Severity string `json:"severity"`
	Finding  string `json:"finding"`
}

func runTestssl(t *testing.T, bin, caPath, addr string) []finding {
	t.Helper()
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "testssl.json")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "--quiet", "--color", "0", "--warnings", "off",
		"--openssl-timeout", "5", "--connect-timeout", "5",
		"--add-ca", caPath, "--ip", "127.0.0.1", "--jsonfile", out,
		"-p", "-f", "-S", "-U", "localhost:"+port)
	cmd.Env = append(os.Environ(), "HEADER_MAXSLEEP=1", "MAX_WAITSOCK=3", "CCS_MAX_WAITSOCK=2", "HEARTBLEED_MAX_WAITSOCK=2")
	var text bytes.Buffer
	cmd.Stdout, cmd.Stderr = &text, &text
	start := time.Now()
	runErr := cmd.Run() // its exit status counts findings of any rating; the JSON decides
	t.Logf("testssl.sh against %s took %s", addr, time.Since(start).Round(time.Second))
	data, err := os.ReadFile(out)
	if err != nil {
		t.Fatalf("testssl.sh wrote no JSON (%v; run: %v):\n%s", err, runErr, text.String())
	}
	var fs []finding
	if err := json.Unmarshal(data, &fs); err != nil {
		t.Fatalf("testssl.sh JSON: %v\n%s", err, data)
	}
	if t.Failed() || testing.Verbose() {
		t.Logf("testssl.sh output:\n%s", text.String())
	}
	return fs
}

// checkAudit fails on findings rated MEDIUM or above or saying
// vulnerable, and on an audit that did not run the checks it must.
func checkAudit(t *testing.T, fs []finding) {
	t.Helper()
	seen := map[string]bool{}
	for _, f := range fs {
		seen[f.ID] = true
		lower := strings.ToLower(f.Finding)
		switch {
		case f.Severity == "MEDIUM" || f.Severity == "HIGH" || f.Severity == "CRITICAL" || f.Severity == "FATAL":
			t.Errorf("%s %s: %s", f.Severity, f.ID, f.Finding)
		case strings.Contains(lower, "vulnerable") && !strings.Contains(lower, "not vulnerable"):
			t.Errorf("%s %s says vulnerable: %s", f.Severity, f.ID, f.Finding)
		case f.Severity == "WARN":
			t.Logf("testssl.sh could not judge %s: %s", f.ID, f.Finding)
		}
	}
	// Without these the scan did not get far enough to mean anything.
	for _, id := range []string{"TLS1_2", "TLS1_3", "PFS", "PFS_ciphers", "LUCKY13", "SWEET32", "heartbleed", "cert_chain_of_trust"} {
		if !seen[id] {
			t.Errorf("no %s finding: the audit did not run its checks", id)
		}
	}
}

// auditCertificate writes a CA and a server certificate for localhost
// that an auditor has nothing to say about (valid for a year, with
// revocation URLs), and returns the CA and certificate paths and the
// private key (to be sealed).
func auditCertificate(t *testing.T, dir string) (caPath, crtPath string, keyPEM []byte) {
	t.Helper()
	ca := testenv.NewCA(t, "sealproxy audit CA")
	leaf := ca.Issue(t, testenv.LeafOptions{
		CN: "localhost", DNS: []string{"localhost"}, Validity: 365 * 24 * time.Hour,
		// Never fetched: testssl.sh contacts nothing without --phone-out.
		OCSPServer: []string{"http://127.0.0.1:9/ocsp"}, CRLDistributionPoints: []string{"http://127.0.0.1:9/ca.crl"},
	})
	caPath, crtPath = ca.WriteCA(t, dir, "audit-ca.pem"), filepath.Join(dir, "web.crt")
	if err := os.WriteFile(crtPath, leaf.ChainPEM(), 0o644); err != nil {
		t.Fatal(err)
	}
	return caPath, crtPath, leaf.KeyPEM(t)
}
