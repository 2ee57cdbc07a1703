package main

import (
	"context"
	"crypto/x509"
	"fmt"
	"os"
	"path/filepath"

	"github.com/sealproxy/sealproxy/testenv"
	"github.com/sealproxy/sealproxy/unlock"
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
	tp, err := testenv.WritePKI(dir, testenv.PKIOptions{CAName: "sealproxy bench CA", ServerName: serverName, File: "bench", LeafOnly: true})
	if err != nil {
		return nil, err
	}
	keyPEM, err := tp.Server.MarshalKey()
	if err != nil {
		return nil, err
	}
	certPEM, err := os.ReadFile(tp.CertFile)
	if err != nil {
		return nil, err
	}
	p := &pki{
		dir:       dir,
		caFile:    tp.CAFile,
		certFile:  tp.CertFile,
		keyFile:   filepath.Join(dir, "bench.key"),
		comboFile: filepath.Join(dir, "bench.pem"),
		pool:      tp.CA.Pool(),
	}
	// The other terminators read a plaintext key: a benchmark key only.
	for name, data := range map[string][]byte{
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
	url, thp, stop, err := testenv.ServeTang(filepath.Join(p.dir, "tang"))
	if err != nil {
		return "", err
	}
	go func() { <-ctx.Done(); stop() }()
	keyPEM, err := os.ReadFile(p.keyFile)
	if err != nil {
		return "", err
	}
	cfg := fmt.Sprintf(`{"url":%q,"thp":%q}`, url, thp)
	jwe, err := unlock.Encrypt(ctx, "tang", []byte(cfg), keyPEM, nil)
	if err != nil {
		return "", fmt.Errorf("sealing the key: %w", err)
	}
	jweFile = p.keyFile + ".jwe"
	return jweFile, os.WriteFile(jweFile, jwe, 0o600)
}
