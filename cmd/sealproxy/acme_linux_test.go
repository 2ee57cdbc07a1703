package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/sealproxy/sealproxy/testenv"
	"github.com/sealproxy/sealproxy/unlock"
)

// acmeName is the name the tests certify; Pebble's DNS answers 127.0.0.1.
const acmeName = "web.example"

// acmeEnv is sealproxy with one [key.acme] key, Pebble (really validating
// the challenge) and a real tangd the key is sealed to.
type acmeEnv struct {
	t      *testing.T
	bin    string
	dir    string // the configuration's and the keys' directory
	cfg    string
	tang   *testenv.Tang
	pebble *testenv.Pebble
	listen string // the TLS listener (tls-alpn-01 is validated here)
	admin  string // metrics
}

func newACMEEnv(t *testing.T, challenge string, validity time.Duration) *acmeEnv {
	t.Helper()
	return newACMEEnvWith(t, challenge, testenv.PebbleOptions{Validity: validity}, nil)
}

// newACMEEnvWith is newACMEEnv with Pebble's options and more [key.acme]
// lines, made once Tang runs (extra gets the environment).
func newACMEEnvWith(t *testing.T, challenge string, po testenv.PebbleOptions, extra func(e *acmeEnv) string) *acmeEnv {
	t.Helper()
	testenv.SkipIfShort(t, "builds sealproxy and Pebble, runs tangd")
	e := &acmeEnv{t: t, dir: t.TempDir(), listen: testenv.FreeAddr(t), admin: testenv.FreeAddr(t)}
	e.tang = testenv.RealTang(t)
	httpAddr := testenv.FreeAddr(t)
	po.HTTPPort, po.TLSPort = testenv.PortOf(t, httpAddr), testenv.PortOf(t, e.listen)
	e.pebble = testenv.StartPebble(t, po)
	// As `make build` builds it: without runtime/secret sealproxy refuses sealed keys.
	e.bin = testenv.BuildCommand(t, "sealproxy", "GOFLAGS=", "GOEXPERIMENT=runtimesecret")
	echo := testenv.StartEcho(t, nil).Addr
	httpLine := ""
	if challenge == "http-01" {
		httpLine = fmt.Sprintf("http_listen = %q\n", httpAddr)
	}
	if extra != nil {
		httpLine += extra(e)
	}
	e.cfg = filepath.Join(e.dir, "sealproxy.toml")
	cfg := fmt.Sprintf(`shutdown_timeout = "2s"

[[key]]
name = "web"
cert = "web.crt"
source = "sealed:web.key.jwe"

[key.acme]
directory = %q
ca = %q
email = "ops@example.com"
account = "sealed:acme-account.jwe"
names = [%q]
challenge = %q
%sseal = '%s'

[[listener]]
name = "web"
listen = %q
mode = "offload"
keys = ["web"]
backend = %q

[admin]
listen = %q

[unlock]
timeout = "30s"
`, e.pebble.Directory, e.pebble.CA, acmeName, challenge, httpLine, e.tang.Config(), e.listen, echo, e.admin)
	if err := os.WriteFile(e.cfg, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	return e
}

func (e *acmeEnv) start() *process {
	e.t.Helper()
	return startProcess(e.t, exec.Command(e.bin, "run", "--config", e.cfg))
}

// stop stops p with SIGTERM and waits for its exit.
func (e *acmeEnv) stop(p *process) {
	e.t.Helper()
	p.signal(syscall.SIGTERM)
	p.waitExit(30*time.Second, "SIGTERM")
}

// handshake connects with SNI acmeName, trusting Pebble's root, and
// returns the leaf served.
func (e *acmeEnv) handshake(roots *x509.CertPool) (*x509.Certificate, error) {
	return e.handshakeConfig(&tls.Config{ServerName: acmeName, RootCAs: roots})
}

// handshakeWithin is handshake verifying the chain as of the middle of
// old's validity: a short-lived certificate that still serves must not
// fail the check only because a loaded test reached it after its expiry.
func (e *acmeEnv) handshakeWithin(roots *x509.CertPool, old *x509.Certificate) (*x509.Certificate, error) {
	mid := old.NotBefore.Add(old.NotAfter.Sub(old.NotBefore) / 2)
	return e.handshakeConfig(&tls.Config{ServerName: acmeName, RootCAs: roots, Time: func() time.Time { return mid }})
}

func (e *acmeEnv) handshakeConfig(cfg *tls.Config) (*x509.Certificate, error) {
	d := &net.Dialer{Timeout: 5 * time.Second}
	c, err := tls.DialWithDialer(d, "tcp", e.listen, cfg)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	msg := []byte("ping\n")
	if _, err := c.Write(msg); err != nil {
		return nil, err
	}
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(c, got); err != nil {
		return nil, fmt.Errorf("echo through the proxy: %w", err)
	}
	return c.ConnectionState().PeerCertificates[0], nil
}

// waitServed waits until a handshake verifies against Pebble's root and
// returns its leaf.
func (e *acmeEnv) waitServed(p *process, timeout time.Duration, not *x509.Certificate) *x509.Certificate {
	e.t.Helper()
	roots := e.pebble.Roots(e.t)
	var leaf *x509.Certificate
	var last error
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		l, err := e.handshake(roots)
		if err == nil && (not == nil || l.SerialNumber.Cmp(not.SerialNumber) != 0) {
			leaf = l
			break
		}
		last = err
		time.Sleep(200 * time.Millisecond)
	}
	if leaf == nil {
		e.t.Fatalf("no certificate from Pebble served within %v (last: %v)\n%s", timeout, last, p.logs.String())
	}
	return leaf
}

