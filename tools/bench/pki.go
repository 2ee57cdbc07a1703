package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/sealproxy/sealproxy/unlock"
	"github.com/sealproxy/sealproxy/unlock/tang"
)

// serverName is the name in the benchmark certificate.
const serverName = "bench.test"

// pki is the one certificate and ECDSA P-256 key every terminator uses.
type pki struct {
	dir               string
	caFile            string // CA certificate: the client's root
	certFile, keyFile string // leaf certificate, PKCS#8 PEM key
	comboFile         string // certificate then key (haproxy's crt)
	pool              *x509.CertPool
}

func newPKI(dir string) (*pki, error) {
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "sealproxy bench CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return nil, err
	}
	ca, _ := x509.ParseCertificate(caDER)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	leafDER, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: serverName},
		DNSNames: []string{serverName}, NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}, ca, &key.PublicKey, caKey)
	if err != nil {
		return nil, err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: leafDER})
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})
	p := &pki{
		dir:       dir,
		caFile:    filepath.Join(dir, "ca.crt"),
		certFile:  filepath.Join(dir, "bench.crt"),
		keyFile:   filepath.Join(dir, "bench.key"),
		comboFile: filepath.Join(dir, "bench.pem"),
		pool:      x509.NewCertPool(),
	}
	p.pool.AddCert(ca)
	for name, data := range map[string][]byte{
		p.caFile:    pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}),
		p.certFile:  certPEM,
		p.keyFile:   keyPEM,
		p.comboFile: append(append([]byte{}, certPEM...), keyPEM...),
	} {
		if err := os.WriteFile(name, data, 0o600); err != nil {
			return nil, err
		}
	}
	return p, nil
}

// sealKey starts a Tang server on 127.0.0.1 (in this process, until ctx
// ends), seals the key to it and writes the JWE next to the key.
func (p *pki) sealKey(ctx context.Context) (jweFile string, err error) {
	dir := filepath.Join(p.dir, "tang")
	thp, err := tang.Keygen(dir)
	if err != nil {
		return "", err
	}
	keys, err := tang.OpenKeyDir(dir)
	if err != nil {
		return "", err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	srv := &http.Server{Handler: tang.NewServer(keys, nil), ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	go func() { <-ctx.Done(); srv.Close() }()
	keyPEM, err := os.ReadFile(p.keyFile)
	if err != nil {
		return "", err
	}
	cfg := fmt.Sprintf(`{"url":"http://%s","thp":%q}`, ln.Addr(), thp)
	jwe, err := unlock.Encrypt(ctx, "tang", []byte(cfg), keyPEM, nil)
	if err != nil {
		return "", fmt.Errorf("sealing the key: %w", err)
	}
	jweFile = p.keyFile + ".jwe"
	return jweFile, os.WriteFile(jweFile, jwe, 0o600)
}
