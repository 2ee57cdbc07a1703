package vault

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"

	"github.com/awnumar/memguard"

	"github.com/sealproxy/sealproxy/internal/secmem"
)

// Key types Generate makes.
const (
	KeyECDSAP256 = "ecdsa-p256"
	KeyECDSAP384 = "ecdsa-p384"
	KeyRSA2048   = "rsa-2048"
)

// ErrKeyType reports a key type Generate does not make.
var ErrKeyType = errors.New("unknown key type")

// Generate makes a new private key of kind (KeyECDSAP256, KeyECDSAP384,
// KeyRSA2048) born in custody: it is generated inside secmem.Do, its
// secret numbers go straight into the sealed box, and its PKCS#8 PEM
// exists only in locked memory, handed to seal (which writes it sealed,
// never in the clear) and wiped when seal returns. If seal fails the key
// is destroyed and the error returned: nothing of it remains. name names
// the key in errors and logs (the file it is sealed to).
func Generate(name, kind string, seal func(pemPKCS8 []byte) error) (Key, error) {
	if err := checkMemlock(MemlockNeed(1)); err != nil {
		return nil, fmt.Errorf("generating key %s: %w", name, err)
	}
	var (
		buf    *memguard.LockedBuffer
		k      *sealedKey
		outErr error
	)
	secmem.Do(func() {
		var signer crypto.Signer
		var err error
		switch kind {
		case KeyECDSAP256:
			signer, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		case KeyECDSAP384:
			signer, err = ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
		case KeyRSA2048:
			signer, err = rsa.GenerateKey(rand.Reader, 2048)
		default:
			err = fmt.Errorf("%w %q (want %s, %s or %s)", ErrKeyType, kind, KeyECDSAP256, KeyECDSAP384, KeyRSA2048)
		}
		if err != nil {
			outErr = err
			return
		}
		der, err := x509.MarshalPKCS8PrivateKey(signer)
		if err != nil {
			outErr = err
			return
		}
		pemData := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
		secmem.Bytes(der)
		buf = memguard.NewBufferFromBytes(pemData) // copies into locked memory and wipes pemData
		shape, secret, err := splitKey(signer)     // wipes the key's own numbers
		if err != nil {
			outErr = err
			return
		}
		defer secmem.Bytes(secret)
		c, err := secmem.Seal(secret)
		if err != nil {
			outErr = err
			return
		}
		k = &sealedKey{name: name, shape: shape, custody: c}
	})
	if buf != nil {
		defer buf.Destroy()
	}
	if outErr != nil {
		return nil, fmt.Errorf("generating key %s: %w", name, outErr)
	}
	secmem.Used()
	if err := seal(buf.Bytes()); err != nil {
		k.Close()
		return nil, err
	}
	return k.asKey(), nil
}
