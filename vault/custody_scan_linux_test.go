//go:build linux

package vault

import (
	"bufio"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha512"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sealproxy/sealproxy/internal/secmem"
	"github.com/sealproxy/sealproxy/testenv"
	"github.com/sealproxy/sealproxy/unlock"
)

// The custody proof: a separate process holds a key, serves TLS with it on
// 127.0.0.1, and after handshakes and a scrub its whole readable memory is
// searched for the key's secret numbers and encodings.
//
// The child is this test binary re-executed with keyholderEnv set (see
// TestMain). It prints "addr ADDR" once it serves and "scrubbed N" after
// each idle scrub; it exits when its stdin closes.
const keyholderEnv = "SEALPROXY_TEST_KEYHOLDER"

func TestMain(m *testing.M) {
	if os.Getenv(memlockEnv) != "" {
		memlockChild()
	}
	if ref := os.Getenv(keyholderEnv); ref != "" {
		if err := keyholder(ref); err != nil {
			fmt.Fprintln(os.Stderr, "keyholder:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// keyholder is the child process: open ref, serve TLS with it (certificate
// from SEALPROXY_TEST_CERT), report scrubs, exit when stdin closes.
func keyholder(ref string) error {
	// Only a parent with CAP_SYS_PTRACE can read a non-dumpable process's
	// memory; without it (an unprivileged user, or root in a container
	// without that capability) the child stays dumpable.
	if err := Harden(HardenOptions{KeepDumpable: os.Getenv("SEALPROXY_TEST_UNDUMPABLE") != "1"}); err != nil {
		return err
	}
	// The holder built without runtime/secret is the control that shows
	// the copies the refusal (CheckMemoryProtection) is about.
	key, err := Open(context.Background(), ref, &Options{AllowPlaintext: true, AllowUnprotectedMemory: true})
	if err != nil {
		return err
	}
	defer key.Close()
	certPEM, err := os.ReadFile(os.Getenv("SEALPROXY_TEST_CERT"))
	if err != nil {
		return err
	}
	block, _ := pem.Decode(certPEM)
	if block == nil {
		return fmt.Errorf("no certificate in SEALPROXY_TEST_CERT")
	}
	// Plain keys do not kick the scrubber themselves; with a plain key, the
	// scrub only marks the point where the parent scans.
	var signer crypto.Signer = key
	if _, sealed := key.(*sealedKey); !sealed {
		signer = touching{key}
	}
	cert := tls.Certificate{Certificate: [][]byte{block.Bytes}, PrivateKey: signer}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}})
	if err != nil {
		return err
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				if err := c.(*tls.Conn).Handshake(); err != nil {
					return
				}
				io.Copy(c, c)
			}()
		}
	}()
	go func() {
		for {
			n, done := Scrubs()
			<-done
			fmt.Printf("scrubbed %d\n", n+1)
		}
	}()
	fmt.Printf("addr %s\n", ln.Addr())
	io.Copy(io.Discard, os.Stdin)
	return nil
}

// touching kicks the scrubber after each signature of a plain key.
type touching struct{ crypto.Signer }

func (k touching) Sign(rand io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	defer secmem.Used()
	return k.Signer.Sign(rand, digest, opts)
}

// needles are the byte strings that would betray a key.
type needle = testenv.Needle

func keyNeedles(t *testing.T, k crypto.Signer, pems ...[]byte) []needle {
	t.Helper()
	var ns []needle
	num := func(name string, x *big.Int, size int) {
		be := x.FillBytes(make([]byte, size))
		ns = append(ns, needle{Name: name + " big-endian", Bytes: be})
		ns = append(ns, needle{Name: name + " little-endian", Bytes: reversed(be)})
	}
	switch k := k.(type) {
	case *ecdsa.PrivateKey:
		//lint:ignore SA1019 the scan looks for the raw scalar itself
		num("scalar", k.D, (k.Curve.Params().N.BitLen()+7)/8)
		der, err := x509.MarshalECPrivateKey(k)
		if err != nil {
			t.Fatal(err)
		}
		ns = append(ns, needle{Name: "SEC 1 DER", Bytes: der})
	case *rsa.PrivateKey:
		num("d", k.D, k.Size())
		num("p", k.Primes[0], len(k.Primes[0].Bytes()))
		num("q", k.Primes[1], len(k.Primes[1].Bytes()))
		ns = append(ns, needle{Name: "PKCS#1 DER", Bytes: x509.MarshalPKCS1PrivateKey(k)})
	case ed25519.PrivateKey:
		seed := k.Seed()
		ns = append(ns, needle{Name: "seed", Bytes: seed}, needle{Name: "seed reversed", Bytes: reversed(seed)})
		// What crypto/ed25519 derives from the seed: the clamped scalar and
		// the nonce prefix.
		h := sha512.Sum512(seed)
		h[0] &= 248
		h[31] &= 127
		h[31] |= 64
		ns = append(ns, needle{Name: "expanded scalar", Bytes: h[:32]}, needle{Name: "expanded scalar reversed", Bytes: reversed(h[:32])},
			needle{Name: "nonce prefix", Bytes: h[32:]})
	}
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	ns = append(ns, needle{Name: "PKCS#8 DER", Bytes: der})
	for _, p := range pems {
		// The first line of base64 after the header: 48 bytes of DER.
		lines := strings.Split(string(p), "\n")
		ns = append(ns, needle{Name: "PEM text " + strings.Trim(lines[0], "-"), Bytes: []byte(lines[1])})
	}
	return ns
}

