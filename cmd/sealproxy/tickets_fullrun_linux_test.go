//go:build linux

package main

import (
	"bytes"
	"context"
	"crypto/hkdf"
	"crypto/sha256"
	"crypto/tls"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/chacha20poly1305"

	"github.com/sealproxy/sealproxy/testenv"
	"github.com/sealproxy/sealproxy/unlock"
)

// TestSharedTicketsTwoInstances runs two real sealproxy processes (built
// with GOEXPERIMENT=runtimesecret) that share one ticket secret made by
// `seal ticket-secret` and recovered through Debian's tangd: a session
// instance A issued resumes on instance B, with openssl s_client
// (-sess_out on A, -sess_in on B: "Reused") over TLS 1.2 and 1.3, and
// with Go's client sharing one ClientSessionCache; and through the TLS
// pool's server services, where a third instance without [tickets] does
// not resume A's session, nor A its. Then both processes'
// readable memory is searched for the ticket secret and for the epoch
// keys derived from it: none may be found (the certificate, public and
// certainly in memory, is the scan's control).
func TestSharedTicketsTwoInstances(t *testing.T) {
	testenv.SkipIfShort(t, "builds seal and sealproxy, runs tangd, openssl and two daemons")
	openssl := testenv.LookTool(t, "openssl", "openssl")
	tg := testenv.RealTang(t)
	sealBin := testenv.BuildCommand(t, "seal", "GOEXPERIMENT=runtimesecret", "GOFLAGS=")
	proxyBin := testenv.BuildCommand(t, "sealproxy", "GOEXPERIMENT=runtimesecret", "GOFLAGS=")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	shared := t.TempDir()
	if out, err := exec.CommandContext(ctx, sealBin, "ticket-secret", "tang", tg.Config(), "-o", filepath.Join(shared, "tickets.jwe")).CombinedOutput(); err != nil {
		t.Fatalf("seal ticket-secret: %v: %s", err, out)
	}
	jwe, err := os.ReadFile(filepath.Join(shared, "tickets.jwe"))
	if err != nil {
		t.Fatal(err)
	}
	// The test's own copy of the secret, to search for.
	buf, err := unlock.Decrypt(ctx, jwe, nil)
	if err != nil {
		t.Fatal(err)
	}
	secret := bytes.Clone(buf.Bytes())
	buf.Destroy()

	ca := testenv.NewCA(t, "tickets CA")
	leaf := ca.Server(t, "localhost")
	keyJWE, err := unlock.Encrypt(ctx, "tang", []byte(tg.Config()), leaf.KeyPEM(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	caFile := filepath.Join(shared, "ca.pem")
	if err := os.WriteFile(caFile, ca.PEM, 0o644); err != nil {
		t.Fatal(err)
	}
	echo := testenv.StartEcho(t, nil).Addr
	type instance struct {
		name, listen, admin, pool string
		p                         *process
	}
	// start runs an instance; without tickets it has no [tickets] (its
	// listener and pool service keep random per-process ticket keys).
	start := func(name string, tickets bool) *instance {
		dir := t.TempDir()
		for file, data := range map[string][]byte{"web.crt": leaf.ChainPEM(), "web.key.jwe": keyJWE, "tickets.jwe": jwe} {
			if err := os.WriteFile(filepath.Join(dir, file), data, 0o600); err != nil {
				t.Fatal(err)
			}
		}
		in := &instance{name: name, listen: testenv.FreeAddr(t), admin: testenv.FreeAddr(t), pool: filepath.Join(dir, "pool.sock")}
		ticketsCfg := "[tickets]\nsource = \"sealed:tickets.jwe\"\nrotation = \"1h\"\naccept_past = 1\n"
		if !tickets {
			ticketsCfg = ""
		}
		cfg := filepath.Join(dir, "sealproxy.toml")
		if err := os.WriteFile(cfg, fmt.Appendf(nil, `[[key]]
name = "web"
cert = "web.crt"
source = "sealed:web.key.jwe"

[[listener]]
name = "web"
listen = %q
mode = "offload"
keys = ["web"]
backend = %q
[listener.tls]
min_version = "1.2"

%s
[admin]
listen = %q

[pool]
listen = "unix:%s"
mode = "0600"

[[pool.service]]
name = "web"
role = "server"
keys = ["web"]
users = ["%d"]
tls = { min_version = "1.2" }
`, in.listen, echo, ticketsCfg, in.admin, in.pool, os.Getuid()), 0o600); err != nil {
			t.Fatal(err)
		}
		in.p = startProcess(t, exec.CommandContext(ctx, proxyBin, "run", "--config", cfg))
		testenv.Eventually(t, time.Minute, name+" ready", func() bool {
			resp, err := http.Get("http://" + in.admin + "/readyz")
			if err != nil {
				return false
			}
			resp.Body.Close()
			return resp.StatusCode == http.StatusOK
		})
		if tickets && !strings.Contains(in.p.logs.String(), `key=[tickets]`) {
			t.Errorf("%s: no log line for the ticket secret:\n%s", name, in.p.logs.String())
		}
		return in
	}
	a, b := start("A", true), start("B", true)

	// openssl: a session from A, resumed on B.
	for _, ver := range []string{"-tls1_2", "-tls1_3"} {
		sess := filepath.Join(t.TempDir(), "sess.pem")
		sClient := func(addr string, resume bool) string {
			args := []string{"s_client", "-connect", addr, "-servername", "localhost", "-CAfile", caFile, ver}
			if resume {
				args = append(args, "-sess_in", sess)
			} else {
				args = append(args, "-sess_out", sess)
			}
			cmd := exec.CommandContext(ctx, openssl, args...)
			// Stay connected a moment: a TLS 1.3 ticket follows the handshake.
			cmd.Stdin = io.MultiReader(strings.NewReader("ping\n"), slowEOF(500*time.Millisecond))
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("openssl %s: %v\n%s", strings.Join(args, " "), err, out)
			}
			return string(out)
		}
		if out := sClient(a.listen, false); !strings.Contains(out, "New, TLSv1.") {
			t.Fatalf("%s on A: not a new session:\n%s", ver, out)
		}
		if out := sClient(b.listen, true); !strings.Contains(out, "Reused, TLSv1.") {
			t.Errorf("%s: A's session did not resume on B:\n%s", ver, out)
		}
	}

	// Go's client: one cache, A then B; and the ticket it holds opens
	// under the epoch key the test derives (so the scan below looks for
	// the right bytes).
	cache := &keepCache{ClientSessionCache: tls.NewLRUClientSessionCache(4)}
	for _, ver := range []uint16{tls.VersionTLS12, tls.VersionTLS13} {
		cc := &tls.Config{RootCAs: ca.Pool(), ServerName: "localhost", MinVersion: ver, MaxVersion: ver, ClientSessionCache: cache}
		for i, in := range []*instance{a, b, a} {
			if resumed := goRoundTrip(t, in.listen, cc); resumed != (i > 0) {
				t.Errorf("TLS %x, connection %d to %s: resumed %v", ver, i, in.name, resumed)
			}
		}
	}
	ticket, _, err := cache.last.ResumptionState()
	if err != nil || len(ticket) < 33 {
		t.Fatalf("no ticket: %v", err)
	}
	epoch := binary.BigEndian.Uint64(ticket[1:9])
	key := epochKey(t, secret, epoch)
	aead, err := chacha20poly1305.NewX(key)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := aead.Open(nil, ticket[9:33], ticket[33:], ticket[:33]); err != nil {
		t.Fatalf("the test's epoch key does not open the instances' ticket: %v", err)
	}

	// The pool's server service: a session A's pool issued resumes on
	// B's, and neither on C's (no [tickets]) nor, from C, back on A.
	c := start("C", false)
	for _, ver := range []uint16{tls.VersionTLS12, tls.VersionTLS13} {
		cc := &tls.Config{RootCAs: ca.Pool(), ServerName: "localhost", MinVersion: ver, MaxVersion: ver,
			ClientSessionCache: tls.NewLRUClientSessionCache(4)}
		for i, in := range []*instance{a, b, c, a} {
			if resumed := poolRoundTrip(t, in.pool, cc); resumed != (i == 1) {
				t.Errorf("pool, TLS %x, session %d on %s: resumed %v", ver, i, in.name, resumed)
			}
		}
	}

	needles := []testenv.Needle{{Name: "ticket secret", Bytes: secret}}
	for e := epoch - 2; e <= epoch+1; e++ {
		needles = append(needles, testenv.Needle{Name: fmt.Sprintf("epoch %+d key", int64(e-epoch)), Bytes: epochKey(t, secret, e)})
	}
	control := testenv.Needle{Name: "certificate (control)", Bytes: leaf.Chain[0]}
	time.Sleep(time.Second) // let the last handshakes' goroutines end
	for _, in := range []*instance{a, b} {
		counts, scanned := testenv.ScanMemory(t, in.p.cmd.Process.Pid, append(needles, control), true)
		t.Logf("%s: %d bytes scanned: %v", in.name, scanned, counts)
		if counts[control.Name] == 0 {
			t.Fatalf("%s: the scan did not find the certificate: it sees nothing", in.name)
		}
		for _, n := range needles {
			if counts[n.Name] != 0 {
				t.Errorf("%s: the %s is in readable memory (%d copies)", in.name, n.Name, counts[n.Name])
			}
		}
	}
}

// epochKey derives an epoch's ticket key as vault does (docs/tickets.md).
func epochKey(t *testing.T, secret []byte, epoch uint64) []byte {
	t.Helper()
	info := binary.BigEndian.AppendUint64([]byte("sealproxy session ticket key v1 epoch "), epoch)
	k, err := hkdf.Key(sha256.New, secret, nil, string(info), 32)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// keepCache remembers the last session it was given.
type keepCache struct {
	tls.ClientSessionCache
	last *tls.ClientSessionState
}

func (c *keepCache) Put(key string, cs *tls.ClientSessionState) {
	if cs != nil {
		c.last = cs
	}
	c.ClientSessionCache.Put(key, cs)
}

// goRoundTrip echoes a line over a new TLS connection and reports
// whether the session resumed.
func goRoundTrip(t *testing.T, addr string, cc *tls.Config) bool {
	t.Helper()
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, cc)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, "x"); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 1)
	// Reading processes the TLS 1.3 ticket that follows the handshake.
	if _, err := io.ReadFull(c, got); err != nil || string(got) != "x" {
		t.Fatalf("echo %q: %v", got, err)
	}
	return c.ConnectionState().DidResume
}

