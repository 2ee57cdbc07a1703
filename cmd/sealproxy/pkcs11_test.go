//go:build cgo

package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sealproxy/sealproxy/testenv"
	"github.com/sealproxy/sealproxy/unlock"
	"github.com/sealproxy/sealproxy/unlock/gate"
)

// hsmKey is the [[key]] table of a SoftHSM key with its certificate file
// and the PIN source pin (e.g. "pin-source=sealed:pin.jwe").
func hsmKey(h *testenv.SoftHSM, name, label, pin string) string {
	source := fmt.Sprintf("pkcs11:token=%s;object=%s?module-path=%s&%s", h.Token, label, h.Module, pin)
	return fmt.Sprintf("[[key]]\nname = %q\ncert = %q\nsource = %q\n\n", name, h.CertFiles[label], source)
}

// servedByToken completes a TLS handshake with addr (the token key signs
// it: the client checks the signature against the certificate file) and
// an echo through it, and returns the certificate served.
func servedByToken(t *testing.T, h *testenv.SoftHSM, addr, msg string) []byte {
	t.Helper()
	c, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: h.CA, ServerName: "localhost", MinVersion: tls.VersionTLS13})
	if err != nil {
		t.Fatalf("dialing %s: %v", addr, err)
	}
	defer c.Close()
	io.WriteString(c, msg)
	c.CloseWrite()
	if got, err := io.ReadAll(c); err != nil || string(got) != msg {
		t.Fatalf("echo through %s: %q, %v", addr, got, err)
	}
	return c.ConnectionState().PeerCertificates[0].Raw
}

// TestRunPKCS11FileCertificate: a key imported with softhsm2-util
// --import, with no certificate object on the token, serves TLS with the
// certificate file of its [[key]].
func TestRunPKCS11FileCertificate(t *testing.T) {
	h := testenv.NewSoftHSM(t)
	f := newFixture(t)
	path := f.write(hsmKey(h, "hsm", "filecert", "pin-source=file:"+h.PINFile) + f.listener("hsm", "127.0.0.1:0"))
	r := startDaemon(t, &daemon{}, path)
	r.logs.WaitFor(t, time.Minute, "msg=listening listener=hsm")
	if got := servedByToken(t, h, r.addr("hsm"), "file certificate"); !bytes.Equal(got, h.Certs["filecert"].Raw) {
		t.Fatal("not serving the certificate file")
	}
}

// TestRunPKCS11Hints: each PKCS#11 failure at start-up gets the hint of
// its cause, never the Tang hint, and no output shows the PIN.
func TestRunPKCS11Hints(t *testing.T) {
	h := testenv.NewSoftHSM(t)
	tangSrv := testenv.EmbeddedTang(t)
	f := newFixture(t)
	const wrongPIN = "wrong-sealed-pin-93ad"
	sealPINFile(t, tangSrv.Config(), f.dir, "wrong.jwe", wrongPIN)
	sealPINFile(t, tangSrv.Config(), f.dir, "pin.jwe", h.PIN)
	pinFile := "pin-source=file:" + h.PINFile
	const tangHint = "reaches the Tang servers"
	cases := []struct {
		name, key, hint string
		tangDown        bool
	}{
		{"wrong sealed PIN", hsmKey(h, "hsm", "filecert", "pin-source=sealed:wrong.jwe"), "hint: check the PIN of the pkcs11: key", false},
		{"no such token", strings.Replace(hsmKey(h, "hsm", "filecert", pinFile), "token="+h.Token, "token=no-such-token", 1), "hint: no token matches the pkcs11: key", false},
		{"no such object", strings.Replace(hsmKey(h, "hsm", "filecert", pinFile), "object=filecert", "object=no-such-key", 1), "hint: the token has no such key", false},
		{"not a module", strings.Replace(hsmKey(h, "hsm", "filecert", pinFile), h.Module, h.PINFile, 1), "hint: check the module-path", false},
		{"another key's certificate", strings.Replace(hsmKey(h, "hsm", "filecert", pinFile), h.CertFiles["filecert"], h.CertFiles["ec256"], 1), "hint: each [[key]]'s cert must be the certificate", false},
		{"sealed PIN, Tang down", hsmKey(h, "hsm", "filecert", "pin-source=sealed:pin.jwe"), "hint: check that this host reaches the Tang servers", true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if c.tangDown {
				tangSrv.Stop()
			}
			path := f.write(c.key + f.listener("hsm", "127.0.0.1:0") + "[unlock]\ntimeout = \"1s\"\nretry_backoff = \"50ms\"\n")
			_, stderr, code := runCLI(t, "run", "--config", path)
			if code != exitUnlock {
				t.Errorf("exit code %d, want %d", code, exitUnlock)
			}
			if !strings.Contains(stderr, c.hint) {
				t.Errorf("stderr lacks %q:\n%s", c.hint, stderr)
			}
			if !c.tangDown && strings.Contains(stderr, tangHint) {
				t.Errorf("a PKCS#11 failure gets the Tang hint:\n%s", stderr)
			}
			if c.tangDown && strings.Contains(stderr, "check the PIN") {
				t.Errorf("a Tang failure gets the PIN hint:\n%s", stderr)
			}
			if strings.Contains(stderr, h.PIN) || strings.Contains(stderr, wrongPIN) {
				t.Errorf("a PIN appears in the output:\n%s", stderr)
			}
		})
	}
}

