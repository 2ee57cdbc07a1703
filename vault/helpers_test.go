package vault

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"sync"
	"testing"
	"time"
)

// testKey is a generated private key and its PEM encodings.
type testKey struct {
	name   string
	signer crypto.Signer
	pems   map[string][]byte // encoding name → PEM
}

var (
	testKeysOnce sync.Once
	testKeysVal  []testKey
)

// testKeys returns one key of every supported type, each in every PEM
// encoding that type has. RSA generation is slow: they are made once.
func testKeys(t testing.TB) []testKey {
	t.Helper()
	testKeysOnce.Do(func() {
		var keys []crypto.Signer
		for _, c := range []elliptic.Curve{elliptic.P256(), elliptic.P384(), elliptic.P521()} {
			k, err := ecdsa.GenerateKey(c, rand.Reader)
			if err != nil {
				panic(err)
			}
			keys = append(keys, k)
		}
		r, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			panic(err)
		}
		_, ed, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			panic(err)
		}
		keys = append(keys, r, ed)
		for _, k := range keys {
			tk := testKey{name: keyName(k), signer: k, pems: map[string][]byte{}}
			der, err := x509.MarshalPKCS8PrivateKey(k)
			if err != nil {
				panic(err)
			}
			tk.pems["PKCS8"] = pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
			switch k := k.(type) {
			case *ecdsa.PrivateKey:
				der, err := x509.MarshalECPrivateKey(k)
				if err != nil {
					panic(err)
				}
				tk.pems["SEC1"] = pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der})
			case *rsa.PrivateKey:
				tk.pems["PKCS1"] = pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(k)})
			}
			testKeysVal = append(testKeysVal, tk)
		}
	})
	return testKeysVal
}

func keyName(k crypto.Signer) string {
	switch k := k.(type) {
	case *ecdsa.PrivateKey:
		return k.Curve.Params().Name
	case *rsa.PrivateKey:
		return "RSA-2048"
	}
	return "Ed25519"
}

// selfSigned makes a certificate for 127.0.0.1 and localhost with key.
func selfSigned(t testing.TB, key crypto.Signer) (tls.Certificate, *x509.CertPool) {
	t.Helper()
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "localhost"},
		DNSNames:              []string{"localhost"},
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatalf("creating certificate: %v", err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(leaf)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, pool
}

// handshake runs one full TLS handshake between a crypto/tls server and
// client over net.Pipe and returns the server's error, if any.
func handshake(srvConf, cliConf *tls.Config) error {
	c, s := net.Pipe()
	defer c.Close()
	defer s.Close()
	errc := make(chan error, 1)
	go func() {
		cli := tls.Client(c, cliConf)
		err := cli.Handshake()
		if err != nil {
			c.Close()
		}
		errc <- err
	}()
	srv := tls.Server(s, srvConf)
	err := srv.Handshake()
	if err != nil {
		s.Close()
	}
	cerr := <-errc
	if err != nil {
		return err
	}
	return cerr
}
