package vault

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/pem"
	"testing"

	"github.com/sealproxy/sealproxy/internal/secmem"
)

// FuzzParsePrivateKeyPEM parses key files as file: keys and the plaintext
// of sealed: keys are parsed, then takes the key apart and rebuilds it as
// custody does (splitKey, rebuild). Properties: no panic; a parsed key is
// ECDSA, RSA or Ed25519; a key that splits has the parsed key's public
// half, its secret has the documented length, and the rebuilt key signs
// what that public key verifies.
func FuzzParsePrivateKeyPEM(f *testing.F) {
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ec384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	_, ed, _ := ed25519.GenerateKey(rand.Reader)
	rk, _ := rsa.GenerateKey(rand.Reader, 2048)
	pkcs8 := func(k any) []byte {
		der, err := x509.MarshalPKCS8PrivateKey(k)
		if err != nil {
			f.Fatal(err)
		}
		return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
	}
	sec1, _ := x509.MarshalECPrivateKey(ec384)
	ecPEM := pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: sec1})
	rsaPEM := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(rk)})
	certFirst := append([]byte("-----BEGIN CERTIFICATE-----\nMAA=\n-----END CERTIFICATE-----\n"), pkcs8(ec)...)
	for _, seed := range [][]byte{
		pkcs8(ec), pkcs8(ed), pkcs8(rk), ecPEM, rsaPEM, certFirst,
		pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: []byte{0x30, 0}}),
		pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: sec1}),
		pem.EncodeToMemory(&pem.Block{Type: "ENCRYPTED PRIVATE KEY", Bytes: []byte{1, 2, 3}}),
		[]byte("-----BEGIN PRIVATE KEY-----\n"),
		nil,
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		signer, err := ParsePrivateKeyPEM(data)
		if err != nil {
			if signer != nil {
				t.Fatal("a key returned with an error")
			}
			return
		}
		pub := signer.Public()
		type equaler interface{ Equal(crypto.PublicKey) bool }
		var opts crypto.SignerOpts = crypto.SHA256
		switch signer.(type) {
		case *ecdsa.PrivateKey, *rsa.PrivateKey:
		case ed25519.PrivateKey:
			opts = crypto.Hash(0)
		default:
			t.Fatalf("parsed a %T", signer)
		}
		var (
			shape  keyShape
			secret []byte
		)
		secmem.Do(func() { shape, secret, err = splitKey(signer) })
		if err != nil {
			return // refused as custody would refuse it
		}
		defer secmem.Bytes(secret)
		if !pub.(equaler).Equal(shape.pub) {
			t.Fatalf("split changed the public key: %v, %v", pub, shape.pub)
		}
		switch p := shape.pub.(type) {
		case *ecdsa.PublicKey:
			if len(secret) != (p.Curve.Params().N.BitLen()+7)/8 {
				t.Fatalf("ECDSA secret of %d bytes", len(secret))
			}
		case *rsa.PublicKey:
			if len(secret) != p.Size()+5*shape.plen {
				t.Fatalf("RSA secret of %d bytes, modulus %d, plen %d", len(secret), p.Size(), shape.plen)
			}
		case ed25519.PublicKey:
			if len(secret) != ed25519.PrivateKeySize {
				t.Fatalf("Ed25519 secret of %d bytes", len(secret))
			}
		}
		msg := []byte("sealproxy fuzz")
		digest := msg
		if opts.HashFunc() != 0 {
			sum := sha256.Sum256(msg)
			digest = sum[:]
		}
		var sig []byte
		secmem.Do(func() {
			err = shape.rebuild(secret, func(k crypto.Signer) error {
				var err error
				sig, err = signWith(k, rand.Reader, digest, opts, make([]byte, 0, shape.sigMax))
				return err
			})
		})
		if err != nil {
			t.Fatalf("rebuilt %T does not sign: %v", shape.pub, err)
		}
		if len(sig) > shape.sigMax {
			t.Fatalf("signature of %d bytes, sigMax %d", len(sig), shape.sigMax)
		}
		ok := false
		switch p := shape.pub.(type) {
		case *ecdsa.PublicKey:
			ok = ecdsa.VerifyASN1(p, digest, sig)
		case *rsa.PublicKey:
			ok = rsa.VerifyPKCS1v15(p, crypto.SHA256, digest, sig) == nil
		case ed25519.PublicKey:
			ok = ed25519.Verify(p, msg, sig)
		}
		if !ok {
			t.Fatalf("the rebuilt %T key's signature does not verify", shape.pub)
		}
	})
}
