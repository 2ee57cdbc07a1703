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