// sealPINFile writes pin sealed with pinConfig (a tang pin's
// configuration) to dir/name, as `echo PIN | seal encrypt tang CFG`.
func sealPINFile(t *testing.T, pinConfig, dir, name, pin string) {
	t.Helper()
	jwe, err := unlock.Encrypt(context.Background(), "tang", []byte(pinConfig), []byte(pin+"\n"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, name), jwe, 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestStartSealedPINOneApproval: a sealed key and a SoftHSM key whose PIN
// is sealed, both to a gate, form one approval request: the operator
// approves one code, both keys open and serve, and the log never shows
// the PIN.
func TestStartSealedPINOneApproval(t *testing.T) {
	h := testenv.NewSoftHSM(t)
	g := testenv.StartGate(t, heldGate)
	url, pinCfg, ready := g.URL, g.PinConfig(), g.Ready
	f := newFixture(t)
	f.sealedTo("web", pinCfg)
	sealPINFile(t, pinCfg, f.dir, "pin.jwe", h.PIN)
	path := f.write(key("web") + hsmKey(h, "hsm", "filecert", "pin-source=sealed:pin.jwe") +
		f.listener("web", "127.0.0.1:0") + f.listener("hsm", "127.0.0.1:0"))
	n := listenNotify(t)
	r := startDaemon(t, &daemon{}, path)

	var req gate.Request
	select {
	case req = <-ready:
	case <-time.After(time.Minute):
		t.Fatalf("no request at the gate:\n%s", r.logs.String())
	}
	// One code for both, the keys in file order.
	r.logs.WaitFor(t, time.Minute, `msg="waiting for approval" key=web,hsm tang_url=`+url+` code=`+req.Code)
	if _, err := g.Approve(req.Code, "alice", "test"); err != nil {
		t.Fatal(err)
	}
	n.expect(t, "READY=1")
	f.roundTrip(r.addr("web"), "web", "sealed key")
	if got := servedByToken(t, h, r.addr("hsm"), "sealed PIN"); !bytes.Equal(got, h.Certs["filecert"].Raw) {
		t.Fatal("not serving the token key's certificate file")
	}
	select {
	case extra := <-ready:
		t.Errorf("a second request at the gate (code %s): one approval must cover the key and the PIN", extra.Code)
	default:
	}
	if pending := g.Pending(); len(pending) != 0 {
		t.Errorf("requests still pending at the gate: %v", pending)
	}
	if h.Contains([]byte(r.logs.String())) {
		t.Errorf("the PIN appears in the log:\n%s", r.logs.String())
	}
}
