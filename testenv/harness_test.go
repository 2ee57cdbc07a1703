package testenv_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sealproxy/sealproxy/testenv"
	"github.com/sealproxy/sealproxy/unlock"
	"github.com/sealproxy/sealproxy/unlock/gate"
)

// fatalRecorder stands in for a test that a helper should fail: it keeps
// the message instead of stopping.
type fatalRecorder struct {
	testing.TB
	mu     sync.Mutex
	failed string
}

func (r *fatalRecorder) Helper() {}
func (r *fatalRecorder) Fatalf(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.failed = fmt.Sprintf(format, args...)
}
func (r *fatalRecorder) Fatal(args ...any) { r.Fatalf("%s", fmt.Sprint(args...)) }

// TestWritePKI: the CA file verifies the server certificate for its
// name and for 127.0.0.1, the chain file starts with the leaf, the key
// matches it, and no key is written.
func TestWritePKI(t *testing.T) {
	dir := t.TempDir()
	p, err := testenv.WritePKI(dir, testenv.PKIOptions{CAName: "t CA", ServerName: "web.test", File: "web"})
	if err != nil {
		t.Fatal(err)
	}
	caPEM, err := os.ReadFile(filepath.Join(dir, "ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(caPEM) {
		t.Fatal("ca.crt holds no certificate")
	}
	chain, err := os.ReadFile(filepath.Join(dir, "web.crt"))
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(chain)
	leaf, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"web.test", "127.0.0.1"} {
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, DNSName: name}); err != nil {
			t.Errorf("web.crt for %s: %v", name, err)
		}
	}
	keyPEM, err := p.Server.MarshalKey()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tls.X509KeyPair(chain, keyPEM); err != nil {
		t.Errorf("the key does not match web.crt: %v", err)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 2 {
		t.Errorf("WritePKI wrote %d files, want ca.crt and web.crt only (no key)", len(entries))
	}
	if _, err := testenv.WritePKI(dir, testenv.PKIOptions{CAName: "x"}); err == nil {
		t.Error("WritePKI without ServerName and File: no error")
	}
}

// TestSyncBuffer: concurrent writers lose nothing (and -race sees no race
// with the reader).
func TestSyncBuffer(t *testing.T) {
	var b testenv.SyncBuffer
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 100 {
				b.Write([]byte("x"))
				_ = b.String()
			}
		})
	}
	wg.Wait()
	if b.Len() != 800 || b.String() != strings.Repeat("x", 800) {
		t.Fatalf("got %d bytes, want 800", b.Len())
	}
	b.Reset()
	if b.Len() != 0 {
		t.Fatal("Reset left bytes")
	}
	go func() { time.Sleep(20 * time.Millisecond); b.Write([]byte("msg=ready\n")) }()
	b.WaitFor(t, 10*time.Second, "msg=ready")
	r := &fatalRecorder{TB: t}
	b.WaitFor(r, 30*time.Millisecond, "msg=never")
	if !strings.Contains(r.failed, `no "msg=never"`) || !strings.Contains(r.failed, "msg=ready") {
		t.Fatalf("WaitFor for a missing line failed with %q, want the line and the buffer", r.failed)
	}
}

