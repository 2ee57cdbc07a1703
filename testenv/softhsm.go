package testenv

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"github.com/sealproxy/sealproxy/vault/keyref"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// SoftHSM is a SoftHSM2 token for one test, in its own directory with its
// own SOFTHSM2_CONF (set in the test's environment, so tests using it
// cannot run in parallel). It holds:
//
//	label    id   key                           certificate
//	ec256    01   EC P-256, generated on token  yes
//	rsa2048  02   RSA-2048, generated on token  yes
//	ec384    03   EC P-384, imported (PKCS#8)   yes
//	nocert   04   EC P-256, generated on token  none
//	filecert 05   EC P-256, imported (PKCS#8)   none on the token: a file (CertFiles)
//	nopub    06   EC P-256, imported with --no-public-key: no public half on the token
//	badpub   07   EC P-256, imported with --no-public-key, and the public-key object
//	              of another key written under its id; its certificate file is that
//	              other key's (what a token shows of a key is only a claim)
//
// The certificates are for 127.0.0.1 and localhost, issued by CA. Each
// is also a PEM file (CertFiles), as a [[key]]'s cert names it.
type SoftHSM struct {
	Module  string // path of libsofthsm2.so
	Conf    string // the SOFTHSM2_CONF file
	Token   string // token label
	Slot    int    // slot id of the token
	PIN     string // user PIN (also in PINFile)
	PINFile string
	CA      *x509.CertPool
	// Certs maps a key label to its certificate on the token.
	Certs map[string]*x509.Certificate
	// Imported is the P-384 key imported as ec384 (so tests can compare).
	Imported *ecdsa.PrivateKey
	// CertFiles maps a key label to its certificate as a PEM file.
	CertFiles map[string]string
}

// SoftHSMModules lists where Debian and others install the module.
var SoftHSMModules = []string{
	"/usr/lib/softhsm/libsofthsm2.so",
	"/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
	"/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
	"/usr/local/lib/softhsm/libsofthsm2.so",
}