func reversed(b []byte) []byte {
	r := slices.Clone(b)
	slices.Reverse(r)
	return r
}

// hasPtraceCap reports whether this process has CAP_SYS_PTRACE (bit 19 of
// CapEff), which reading a non-dumpable process's memory needs.
func hasPtraceCap() bool {
	status, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return false
	}
	for line := range strings.Lines(string(status)) {
		if v, ok := strings.CutPrefix(line, "CapEff:"); ok {
			caps, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
			return err == nil && caps&(1<<19) != 0
		}
	}
	return false
}

// holder is a running child process.
type holder struct {
	cmd    *exec.Cmd
	stdin  io.Closer
	addr   string
	events chan string
}

func startHolder(t *testing.T, bin, ref, certFile string) *holder {
	t.Helper()
	cmd := exec.Command(bin, "-test.run=^$")
	cmd.Env = append(os.Environ(), keyholderEnv+"="+ref, "SEALPROXY_TEST_CERT="+certFile)
	if hasPtraceCap() {
		cmd.Env = append(cmd.Env, "SEALPROXY_TEST_UNDUMPABLE=1")
	}
	cmd.Stderr = os.Stderr
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
	h := &holder{cmd: cmd, stdin: stdin, events: make(chan string, 100)}
	t.Cleanup(func() {
		stdin.Close()
		cmd.Wait()
	})
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			h.events <- sc.Text()
		}
		close(h.events)
	}()
	select {
	case ev, ok := <-h.events:
		if !ok || !strings.HasPrefix(ev, "addr ") {
			t.Fatalf("key holder did not start (got %q)", ev)
		}
		h.addr = strings.TrimPrefix(ev, "addr ")
	case <-time.After(30 * time.Second):
		t.Fatal("key holder did not start in 30s")
	}
	return h
}

// handshakes runs n TLS 1.3 and TLS 1.2 handshakes against the holder.
func (h *holder) handshakes(t *testing.T, pool *x509.CertPool, n int) {
	t.Helper()
	for i := range n {
		v := uint16(tls.VersionTLS13)
		if i%2 == 1 {
			v = tls.VersionTLS12
		}
		c, err := tls.Dial("tcp", h.addr, &tls.Config{RootCAs: pool, ServerName: "localhost", MinVersion: v, MaxVersion: v})
		if err != nil {
			t.Fatalf("handshake %d: %v", i, err)
		}
		c.Close()
	}
}