// TestEventually: a condition that comes true passes; one that never does
// fails with what it waited for, after the timeout and not before.
func TestEventually(t *testing.T) {
	n := 0
	testenv.Eventually(t, 5*time.Second, "the third poll", func() bool { n++; return n >= 3 })
	if n != 3 {
		t.Fatalf("polled %d times, want 3", n)
	}
	r := &fatalRecorder{TB: t}
	start := time.Now()
	testenv.Eventually(r, 50*time.Millisecond, "never", func() bool { return false })
	if time.Since(start) < 50*time.Millisecond || !strings.Contains(r.failed, "waiting for never") {
		t.Fatalf("after %v: failure %q, want a timeout waiting for never", time.Since(start), r.failed)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if testenv.Poll(ctx, func() bool { return false }) {
		t.Fatal("Poll with an ended context reported true")
	}
}

// TestEcho: a plain backend echoes and half-closes; a TLS backend echoes
// and reports the client certificate's name.
func TestEcho(t *testing.T) {
	e := testenv.StartEcho(t, nil)
	c, err := net.Dial("tcp", e.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, "hello")
	c.(*net.TCPConn).CloseWrite()
	if got, err := io.ReadAll(c); err != nil || string(got) != "hello" {
		t.Fatalf("echo = %q, %v", got, err)
	}

	ca := testenv.NewCA(t, "echo CA")
	te := testenv.StartEcho(t, &tls.Config{
		Certificates: []tls.Certificate{ca.Server(t, "localhost").TLSCertificate()},
		ClientAuth:   tls.RequireAndVerifyClientCert, ClientCAs: ca.Pool(),
	})
	tc, err := tls.Dial("tcp", te.Addr, &tls.Config{RootCAs: ca.Pool(), ServerName: "localhost",
		Certificates: []tls.Certificate{ca.Client(t, "alice").TLSCertificate()}})
	if err != nil {
		t.Fatal(err)
	}
	defer tc.Close()
	io.WriteString(tc, "over tls")
	tc.CloseWrite()
	if got, err := io.ReadAll(tc); err != nil || string(got) != "over tls" {
		t.Fatalf("tls echo = %q, %v", got, err)
	}
	if id := <-te.IDs; id != "alice" {
		t.Fatalf("client id %q, want alice", id)
	}
}

// TestGate: a key sealed to the gate's pin configuration is recovered
// only after the operator approves the request the gate reported, with
// the operator's token, and the audit file records it.
func TestGate(t *testing.T) {
	g := testenv.StartGate(t, testenv.GateOptions{Operators: []string{"alice"}, AuditFile: filepath.Join(t.TempDir(), "audit.jsonl")})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	jwe, err := unlock.Encrypt(ctx, "tang", []byte(g.PinConfig()), []byte("secret"), nil)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		buf, err := unlock.Decrypt(ctx, jwe, nil)
		if err == nil {
			if string(buf.Bytes()) != "secret" {
				err = fmt.Errorf("recovered %q", buf.Bytes())
			}
			buf.Destroy()
		}
		done <- err
	}()
	req := g.Next(t, time.Minute)
	select {
	case err := <-done:
		t.Fatalf("Decrypt returned before approval: %v", err)
	default:
	}
	op := &gate.Client{URL: g.URL, Token: g.Tokens["alice"]}
	if _, err := op.Approve(ctx, req.Code); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	audit, err := os.ReadFile(g.AuditFile)
	if err != nil || !bytes.Contains(audit, []byte(`"alice"`)) {
		t.Fatalf("audit file (%v) does not name alice:\n%s", err, audit)
	}
	g.Close()
	if _, err := http.Get(g.URL); err == nil {
		t.Fatal("the gate still answers after Close")
	}
	g.Close() // twice is harmless (cleanup calls it again)
}

// TestHostileFront: advertisements pass through, recoveries get the
// hostile answer.
func TestHostileFront(t *testing.T) {
	tang := testenv.EmbeddedTang(t)
	url := testenv.HostileFront(t, tang.URL, 403, `{"status":"denied"}`)
	want, err := http.Get(tang.URL + "/adv")
	if err != nil {
		t.Fatal(err)
	}
	wantBody, _ := io.ReadAll(want.Body)
	want.Body.Close()
	got, err := http.Get(url + "/adv")
	if err != nil {
		t.Fatal(err)
	}
	gotBody, _ := io.ReadAll(got.Body)
	got.Body.Close()
	if got.StatusCode != 200 || !bytes.Equal(gotBody, wantBody) {
		t.Fatalf("advertisement through the front: %d %q, want %q", got.StatusCode, gotBody, wantBody)
	}
	resp, err := http.Post(url+"/rec/x", "application/jwk+json", strings.NewReader("{}"))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 403 || string(body) != `{"status":"denied"}` {
		t.Fatalf("recovery through the front: %d %q", resp.StatusCode, body)
	}
}

// TestBuildCommand builds cmd/seal once: a second call returns the same
// binary without building again, and the binary runs. Build puts one
// where the caller says.
func TestBuildCommand(t *testing.T) {
	bin := testenv.BuildCommand(t, "seal")
	info, err := os.Stat(bin)
	if err != nil {
		t.Fatal(err)
	}
	if again := testenv.BuildCommand(t, "seal"); again != bin {
		t.Fatalf("second build at %s, first at %s", again, bin)
	}
	if info2, _ := os.Stat(bin); !info2.ModTime().Equal(info.ModTime()) {
		t.Fatal("the second call built again")
	}
	out, _ := exec.Command(bin, "--help").CombinedOutput()
	if !strings.Contains(string(out), "seal") {
		t.Fatalf("seal --help printed:\n%s", out)
	}
	// Build, the tools' form, writes DIR/NAME.
	dir := t.TempDir()
	built, err := testenv.Build(t.Context(), "seal", dir)
	if err != nil {
		t.Fatal(err)
	}
	if filepath.Dir(built) != dir {
		t.Fatalf("Build wrote %s, want it in %s", built, dir)
	}
	if _, err := os.Stat(built); err != nil {
		t.Fatal(err)
	}
}

