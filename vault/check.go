package vault

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"fmt"
)

// CheckCertificate reports whether leaf certifies key's public half. A
// mismatch is ErrKeyMismatch with a message naming both: the key (its
// redacted reference where it has one) and the certificate's subject, each
// with a fingerprint of its public key.
func CheckCertificate(key crypto.Signer, leaf *x509.Certificate) error {
	pub := key.Public()
	eq, ok := pub.(interface{ Equal(crypto.PublicKey) bool })
	if ok && eq.Equal(leaf.PublicKey) {
		return nil
	}
	name := "private key"
	if s, ok := key.(fmt.Stringer); ok {
		name = "key " + s.String()
	}
	return fmt.Errorf("%w: %s (%s) and certificate %q (%s)", ErrKeyMismatch,
		name, describePublic(pub), leaf.Subject.String(), describePublic(leaf.PublicKey))
}

// describePublic names a public key's type and a short fingerprint of it.
func describePublic(pub crypto.PublicKey) string {
	var kind string
	switch p := pub.(type) {
	case *ecdsa.PublicKey:
		kind = "ECDSA " + p.Curve.Params().Name
	case *rsa.PublicKey:
		kind = fmt.Sprintf("RSA-%d", p.N.BitLen())
	case ed25519.PublicKey:
		kind = "Ed25519"
	default:
		kind = fmt.Sprintf("%T", pub)
	}
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return kind
	}
	sum := sha256.Sum256(der)
	return kind + " sha256:" + hex.EncodeToString(sum[:8])
}
