package vault

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"errors"
	"testing"
)

// TestGenerate: a key born in custody signs, is a Decrypter only for
// RSA, and the PEM handed to seal is the same key. (The PEM's locked
// buffer is destroyed, unmapped, once seal returns: reading it then
// faults, so its wiping is the memory scan's to check.)
func TestGenerate(t *testing.T) {
	for _, kind := range []string{KeyECDSAP256, KeyECDSAP384, KeyRSA2048} {
		t.Run(kind, func(t *testing.T) {
			var pub crypto.PublicKey
			key, err := Generate("sealed:new.jwe", kind, func(pemKey []byte) error {
				s, err := ParsePrivateKeyPEM(pemKey)
				if err != nil {
					return err
				}
				pub = s.Public()
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			defer key.Close()
			if !pub.(interface{ Equal(crypto.PublicKey) bool }).Equal(key.Public()) {
				t.Fatal("the PEM handed to seal is not the key in custody")
			}
			digest := sha256.Sum256([]byte("x"))
			sig, err := key.Sign(rand.Reader, digest[:], crypto.SHA256)
			if err != nil {
				t.Fatal(err)
			}
			switch p := key.Public().(type) {
			case *ecdsa.PublicKey:
				if !ecdsa.VerifyASN1(p, digest[:], sig) {
					t.Error("bad ECDSA signature")
				}
				if _, ok := key.(crypto.Decrypter); ok {
					t.Error("an ECDSA key is a crypto.Decrypter")
				}
			case *rsa.PublicKey:
				if err := rsa.VerifyPKCS1v15(p, crypto.SHA256, digest[:], sig); err != nil {
					t.Error(err)
				}
				if _, ok := key.(crypto.Decrypter); !ok {
					t.Error("an RSA key is not a crypto.Decrypter")
				}
			}
		})
	}
}

// TestGenerateSealFails: when seal fails (Tang unreachable), Generate
// returns its error and no key.
func TestGenerateSealFails(t *testing.T) {
	errSeal := errors.New("tang unreachable")
	key, err := Generate("sealed:new.jwe", KeyECDSAP256, func([]byte) error { return errSeal })
	if !errors.Is(err, errSeal) || key != nil {
		t.Fatalf("Generate = %v, %v; want nil and the seal's error", key, err)
	}
	if _, err := Generate("sealed:new.jwe", "ed448", func([]byte) error { return nil }); !errors.Is(err, ErrKeyType) {
		t.Errorf("unknown kind: %v, want ErrKeyType", err)
	}
}
