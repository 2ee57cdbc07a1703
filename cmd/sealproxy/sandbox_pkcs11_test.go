//go:build linux && cgo

package main

import (
	"bytes"
	"crypto/tls"
	"encoding/pem"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sealproxy/sealproxy/testenv"
)

// TestSandboxedPKCS11 runs the built binary confined with a SoftHSM key:
// it signs handshakes after the sandbox is applied, and a reload that
// switches to another key on the token (found and used through the
// module, which reads its token directory) serves the new certificate.
func TestSandboxedPKCS11(t *testing.T) {
	testenv.NeedLandlock(t)
	h := testenv.NewSoftHSM(t) // sets SOFTHSM2_CONF, which the child inherits
	bin := testenv.BuildCommand(t, "sealproxy")
	f := newFixture(t)
	for name, label := range map[string]string{"hsm1.crt": "ec256", "hsm2.crt": "rsa2048"} {
		data := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: h.Certs[label].Raw})
		if err := os.WriteFile(filepath.Join(f.dir, name), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// The PIN beside the configuration: the token directory is then
	// reachable only through the policy's SoftHSM rule.
	pin := filepath.Join(f.dir, "pin")
	if err := os.WriteFile(pin, []byte(h.PIN+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	addr := testenv.FreeAddr(t)
	conf := func(cert, label string) string {
		source := fmt.Sprintf("pkcs11:token=%s;object=%s?module-path=%s&pin-source=file:%s", h.Token, label, h.Module, pin)
		return fmt.Sprintf("[sandbox]\nlandlock = \"required\"\n\n[[key]]\nname = \"hsm\"\ncert = %q\nsource = %q\n\n", cert, source) +
			fmt.Sprintf("[[listener]]\nname = \"web\"\nlisten = %q\nmode = \"offload\"\nkeys = [\"hsm\"]\nbackend = %q\n", addr, f.backend)
	}
	path := f.write(conf("hsm1.crt", "ec256"))
	p := startConfined(t, bin, path)
	logs := p.logs
	served := func(msg string) []byte {
		t.Helper()
		c, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: h.CA, ServerName: "localhost"})
		if err != nil {
			t.Fatalf("dialing: %v\n%s", err, logs.String())
		}
		defer c.Close()
		io.WriteString(c, msg)
		c.CloseWrite()
		if got, err := io.ReadAll(c); err != nil || string(got) != msg {
			t.Fatalf("echo: %q, %v", got, err)
		}
		return c.ConnectionState().PeerCertificates[0].Raw
	}
	if !bytes.Equal(served("token key"), h.Certs["ec256"].Raw) {
		t.Fatal("not serving the ec256 certificate")
	}

	f.write(conf("hsm2.crt", "rsa2048"))
	p.signal(syscall.SIGHUP)
	logs.WaitFor(t, time.Minute, "msg=reloaded")
	if !bytes.Equal(served("other token key"), h.Certs["rsa2048"].Raw) {
		t.Fatalf("after the reload: not serving the rsa2048 certificate\n%s", logs.String())
	}
	p.signal(syscall.SIGTERM)
	p.waitExit(time.Minute, "SIGTERM")
}

// TestSandboxedSealedPIN: a SoftHSM key whose PIN is sealed to Tang, in a
// directory of its own, opens under the sandbox; a reload to another key
// of the token with the same sealed PIN reads and recovers that file
// again after the sandbox was applied (the reference's Needs allow it),
// while a reload naming a sealed PIN in a directory the start-up did not
// name fails and the old key keeps serving. The log never shows the PIN.
func TestSandboxedSealedPIN(t *testing.T) {
	testenv.NeedLandlock(t)
	h := testenv.NewSoftHSM(t)
	tangSrv := testenv.EmbeddedTang(t)
	bin := testenv.BuildCommand(t, "sealproxy")
	f := newFixture(t)
	pins, outside := t.TempDir(), t.TempDir()
	sealPINFile(t, tangSrv.Config(), pins, "pin.jwe", h.PIN)
	sealPINFile(t, tangSrv.Config(), outside, "pin.jwe", h.PIN)
	addr := testenv.FreeAddr(t)
	conf := func(label, pinDir string) string {
		return "[sandbox]\nlandlock = \"required\"\n\n" +
			hsmKey(h, "hsm", label, "pin-source=sealed:"+filepath.Join(pinDir, "pin.jwe")) +
			fmt.Sprintf("[[listener]]\nname = \"web\"\nlisten = %q\nmode = \"offload\"\nkeys = [\"hsm\"]\nbackend = %q\n", addr, f.backend)
	}
	path := f.write(conf("filecert", pins))
	p := startConfined(t, bin, path)
	logs := p.logs
	if got := servedByToken(t, h, addr, "sealed PIN"); !bytes.Equal(got, h.Certs["filecert"].Raw) {
		t.Fatal("not serving the filecert certificate")
	}

	f.write(conf("ec256", pins))
	p.signal(syscall.SIGHUP)
	logs.WaitFor(t, time.Minute, "msg=reloaded")
	if got := servedByToken(t, h, addr, "same sealed PIN, another key"); !bytes.Equal(got, h.Certs["ec256"].Raw) {
		t.Fatalf("after the reload: not serving the ec256 certificate\n%s", logs.String())
	}

	f.write(conf("filecert", outside))
	p.signal(syscall.SIGHUP)
	logs.WaitFor(t, time.Minute, "reload failed; the previous configuration stays")
	if want := filepath.Join(outside, "pin.jwe") + " is outside the paths allowed at start-up"; !strings.Contains(logs.String(), want) {
		t.Errorf("the refused reload does not say %q:\n%s", want, logs.String())
	}
	if got := servedByToken(t, h, addr, "still the old key"); !bytes.Equal(got, h.Certs["ec256"].Raw) {
		t.Fatalf("after the refused reload: not serving the ec256 certificate\n%s", logs.String())
	}
	p.signal(syscall.SIGTERM)
	p.waitExit(time.Minute, "SIGTERM")
	if h.Contains([]byte(logs.String())) {
		t.Errorf("the PIN appears in the log:\n%s", logs.String())
	}
}
