package testenv

import (
	"cmp"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/crypto/ocsp"
)

// CA is a throw-away certificate authority for tests (ECDSA P-256).
type CA struct {
	Cert *x509.Certificate
	Key  crypto.Signer
	// PEM is the CA certificate, as a bundle file holds it.
	PEM []byte
}

var serial atomic.Int64

// NewCA makes a CA whose subject CN is name.
func NewCA(t testing.TB, name string) *CA {
	t.Helper()
	ca, err := GenerateCA(name)
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

// GenerateCA is NewCA for callers without a *testing.T (the tools).
func GenerateCA(name string) (*CA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(serial.Add(1)),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(365 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("CA certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &CA{Cert: cert, Key: key, PEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}, nil
}

// Pool is a certificate pool holding only this CA.
func (ca *CA) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.Cert)
	return p
}

// KeyPEM is the CA's private key as PKCS#8 PEM (for tools that sign as
// the CA, such as an openssl ocsp responder).
func (ca *CA) KeyPEM(t testing.TB) []byte {
	t.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(ca.Key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
}

// WriteCA writes the CA certificate to dir/name and returns the path.
func (ca *CA) WriteCA(t testing.TB, dir, name string) string {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, ca.PEM, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// LeafOptions describe a certificate to issue.
type LeafOptions struct {
	CN     string
	DNS    []string
	IPs    []net.IP
	URIs   []string
	OU     []string
	Client bool // client authentication instead of server
	// OCSPServer lists responder URLs (authority information access).
	OCSPServer []string
	// CRLDistributionPoints lists CRL URLs.
	CRLDistributionPoints []string
	// Validity is how long the certificate is valid from now (it is
	// valid from an hour ago); zero: 90 days, beyond the 30-day expiry
	// warning of sealproxy. An audit (testssl.sh) flags one that ends
	// within 60 days.
	Validity time.Duration
	// NotAfter, when set, is the end of validity instead (a test of the
	// expiry warning sets it).
	NotAfter time.Time
}

// Leaf is an issued certificate and its key.
type Leaf struct {
	Cert  *x509.Certificate
	Chain [][]byte // DER, leaf first
	Key   crypto.Signer
}

// Server issues a server certificate for names, valid for 127.0.0.1 too.
func (ca *CA) Server(t testing.TB, names ...string) *Leaf {
	t.Helper()
	cn := "localhost"
	if len(names) > 0 {
		cn = names[0]
	}
	return ca.Issue(t, LeafOptions{CN: cn, DNS: names, IPs: []net.IP{net.IPv4(127, 0, 0, 1)}})
}

// Client issues a client certificate with the common name cn.
func (ca *CA) Client(t testing.TB, cn string) *Leaf {
	t.Helper()
	return ca.Issue(t, LeafOptions{CN: cn, Client: true})
}

// Issue issues a certificate as the options say.
func (ca *CA) Issue(t testing.TB, o LeafOptions) *Leaf {
	t.Helper()
	l, err := ca.Sign(o)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// Sign is Issue for callers without a *testing.T (the tools).
func (ca *CA) Sign(o LeafOptions) (*Leaf, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial.Add(1)),
		Subject:      pkix.Name{CommonName: o.CN, OrganizationalUnit: o.OU},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     notAfter(o),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:     o.DNS,
		IPAddresses:  o.IPs,
		OCSPServer:   o.OCSPServer,

		CRLDistributionPoints: o.CRLDistributionPoints,
	}
	if o.Client {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	}
	for _, s := range o.URIs {
		u, err := url.Parse(s)
		if err != nil {
			return nil, fmt.Errorf("certificate URI %q: %w", s, err)
		}
		tmpl.URIs = append(tmpl.URIs, u)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, key.Public(), ca.Key)
	if err != nil {
		return nil, fmt.Errorf("certificate for %s: %w", o.CN, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &Leaf{Cert: cert, Chain: [][]byte{der, ca.Cert.Raw}, Key: key}, nil
}

// TLSCertificate is the leaf as crypto/tls wants it.
func (l *Leaf) TLSCertificate() tls.Certificate {
	return tls.Certificate{Certificate: l.Chain, PrivateKey: l.Key, Leaf: l.Cert}
}

// ChainPEM is the chain as a PEM file holds it, leaf first.
func (l *Leaf) ChainPEM() []byte {
	var out []byte
	for _, der := range l.Chain {
		out = append(out, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})...)
	}
	return out
}

// KeyPEM is the private key as PKCS#8 PEM (plaintext: tests only).
func (l *Leaf) KeyPEM(t testing.TB) []byte {
	t.Helper()
	out, err := l.MarshalKey()
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// MarshalKey is KeyPEM for callers without a *testing.T. The caller
// wipes the result when it is done with it (the DER is wiped here).
func (l *Leaf) MarshalKey() ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(l.Key)
	if err != nil {
		return nil, err
	}
	defer clear(der)
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// WriteFiles writes dir/name.crt (chain) and dir/name.key (PKCS#8) and
// returns their paths.
func (l *Leaf) WriteFiles(t testing.TB, dir, name string) (certPath, keyPath string) {
	t.Helper()
	certPath = filepath.Join(dir, name+".crt")
	keyPath = filepath.Join(dir, name+".key")
	if err := os.WriteFile(certPath, l.ChainPEM(), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyPath, l.KeyPEM(t), 0o600); err != nil {
		t.Fatal(err)
	}
	return certPath, keyPath
}

// CRL returns a PEM CRL signed by the CA that revokes certs.
func (ca *CA) CRL(t testing.TB, revoked ...*x509.Certificate) []byte {
	t.Helper()
	tmpl := &x509.RevocationList{
		Number:     big.NewInt(serial.Add(1)),
		ThisUpdate: time.Now().Add(-time.Hour),
		NextUpdate: time.Now().Add(24 * time.Hour),
	}
	for _, c := range revoked {
		tmpl.RevokedCertificateEntries = append(tmpl.RevokedCertificateEntries,
			x509.RevocationListEntry{SerialNumber: c.SerialNumber, RevocationTime: time.Now()})
	}
	der, err := x509.CreateRevocationList(rand.Reader, tmpl, ca.Cert, ca.Key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: der})
}

// OCSPResponse returns a DER OCSP response signed by the CA saying that
// leaf is good (or revoked), valid for a day.
func (ca *CA) OCSPResponse(t testing.TB, leaf *x509.Certificate, revoked bool) []byte {
	t.Helper()
	tmpl := ocsp.Response{
		Status:       ocsp.Good,
		SerialNumber: leaf.SerialNumber,
		ThisUpdate:   time.Now().Add(-time.Hour),
		NextUpdate:   time.Now().Add(24 * time.Hour),
	}
	if revoked {
		tmpl.Status = ocsp.Revoked
		tmpl.RevokedAt = time.Now().Add(-time.Minute)
	}
	der, err := ocsp.CreateResponse(ca.Cert, ca.Cert, tmpl, ca.Key)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

// notAfter is the end of a leaf's validity as o asks.
func notAfter(o LeafOptions) time.Time {
	if !o.NotAfter.IsZero() {
		return o.NotAfter
	}
	return time.Now().Add(cmp.Or(o.Validity, 90*24*time.Hour))
}