// poolRoundTrip runs a session through the pool's service "web" (the
// remote end a TLS client with cc), echoes a byte through the
// application and reports whether the session resumed.
func poolRoundTrip(t *testing.T, sock string, cc *tls.Config) bool {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	plain, remote, _, err := poolSession(ctx, sock, "web", cc)
	if err != nil {
		t.Fatalf("pool session: %v", err)
	}
	defer plain.Close()
	defer remote.Close()
	remote.SetDeadline(time.Now().Add(10 * time.Second))
	plain.SetDeadline(time.Now().Add(10 * time.Second))
	got := make([]byte, 1)
	if _, err := io.WriteString(remote, "x"); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(plain, got); err != nil || string(got) != "x" {
		t.Fatalf("application read %q: %v", got, err)
	}
	if _, err := plain.Write(got); err != nil {
		t.Fatal(err)
	}
	// Reading processes the TLS 1.3 ticket that follows the handshake.
	if _, err := io.ReadFull(remote, got); err != nil || string(got) != "x" {
		t.Fatalf("remote read %q: %v", got, err)
	}
	return remote.ConnectionState().DidResume
}

// slowEOF is a reader that ends after d.
type slowEOF time.Duration

func (d slowEOF) Read([]byte) (int, error) {
	time.Sleep(time.Duration(d))
	return 0, io.EOF
}