const childEnv = "TESTENV_CHILD"

// TestRunConfinedChild: the child runs this same test with the env set;
// a child that never logs the done line fails the parent.
func TestRunConfinedChild(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("confined children are Landlock tests, which run on Linux")
	}
	switch os.Getenv(childEnv) {
	case "ok":
		t.Log("child: checks done")
		return
	case "silent":
		return
	}
	testenv.RunConfinedChild(t, []string{childEnv + "=ok"}, "child: checks done")
	r := &fatalRecorder{TB: t}
	testenv.RunConfinedChild(r, []string{childEnv + "=silent"}, "child: checks done")
	if !strings.Contains(r.failed, "ran no checks") {
		t.Fatalf("a silent child: failure %q", r.failed)
	}
}

// TestFreeAddr: the address is on loopback, refuses connections, and can
// be listened on.
func TestFreeAddr(t *testing.T) {
	addr := testenv.FreeAddr(t)
	if host, _, _ := net.SplitHostPort(addr); host != "127.0.0.1" {
		t.Fatalf("FreeAddr = %s, want 127.0.0.1:PORT", addr)
	}
	if c, err := net.Dial("tcp", addr); err == nil {
		c.Close()
		t.Fatalf("something listens on %s", addr)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("listening on the free address: %v", err)
	}
	ln.Close()
}

// TestListenAgain: an address its server closes a moment later is
// listened on again; one that stays busy fails the test, naming it,
// after the timeout.
func TestListenAgain(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := busy.Addr().String()
	r := &fatalRecorder{TB: t}
	start := time.Now()
	if ln := testenv.ListenAgain(r, addr, 50*time.Millisecond); ln != nil {
		ln.Close()
		t.Fatalf("listened on %s while it was busy", addr)
	}
	if time.Since(start) < 50*time.Millisecond || !strings.Contains(r.failed, "listening on "+addr+" again") {
		t.Fatalf("after %v: failure %q, want one naming %s after the timeout", time.Since(start), r.failed, addr)
	}
	closed := time.AfterFunc(100*time.Millisecond, func() { busy.Close() })
	defer closed.Stop()
	ln := testenv.ListenAgain(t, addr, 10*time.Second)
	defer ln.Close()
	if ln.Addr().String() != addr {
		t.Fatalf("listening on %s, want %s", ln.Addr(), addr)
	}
}

// TestIssueValidityAndRevocationURLs: a leaf is valid for 90 days (past
// sealproxy's 30-day expiry warning) unless LeafOptions.Validity says
// otherwise, and carries the revocation URLs it is given.
func TestIssueValidityAndRevocationURLs(t *testing.T) {
	ca := testenv.NewCA(t, "test CA")
	def := ca.Server(t, "localhost").Cert
	if left := time.Until(def.NotAfter); left > 90*24*time.Hour || left < 89*24*time.Hour {
		t.Fatalf("a default leaf ends in %v, want 90 days", left)
	}
	year := ca.Issue(t, testenv.LeafOptions{CN: "localhost", Validity: 365 * 24 * time.Hour,
		OCSPServer: []string{"http://127.0.0.1:9/ocsp"}, CRLDistributionPoints: []string{"http://127.0.0.1:9/ca.crl"}}).Cert
	if left := time.Until(year.NotAfter); left < 364*24*time.Hour || left > 365*24*time.Hour {
		t.Fatalf("a leaf valid for a year ends in %v", left)
	}
	if len(year.CRLDistributionPoints) != 1 || year.CRLDistributionPoints[0] != "http://127.0.0.1:9/ca.crl" ||
		len(year.OCSPServer) != 1 || year.OCSPServer[0] != "http://127.0.0.1:9/ocsp" {
		t.Fatalf("revocation URLs %q %q", year.CRLDistributionPoints, year.OCSPServer)
	}
}