// metric returns the value of a sample line of /metrics starting with prefix.
func (e *acmeEnv) metric(prefix string) float64 {
	e.t.Helper()
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Get("http://" + e.admin + "/metrics")
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), prefix+" "); ok {
			v, err := strconv.ParseFloat(rest, 64)
			if err != nil {
				e.t.Fatal(err)
			}
			return v
		}
	}
	return 0
}

// recoverKey opens the sealed key file through Tang, as the test's
// reference for the custody checks.
func (e *acmeEnv) recoverKey() []byte {
	e.t.Helper()
	jwe, err := os.ReadFile(filepath.Join(e.dir, "web.key.jwe"))
	if err != nil {
		e.t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	buf, err := unlock.Decrypt(ctx, jwe, nil)
	if err != nil {
		e.t.Fatalf("recovering the new key through Tang: %v", err)
	}
	defer buf.Destroy()
	return bytes.Clone(buf.Bytes())
}

// checkCustody checks, after an issue: no file of the key directory holds
// the new key in the clear (PEM, DER, scalar), and the running process's
// memory holds no copy of its scalar, DER or PEM. A control scan of this
// scan of a process that holds the key's PEM must find it.
func (e *acmeEnv) checkCustody(p *process, keyPEM []byte) {
	e.t.Helper()
	t := e.t
	needles := tlsKeyNeedles(t, keyPEM)
	err := filepath.WalkDir(e.dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if bytes.Contains(data, []byte("PRIVATE KEY")) {
			t.Errorf("%s holds a PEM private key", d.Name())
		}
		for _, n := range needles {
			if bytes.Contains(data, n.b) {
				t.Errorf("%s found in %s", n.name, d.Name())
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	var ns []testenv.Needle
	for _, n := range needles {
		ns = append(ns, testenv.Needle{Name: n.name, Bytes: n.b})
	}
	if control := scanHolder(t, keyPEM, ns); control == 0 {
		t.Fatal("the scan found nothing in a process holding the key's PEM: the scan is broken")
	}
	// The box's scratch is scrubbed shortly after the last signature:
	// scan until clean or a few seconds have passed.
	deadline := time.Now().Add(5 * time.Second)
	var counts map[string]int
	for {
		var scanned int64
		counts, scanned = testenv.ScanMemory(t, p.cmd.Process.Pid, ns, false)
		if scanned == 0 {
			t.Fatal("scanned nothing")
		}
		if sum(counts) == 0 || time.Now().After(deadline) {
			t.Logf("scanned %d MiB of sealproxy: %d occurrences of the new key", scanned>>20, sum(counts))
			break
		}
		time.Sleep(250 * time.Millisecond)
	}
	if sum(counts) != 0 {
		testenv.ScanMemory(t, p.cmd.Process.Pid, ns, true)
		t.Errorf("the running sealproxy holds %d copies of the new key: %v", sum(counts), counts)
	}
}

// scalarOf is the ECDSA private scalar of a PEM key.
func scalarOf(t *testing.T, keyPEM []byte) []byte {
	t.Helper()
	block, _ := pem.Decode(keyPEM)
	if block == nil {
		t.Fatal("no PEM key")
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	d, err := k.(*ecdsa.PrivateKey).Bytes()
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// firstIssue starts sealproxy with no certificate and no key files, and
// checks the first issue end to end: the challenge answered, the pair
// served, written only sealed, the key in custody, and a fresh start-up
// recovering the key through Tang and serving the same certificate
// without a new issue.
func firstIssue(t *testing.T, challenge string) {
	e := newACMEEnv(t, challenge, 0)
	if out, err := exec.Command(e.bin, "check", "--config", e.cfg).CombinedOutput(); err != nil {
		t.Fatalf("sealproxy check before the first issue: %v\n%s", err, out)
	}
	p := e.start()
	leaf := e.waitServed(p, 2*time.Minute, nil)
	if err := leaf.VerifyHostname(acmeName); err != nil {
		t.Fatal(err)
	}
	p.logs.WaitFor(t, 10*time.Second, "answering ACME challenge")
	if !strings.Contains(p.logs.String(), challenge) {
		t.Errorf("the log does not name the %s challenge:\n%s", challenge, p.logs.String())
	}
	for _, f := range []string{"web.key.jwe", "acme-account.jwe"} {
		if fi, err := os.Stat(filepath.Join(e.dir, f)); err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: %v, mode %v; want a 0600 file", f, err, fi)
		}
	}
	if got := e.metric(`sealproxy_acme_renewals_total{key="web",result="success"}`); got != 1 {
		t.Errorf("renewals_total{success} = %v, want 1", got)
	}
	if got := e.metric(`sealproxy_certificate_expiry_timestamp_seconds{key="web"}`); got != float64(leaf.NotAfter.Unix()) {
		t.Errorf("certificate_expiry = %v, want %d", got, leaf.NotAfter.Unix())
	}
	keyPEM := e.recoverKey()
	if !leaf.PublicKey.(*ecdsa.PublicKey).Equal(mustParseKey(t, keyPEM).Public()) {
		t.Fatal("the sealed key does not match the certificate served")
	}
	e.checkCustody(p, keyPEM)
	e.stop(p)

	// A fresh start-up recovers the new key through Tang.
	p = e.start()
	again := e.waitServed(p, time.Minute, nil)
	if again.SerialNumber.Cmp(leaf.SerialNumber) != 0 {
		t.Errorf("after a restart: serial %x served, want the issued %x", again.SerialNumber, leaf.SerialNumber)
	}
	if strings.Contains(p.logs.String(), "answering ACME challenge") {
		t.Errorf("the restart issued again:\n%s", p.logs.String())
	}
	e.checkCustody(p, keyPEM)
	e.stop(p)
}

func mustParseKey(t *testing.T, keyPEM []byte) *ecdsa.PrivateKey {
	t.Helper()
	block, _ := pem.Decode(keyPEM)
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return k.(*ecdsa.PrivateKey)
}

func TestACMEFirstIssueTLSALPN(t *testing.T) { firstIssue(t, "tls-alpn-01") }

func TestACMEFirstIssueHTTP(t *testing.T) { firstIssue(t, "http-01") }

func sum(m map[string]int) int {
	n := 0
	for _, c := range m {
		n += c
	}
	return n
}

// load runs clients that connect, handshake (verifying against the roots
// of the moment) and echo, one after another, until stop is closed; it
// returns the number of successful and failed connections.
func (e *acmeEnv) load(stop <-chan struct{}, clients int) (ok, failed *atomic.Int64, errs *testenv.SyncBuffer, done *sync.WaitGroup) {
	ok, failed, errs, done = new(atomic.Int64), new(atomic.Int64), new(testenv.SyncBuffer), new(sync.WaitGroup)
	roots := e.pebble.Roots(e.t)
	for range clients {
		done.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				if _, err := e.handshake(roots); err != nil {
					failed.Add(1)
					fmt.Fprintf(errs, "%v\n", err)
				} else {
					ok.Add(1)
				}
			}
		})
	}
	return ok, failed, errs, done
}

// TestACMERenewalUnderLoad: a short-lived certificate is renewed (a new
// key born sealed) while clients keep connecting: not one handshake
// fails, new handshakes get the new pair, and the new key passes the
// custody checks and is recovered through Tang by a fresh start-up.
func TestACMERenewalUnderLoad(t *testing.T) {
	e := newACMEEnv(t, "tls-alpn-01", 30*time.Second)
	p := e.start()
	first := e.waitServed(p, 2*time.Minute, nil)
	firstKey := e.recoverKey()

	stop := make(chan struct{})
	ok, failed, errs, done := e.load(stop, 4)
	second := e.waitServed(p, time.Minute, first)
	time.Sleep(2 * time.Second) // handshakes after the swap too
	close(stop)
	done.Wait()
	t.Logf("%d connections during the renewal, %d failed", ok.Load(), failed.Load())
	if ok.Load() < 20 {
		t.Errorf("only %d connections: the load did not run", ok.Load())
	}
	if failed.Load() != 0 {
		t.Errorf("%d connections failed during the renewal:\n%s", failed.Load(), errs.String())
	}
	if !second.NotBefore.After(first.NotBefore.Add(-time.Second)) || second.NotAfter.Before(first.NotAfter) {
		t.Errorf("renewed certificate %v..%v is not newer than %v..%v", second.NotBefore, second.NotAfter, first.NotBefore, first.NotAfter)
	}
	newKey := e.recoverKey()
	if bytes.Equal(scalarOf(t, newKey), scalarOf(t, firstKey)) {
		t.Fatal("the renewal kept the old key: want a new key for each certificate")
	}
	if got := e.metric(`sealproxy_acme_renewals_total{key="web",result="success"}`); got < 2 {
		t.Errorf("renewals_total{success} = %v, want 2 or more", got)
	}
	// Pebble offers ARI (RFC 9773): its window schedules the renewal.
	if !strings.Contains(p.logs.String(), `by=ari`) {
		t.Errorf("the renewal was not scheduled by the CA's ARI window:\n%s", p.logs.String())
	}
	e.checkCustody(p, newKey)
	e.stop(p)
	// A 30-second certificate is soon due again: the daemon may have
	// renewed once more since newKey was read, so the fresh start-up is
	// judged against the pair on disk when it stopped.
	lastKey := e.recoverKey()
	if bytes.Equal(scalarOf(t, lastKey), scalarOf(t, firstKey)) {
		t.Fatal("the key on disk at the stop is the first one")
	}
	p = e.start()
	if got := e.waitServed(p, time.Minute, nil); got.PublicKey.(*ecdsa.PublicKey).Equal(mustParseKey(t, lastKey).Public()) == false {
		t.Error("after a restart the renewed key is not the one served")
	}
	e.stop(p)
}

// fileState is a file's bytes and modification time.
type fileState struct {
	data []byte
	mod  time.Time
}

func (e *acmeEnv) files(names ...string) map[string]fileState {
	e.t.Helper()
	out := map[string]fileState{}
	for _, n := range names {
		fi, err := os.Stat(filepath.Join(e.dir, n))
		if err != nil {
			e.t.Fatal(err)
		}
		data, _ := os.ReadFile(filepath.Join(e.dir, n))
		out[n] = fileState{data, fi.ModTime()}
	}
	return out
}

// waitMetric waits until a counter reaches at least want.
func (e *acmeEnv) waitMetric(p *process, sample string, want float64, timeout time.Duration) {
	e.t.Helper()
	deadline := time.Now().Add(timeout)
	for e.metric(sample) < want {
		if time.Now().After(deadline) {
			e.t.Fatalf("%s stayed below %v for %v\n%s", sample, want, timeout, p.logs.String())
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// TestACMECADown: the CA is down when the renewal is due: the attempt
// fails, is counted and retried with backoff, the old certificate keeps
// serving; once the CA is back (with its state lost, as a restart does)
// the renewal succeeds.
func TestACMECADown(t *testing.T) {
	e := newACMEEnv(t, "tls-alpn-01", 40*time.Second)
	p := e.start()
	first := e.waitServed(p, 2*time.Minute, nil)
	roots := e.pebble.Roots(t)
	before := e.files("web.key.jwe", "web.crt")
	e.pebble.Stop()
	e.waitMetric(p, `sealproxy_acme_renewals_total{key="web",result="ca_error"}`, 2, time.Minute)
	if got, err := e.handshakeWithin(roots, first); err != nil || got.SerialNumber.Cmp(first.SerialNumber) != 0 {
		t.Fatalf("with the CA down: %v, serial %v; want the old certificate %x serving", err, got, first.SerialNumber)
	}
	if after := e.files("web.key.jwe", "web.crt"); !bytes.Equal(after["web.key.jwe"].data, before["web.key.jwe"].data) || !bytes.Equal(after["web.crt"].data, before["web.crt"].data) {
		t.Error("a failed renewal changed the key or certificate files")
	}
	p.logs.WaitFor(t, 10*time.Second, "by=backoff")
	e.pebble.Start()
	second := e.waitServed(p, time.Minute, first)
	t.Logf("renewed after the CA came back: serial %x", second.SerialNumber)
	e.checkCustody(p, e.recoverKey())
	e.stop(p)
}

// TestACMETangDown: Tang is down when the renewal is due: the new key
// cannot be sealed, so nothing is written and nothing ordered; the
// attempt is counted and retried; the old certificate keeps serving;
// once Tang is back the renewal succeeds.
func TestACMETangDown(t *testing.T) {
	e := newACMEEnv(t, "tls-alpn-01", 40*time.Second)
	p := e.start()
	first := e.waitServed(p, 2*time.Minute, nil)
	roots := e.pebble.Roots(t)
	before := e.files("web.key.jwe", "web.crt", "acme-account.jwe")
	e.tang.Stop()
	e.waitMetric(p, `sealproxy_acme_renewals_total{key="web",result="tang_unreachable"}`, 2, time.Minute)
	if got, err := e.handshakeWithin(roots, first); err != nil || got.SerialNumber.Cmp(first.SerialNumber) != 0 {
		t.Fatalf("with Tang down: %v; want the old certificate %x serving", err, first.SerialNumber)
	}
	after := e.files("web.key.jwe", "web.crt", "acme-account.jwe")
	for n, b := range before {
		if !bytes.Equal(after[n].data, b.data) || !after[n].mod.Equal(b.mod) {
			t.Errorf("%s was written while Tang was down", n)
		}
	}
	entries, _ := os.ReadDir(e.dir)
	if len(entries) != 4 { // the configuration, the account, the key, the certificate
		var names []string
		for _, d := range entries {
			names = append(names, d.Name())
		}
		t.Errorf("the key directory holds %v; want nothing new", names)
	}
	if n := strings.Count(p.logs.String(), "answering ACME challenge"); n != 1 {
		t.Errorf("%d challenges answered: want only the first issue's (nothing is ordered before the key is sealed)", n)
	}
	e.tang.Start()
	second := e.waitServed(p, time.Minute, first)
	t.Logf("renewed after Tang came back: serial %x", second.SerialNumber)
	e.checkCustody(p, e.recoverKey())
	e.stop(p)
}

// TestACMEExternalAccountBinding: a CA that requires EAB registers the
// account with the MAC key recovered from its sealed file.
func TestACMEExternalAccountBinding(t *testing.T) {
	const kid, mac = "kid-1", "zWNDZM6eQGHWpSRTPal5eIUYFTu7EajVIoguysqZ9wG44nMEtx3MUAsUDkMTQ12W"
	e := newACMEEnvWith(t, "tls-alpn-01", testenv.PebbleOptions{EAB: map[string]string{kid: mac}}, func(e *acmeEnv) string {
		jwe, err := unlock.Encrypt(context.Background(), "tang", []byte(e.tang.Config()), []byte(mac+"\n"), nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(e.dir, "eab.jwe"), jwe, 0o600); err != nil {
			t.Fatal(err)
		}
		return fmt.Sprintf("eab_kid = %q\neab_key = \"sealed:eab.jwe\"\n", kid)
	})
	p := e.start()
	e.waitServed(p, 2*time.Minute, nil)
	e.checkCustody(p, e.recoverKey())
	e.stop(p)
}

// scanHolder is the memory scan's control: cat, having copied keyPEM
// from its stdin to its stdout, still holds it in its buffer. (Not this
// test process: under -race its shadow mappings make a scan take
// minutes.) It returns the occurrences found.
func scanHolder(t *testing.T, keyPEM []byte, ns []testenv.Needle) int {
	t.Helper()
	cmd := exec.Command("cat")
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { stdin.Close(); cmd.Wait() }()
	if _, err := stdin.Write(keyPEM); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(stdout, make([]byte, len(keyPEM))); err != nil {
		t.Fatal(err)
	}
	counts, _ := testenv.ScanMemory(t, cmd.Process.Pid, ns, false)
	return sum(counts)
}

// TestACMECrashRecovery lays out, with a real issued pair, the files
// that a crash of a renewal leaves, and starts the real binary on them:
// a committed pair (the staged certificate written) is put in place and
// served without a new issue, even when what is in place is another
// sealed key and no certificate; an uncommitted one (a staged key alone)
// is removed and the pair in place serves. No staged file is left.
func TestACMECrashRecovery(t *testing.T) {
	e := newACMEEnv(t, "tls-alpn-01", 0)
	p := e.start()
	leaf := e.waitServed(p, 2*time.Minute, nil)
	e.stop(p)
	path := func(n string) string { return filepath.Join(e.dir, n) }
	move := func(from, to string) {
		t.Helper()
		if err := os.Rename(path(from), path(to)); err != nil {
			t.Fatal(err)
		}
	}
	copyFile := func(from, to string) {
		t.Helper()
		data, err := os.ReadFile(path(from))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path(to), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	check := func(what string) {
		t.Helper()
		p := e.start()
		got := e.waitServed(p, time.Minute, nil)
		if got.SerialNumber.Cmp(leaf.SerialNumber) != 0 {
			t.Errorf("%s: serial %x served, want the issued %x", what, got.SerialNumber, leaf.SerialNumber)
		}
		if strings.Contains(p.logs.String(), "answering ACME challenge") {
			t.Errorf("%s: issued again instead of recovering:\n%s", what, p.logs.String())
		}
		e.stop(p)
		for _, n := range []string{"web.key.jwe.next", "web.crt.next"} {
			if _, err := os.Stat(path(n)); !os.IsNotExist(err) {
				t.Errorf("%s: %s left after start-up (%v)", what, n, err)
			}
		}
		if keyPEM := e.recoverKey(); !leaf.PublicKey.(*ecdsa.PublicKey).Equal(mustParseKey(t, keyPEM).Public()) {
			t.Errorf("%s: the sealed key in place does not match the certificate served", what)
		}
	}

	// Crashed after the commit marker, at a first issue: the staged pair
	// alone, another sealed key where the key goes, no certificate.
	move("web.key.jwe", "web.key.jwe.next")
	move("web.crt", "web.crt.next")
	copyFile("acme-account.jwe", "web.key.jwe")
	check("a committed staged pair")

	// Crashed after the key was put in place, before the certificate.
	copyFile("web.crt", "web.crt.next")
	check("a staged certificate whose key is in place")

	// Crashed before the commit marker: a staged key alone (another key).
	copyFile("acme-account.jwe", "web.key.jwe.next")
	check("a staged key without its certificate")
}

// TestACMEReloadSettings: a name added to [key.acme] applies at a reload
// (SIGHUP), without a restart: the running manager orders a certificate
// covering it, which is then served for that name.
func TestACMEReloadSettings(t *testing.T) {
	e := newACMEEnv(t, "tls-alpn-01", 0)
	p := e.start()
	defer e.stop(p)
	leaf := e.waitServed(p, 2*time.Minute, nil)
	const added = "api.example"
	if leaf.VerifyHostname(added) == nil {
		t.Fatalf("the first certificate already covers %s", added)
	}
	cfg, err := os.ReadFile(e.cfg)
	if err != nil {
		t.Fatal(err)
	}
	old := fmt.Sprintf("names = [%q]", acmeName)
	if !bytes.Contains(cfg, []byte(old)) {
		t.Fatalf("no %s line in the configuration", old)
	}
	cfg = bytes.Replace(cfg, []byte(old), fmt.Appendf(nil, "names = [%q, %q]", acmeName, added), 1)
	if err := os.WriteFile(e.cfg, cfg, 0o644); err != nil {
		t.Fatal(err)
	}
	p.signal(syscall.SIGHUP)
	got := e.waitServed(p, 2*time.Minute, leaf)
	if err := got.VerifyHostname(added); err != nil {
		t.Errorf("after the reload: %v\n%s", err, p.logs.String())
	}
}
