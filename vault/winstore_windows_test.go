package vault

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"fmt"
	"math/big"
	"os"
	"strings"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/windows"
)

// These tests run the certificate store half of winstore: opening a
// store, enumerating and selecting a certificate, and the errors on the
// way. They add certificates without private keys to CurrentUser\My (and
// remove them), so selection succeeds and opening then stops at the key.
// Signing needs a CNG key, which Wine 8's ncrypt cannot hold (NCryptOpenKey
// is a stub): TestWinstoreSigns runs it on a real Windows host.

// addCert adds a self-signed certificate (no private key) for cn to
// CurrentUser\My for the test's duration and returns its SHA-1 thumbprint.
func addCert(t *testing.T, cn string, notBefore, notAfter time.Time) string {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    notBefore,
		NotAfter:     notAfter,
	}, &x509.Certificate{Subject: pkix.Name{CommonName: cn}}, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha1.Sum(der)
	c, err := windows.CertCreateCertificateContext(windows.X509_ASN_ENCODING|windows.PKCS_7_ASN_ENCODING, &der[0], uint32(len(der)))
	if err != nil {
		t.Fatal(err)
	}
	defer windows.CertFreeCertificateContext(c)
	// The store is closed after each change: Wine writes a registry
	// store back only then.
	store := openTestStore(t)
	err = windows.CertAddCertificateContextToStore(store, c, windows.CERT_STORE_ADD_NEW, nil)
	windows.CertCloseStore(store, 0)
	if err != nil {
		t.Fatalf("adding a certificate to CurrentUser\\My: %v", err)
	}
	t.Cleanup(func() {
		store := openTestStore(t)
		defer windows.CertCloseStore(store, 0)
		var prev *windows.CertContext
		for {
			c, err := windows.CertEnumCertificatesInStore(store, prev)
			if err != nil {
				t.Errorf("removing the test certificate %s: not found", cn)
				return
			}
			if sha1.Sum(unsafe.Slice(c.EncodedCert, c.Length)) == sum {
				if err := windows.CertDeleteCertificateFromStore(windows.CertDuplicateCertificateContext(c)); err != nil {
					t.Errorf("removing the test certificate %s: %v", cn, err)
				}
				windows.CertFreeCertificateContext(c)
				return
			}
			prev = c
		}
	})
	return hex.EncodeToString(sum[:])
}

func openTestStore(t *testing.T) windows.Handle {
	t.Helper()
	name, _ := windows.UTF16PtrFromString("My")
	store, err := windows.CertOpenStore(windows.CERT_STORE_PROV_SYSTEM_W, 0, 0,
		windows.CERT_SYSTEM_STORE_CURRENT_USER, uintptr(unsafe.Pointer(name)))
	if err != nil {
		t.Fatalf("opening CurrentUser\\My for writing: %v", err)
	}
	return store
}

// uniqueCN names certificates so that runs (and a real host's own
// certificates) never collide.
func uniqueCN(t *testing.T, what string) string {
	var b [6]byte
	rand.Read(b[:])
	return fmt.Sprintf("%s-%x.sealproxy-test.invalid", what, b)
}

func TestWinstoreSelectsFromStore(t *testing.T) {
	now := time.Now()
	cn := uniqueCN(t, "web")
	// Two certificates for the name (which one wins is TestWinstoreSelect's
	// job): both references get past selection, and the key acquisition
	// after it fails, since the certificates have no private key.
	addCert(t, cn, now.Add(-48*time.Hour), now.Add(24*time.Hour))
	newer := addCert(t, cn, now.Add(-time.Hour), now.Add(24*time.Hour))
	for _, ref := range []string{
		"winstore:location=CurrentUser;store=My;cn=" + cn,
		"winstore:location=CurrentUser;store=My;thumbprint=" + newer,
	} {
		_, err := Open(t.Context(), ref, nil)
		if err == nil {
			t.Fatalf("%s: opened a certificate without a private key", ref)
		}
		if !strings.Contains(err.Error(), "private key") {
			t.Fatalf("%s: %v; want selection to succeed and the missing private key reported", ref, err)
		}
		t.Logf("%s: %v", ref, err)
	}
}

func TestWinstoreErrors(t *testing.T) {
	now := time.Now()
	expired := uniqueCN(t, "expired")
	addCert(t, expired, now.Add(-48*time.Hour), now.Add(-24*time.Hour))
	for _, c := range []struct{ ref, want string }{
		{"winstore:location=CurrentUser;store=My;cn=" + uniqueCN(t, "nobody"), `no certificate in CurrentUser\My matches`},
		{"winstore:location=CurrentUser;store=My;cn=" + expired, "none valid now"},
		{"winstore:location=CurrentUser;store=My;thumbprint=" + strings.Repeat("00", 20), `no certificate in CurrentUser\My matches`},
		{"winstore:location=CurrentUser;store=SealproxyNoSuchStore;cn=x", "opening the certificate store"},
	} {
		_, err := Open(t.Context(), c.ref, nil)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v; want an error containing %q", c.ref, err, c.want)
		}
		if err != nil && !strings.Contains(err.Error(), "opening key winstore:") {
			t.Errorf("%s: %v; the error does not name the reference", c.ref, err)
		}
	}
}

// TestWinstoreSigns signs with a real CNG key on a Windows host: set
// SEALPROXY_WINSTORE_TEST_REF to a reference whose certificate has a
// private key this user may use (docs/windows.md). Wine 8 cannot sign.
func TestWinstoreSigns(t *testing.T) {
	ref := os.Getenv("SEALPROXY_WINSTORE_TEST_REF")
	if ref == "" {
		t.Skip("set SEALPROXY_WINSTORE_TEST_REF=winstore:... on a Windows host with a CNG key (Wine 8's ncrypt cannot sign)")
	}
	k, err := Open(t.Context(), ref, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer k.Close()
	digest := sha256.Sum256([]byte("sealproxy winstore test"))
	sig, err := k.Sign(rand.Reader, digest[:], crypto.SHA256)
	if err != nil {
		t.Fatal(err)
	}
	if pub, ok := k.Public().(*ecdsa.PublicKey); ok && !ecdsa.VerifyASN1(pub, digest[:], sig) {
		t.Fatal("the signature does not verify")
	}
	if c, ok := k.(interface{ Certificate() *x509.Certificate }); ok {
		if err := c.Certificate().CheckSignatureFrom(c.Certificate()); err != nil {
			t.Logf("certificate not self-signed: %v", err)
		}
	}
}