// load runs n handshakes from each of g goroutines at once.
func (h *holder) load(t *testing.T, pool *x509.CertPool, g, n int) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make(chan error, g)
	for range g {
		wg.Go(func() {
			for range n {
				c, err := tls.Dial("tcp", h.addr, &tls.Config{RootCAs: pool, ServerName: "localhost"})
				if err != nil {
					errs <- err
					return
				}
				c.Close()
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("handshake under load: %v", err)
	}
}

// awaitScrub waits for the holder's first idle scrub after now.
func (h *holder) awaitScrub(t *testing.T) {
	t.Helper()
	// Drain scrubs reported before the handshakes ended.
	for {
		select {
		case ev := <-h.events:
			t.Logf("holder: %s (before the last handshake)", ev)
			continue
		default:
		}
		break
	}
	select {
	case ev, ok := <-h.events:
		if !ok {
			t.Fatal("key holder exited")
		}
		t.Logf("holder: %s", ev)
	case <-time.After(30 * time.Second):
		t.Fatal("key holder did not scrub within 30s of going idle")
	}
}

type scanCase struct {
	name string
	key  crypto.Signer
}

func scanKeys(t *testing.T) []scanCase {
	ec, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	var rk *rsa.PrivateKey
	for _, tk := range testKeys(t) {
		if r, ok := tk.signer.(*rsa.PrivateKey); ok {
			rk = r
		}
	}
	_, ed, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return []scanCase{{"P-256", ec}, {"RSA-2048", rk}, {"Ed25519", ed}}
}

// secretBinary returns a test binary built with GOEXPERIMENT=runtimesecret:
// this one if it was, else a fresh build of this package's tests.
func secretBinary(t *testing.T) string {
	t.Helper()
	if secmem.Erasing() {
		bin, err := os.Executable()
		if err != nil {
			t.Fatal(err)
		}
		return bin
	}
	goTool := testenv.LookTool(t, "go", "golang-go")
	bin := filepath.Join(t.TempDir(), "vault-secret.test")
	cmd := exec.Command(goTool, "test", "-c", "-o", bin, ".")
	cmd.Env = append(os.Environ(), "GOEXPERIMENT=runtimesecret", "GOFLAGS=")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building the test binary with GOEXPERIMENT=runtimesecret: %v\n%s", err, out)
	}
	return bin
}

// TestCustodyMemoryScan is the custody proof: a process holding sealed keys
// has no copy of them in its readable memory after serving handshakes and
// going idle, while the same scan of a process holding the key plainly
// (file:) finds it.
//
// The holder must be built with GOEXPERIMENT=runtimesecret, as sealproxy
// must be: without it the standard library's derived copies of the key
// (crypto/ecdsa's per-key cache, crypto/rsa's precomputed values, math/big
// temporaries) survive in freed heap memory. When this binary was built
// without the experiment, it scans a holder built from it too and logs
// what it finds, without failing.
func TestCustodyMemoryScan(t *testing.T) {
	testenv.SkipIfShort(t, "starts processes and scans their memory")
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	secretBin := secretBinary(t)
	srv := testenv.EmbeddedTang(t)
	dir := t.TempDir()
	for _, sc := range scanKeys(t) {
		t.Run(sc.name, func(t *testing.T) {
			der, err := x509.MarshalPKCS8PrivateKey(sc.key)
			if err != nil {
				t.Fatal(err)
			}
			keyPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
			cert, pool := selfSigned(t, sc.key)
			certFile := filepath.Join(dir, sc.name+".crt")
			if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Certificate[0]}), 0o600); err != nil {
				t.Fatal(err)
			}
			plainFile := filepath.Join(dir, sc.name+".pem")
			if err := os.WriteFile(plainFile, keyPEM, 0o600); err != nil {
				t.Fatal(err)
			}
			jwe, err := unlock.Encrypt(context.Background(), "tang", []byte(srv.Config()), keyPEM, nil)
			if err != nil {
				t.Fatal(err)
			}
			sealedFile := filepath.Join(dir, sc.name+".jwe")
			if err := os.WriteFile(sealedFile, jwe, 0o600); err != nil {
				t.Fatal(err)
			}
			needles := keyNeedles(t, sc.key, keyPEM)

			type holderCase struct {
				name, bin, ref string
				wantNone       bool // the sealed key with runtime/secret
				wantSome       bool // the plain control
			}
			cases := []holderCase{
				{"plain", secretBin, "file:" + plainFile, false, true},
				{"sealed", secretBin, "sealed:" + sealedFile, true, false},
			}
			if self != secretBin {
				cases = append(cases, holderCase{"sealed-without-runtimesecret", self, "sealed:" + sealedFile, false, false})
			}
			for _, c := range cases {
				t.Run(c.name, func(t *testing.T) {
					h := startHolder(t, c.bin, c.ref, certFile)
					h.handshakes(t, pool, 20)
					h.load(t, pool, 8, 25) // 200 concurrent handshakes
					h.awaitScrub(t)
					counts, scanned := testenv.ScanMemory(t, h.cmd.Process.Pid, needles, true)
					total := 0
					for _, n := range counts {
						total += n
					}
					t.Logf("%s key, %s: scanned %d MiB, %d occurrences %v",
						sc.name, c.name, scanned>>20, total, counts)
					if scanned == 0 {
						t.Fatal("scanned nothing")
					}
					if c.wantNone && total != 0 {
						t.Errorf("the sealed key's process memory holds %d copies of key material: %v", total, counts)
					}
					if c.wantSome && total == 0 {
						t.Errorf("the scan found nothing in a process holding the key in the clear: the scan is broken")
					}
				})
			}
		})
	}
}
