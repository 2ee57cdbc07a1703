package vault

import (
	"context"
	"crypto"
	"fmt"
	"io"
	"os"

	"github.com/sealproxy/sealproxy/vault/keyref"
)

func init() {
	register(keyref.SchemeFile, func(_ context.Context, r keyref.Ref, opts *Options) (Key, error) { return openFile(r, opts) })
}

// openFile loads a plaintext PEM key: for development only, refused
// unless the configuration allows it, and warned about every time.
func openFile(r keyref.Ref, opts *Options) (Key, error) {
	if opts == nil || !opts.AllowPlaintext {
		return nil, fmt.Errorf("%w: %s: set allow_plaintext_keys only for development, or seal the key with seal encrypt", ErrPlaintextRefused, r)
	}
	opts.log().Warn("using a plaintext key file: development only", "key", r)
	data, err := os.ReadFile(opts.path(r.Path))
	if err != nil {
		return nil, fmt.Errorf("reading key %s: %w", r, err)
	}
	defer clear(data)
	signer, err := ParsePrivateKeyPEM(data)
	if err != nil {
		return nil, fmt.Errorf("key %s: %w", r, err)
	}
	k := heapKey{Signer: signer, name: r.String()}
	if _, ok := signer.(crypto.Decrypter); ok {
		return heapRSAKey{k}, nil
	}
	return k, nil
}

// heapKey is a key in ordinary process memory (file: keys only).
type heapKey struct {
	crypto.Signer
	name string
}

func (k heapKey) String() string { return k.name }

func (heapKey) Close() error { return nil }

// heapRSAKey is a heapKey that also decrypts (TLS 1.2 RSA key exchange);
// only RSA keys may be crypto.Decrypters, or crypto/tls offers RSA key
// exchange with them.
type heapRSAKey struct{ heapKey }

func (k heapRSAKey) Decrypt(rand io.Reader, ciphertext []byte, opts crypto.DecrypterOpts) ([]byte, error) {
	return k.Signer.(crypto.Decrypter).Decrypt(rand, ciphertext, opts)
}