// NewSoftHSM creates the token. It skips the test when softhsm2-util or
// pkcs11-tool is missing (fails it under SEALPROXY_REQUIRE_INTEROP=1).
func NewSoftHSM(t testing.TB) *SoftHSM {
	t.Helper()
	util := LookTool(t, "softhsm2-util", "softhsm2")
	tool := LookTool(t, "pkcs11-tool", "opensc")
	module := ""
	for _, m := range SoftHSMModules {
		if _, err := os.Stat(m); err == nil {
			module = m
			break
		}
	}
	if module == "" {
		LookTool(t, SoftHSMModules[0], "softhsm2")
	}
	dir := t.TempDir()
	tokens := filepath.Join(dir, "tokens")
	if err := os.Mkdir(tokens, 0o700); err != nil {
		t.Fatal(err)
	}
	conf := filepath.Join(dir, "softhsm2.conf")
	confText := fmt.Sprintf("directories.tokendir = %s\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n", tokens)
	if err := os.WriteFile(conf, []byte(confText), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("SOFTHSM2_CONF", conf)

	h := &SoftHSM{
		Module:  module,
		Conf:    conf,
		Token:   "sealproxy-test",
		PIN:     "pin-" + randomHex(t, 8),
		PINFile: filepath.Join(dir, "pin"),
		Certs:   map[string]*x509.Certificate{},

		CertFiles: map[string]string{},
	}
	if err := os.WriteFile(h.PINFile, []byte(h.PIN+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	run := func(name string, args ...string) []byte {
		t.Helper()
		cmd := exec.Command(name, args...)
		cmd.Env = append(os.Environ(), "SOFTHSM2_CONF="+conf)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("%s %s: %v\n%s", filepath.Base(name), strings.ReplaceAll(strings.Join(args, " "), h.PIN, "PIN"), err, out)
		}
		return out
	}
	out := run(util, "--init-token", "--free", "--label", h.Token, "--pin", h.PIN, "--so-pin", "so-"+h.PIN)
	// "The token has been initialized and is reassigned to slot 1234"
	if _, after, ok := strings.Cut(string(out), "reassigned to slot "); ok {
		if _, err := fmt.Sscan(after, &h.Slot); err != nil {
			t.Fatalf("reading the token's slot from %q: %v", out, err)
		}
	} else {
		t.Fatalf("softhsm2-util did not say which slot the token is in: %s", out)
	}
	p11 := func(args ...string) []byte {
		t.Helper()
		return run(tool, append([]string{"--module", module, "--token-label", h.Token, "--login", "--pin", h.PIN}, args...)...)
	}
	p11("--keypairgen", "--key-type", "EC:prime256v1", "--id", "01", "--label", "ec256")
	p11("--keypairgen", "--key-type", "rsa:2048", "--id", "02", "--label", "rsa2048")
	p11("--keypairgen", "--key-type", "EC:prime256v1", "--id", "04", "--label", "nocert")

	imported, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	h.Imported = imported
	der, err := x509.MarshalPKCS8PrivateKey(imported)
	if err != nil {
		t.Fatal(err)
	}
	keyFile := filepath.Join(dir, "ec384.pem")
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	run(util, "--import", keyFile, "--token", h.Token, "--pin", h.PIN, "--id", "03", "--label", "ec384")
	if err := os.Remove(keyFile); err != nil {
		t.Fatal(err)
	}
	// filecert: imported with its public key and no certificate object;
	// its certificate is only a file.
	fileKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	if der, err = x509.MarshalPKCS8PrivateKey(fileKey); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	run(util, "--import", keyFile, "--token", h.Token, "--pin", h.PIN, "--id", "05", "--label", "filecert")
	run(util, "--import", keyFile, "--token", h.Token, "--pin", h.PIN, "--id", "06", "--label", "nopub", "--no-public-key")
	if err := os.Remove(keyFile); err != nil {
		t.Fatal(err)
	}
	// badpub: a private key and, under its id, another key's public half.
	badKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	if der, err = x509.MarshalPKCS8PrivateKey(badKey); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	run(util, "--import", keyFile, "--token", h.Token, "--pin", h.PIN, "--id", "07", "--label", "badpub", "--no-public-key")
	if err := os.Remove(keyFile); err != nil {
		t.Fatal(err)
	}
	otherKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	otherPub, err := x509.MarshalPKIXPublicKey(otherKey.Public())
	if err != nil {
		t.Fatal(err)
	}
	otherFile := filepath.Join(dir, "other.pub.der")
	if err := os.WriteFile(otherFile, otherPub, 0o600); err != nil {
		t.Fatal(err)
	}
	p11("--write-object", otherFile, "--type", "pubkey", "--id", "07", "--label", "badpub")

	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "sealproxy test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, caKey.Public(), caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		t.Fatal(err)
	}
	h.CA = x509.NewCertPool()
	h.CA.AddCert(ca)

	for i, k := range []struct{ label, id string }{{"ec256", "01"}, {"rsa2048", "02"}, {"ec384", "03"}} {
		var pub crypto.PublicKey = imported.Public()
		if k.label != "ec384" { // pkcs11-tool 0.23 cannot read a P-384 public key back
			pubDER := p11("--read-object", "--type", "pubkey", "--id", k.id)
			if pub, err = x509.ParsePKIXPublicKey(pubDER); err != nil {
				t.Fatalf("parsing the public key of %s read from the token: %v", k.label, err)
			}
		}
		leaf := issue(t, ca, caKey, pub, k.label, int64(i+2))
		certFile := filepath.Join(dir, k.label+".crt")
		if err := os.WriteFile(certFile, leaf.Raw, 0o600); err != nil {
			t.Fatal(err)
		}
		p11("--write-object", certFile, "--type", "cert", "--id", k.id, "--label", k.label)
		h.Certs[k.label] = leaf
	}
	h.Certs["filecert"] = issue(t, ca, caKey, fileKey.Public(), "filecert", 5)
	h.Certs["badpub"] = issue(t, ca, caKey, otherKey.Public(), "badpub", 7)
	for label, leaf := range h.Certs {
		f := filepath.Join(dir, label+".pem")
		if err := os.WriteFile(f, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: leaf.Raw}), 0o600); err != nil {
			t.Fatal(err)
		}
		h.CertFiles[label] = f
	}
	return h
}

func issue(t testing.TB, ca *x509.Certificate, caKey crypto.Signer, pub crypto.PublicKey, cn string, serial int64) *x509.Certificate {
	t.Helper()
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial),
		Subject:      pkix.Name{CommonName: cn},
		DNSNames:     []string{"localhost"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, pub, caKey)
	if err != nil {
		t.Fatalf("issuing a certificate for %s: %v", cn, err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return leaf
}

func randomHex(t testing.TB, n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// URI returns the pkcs11: reference of the key labelled object, with the
// PIN from PINFile.
func (h *SoftHSM) URI(object string) string {
	return keyref.Format(keyref.SchemePKCS11, fmt.Sprintf("token=%s;object=%s?module-path=%s&pin-source=%s", h.Token, object, h.Module, keyref.File(h.PINFile)))
}

// URIWithPIN returns the reference with the PIN inline (pin-value).
func (h *SoftHSM) URIWithPIN(object, pin string) string {
	return keyref.Format(keyref.SchemePKCS11, fmt.Sprintf("token=%s;object=%s?module-path=%s&pin-value=%s", h.Token, object, h.Module, pin))
}

// Contains reports whether b mentions the PIN.
func (h *SoftHSM) Contains(b []byte) bool { return bytes.Contains(b, []byte(h.PIN)) }
