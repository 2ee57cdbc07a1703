package vault

import (
	"crypto"
	"fmt"
	"os"
)

// openFile loads a plaintext PEM key: for development only, refused
// unless the configuration allows it, and warned about every time.
func openFile(r Ref, opts *Options) (Key, error) {
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
	return heapKey{signer}, nil
}

// heapKey is a key in ordinary process memory (file: keys only).
type heapKey struct{ crypto.Signer }

func (heapKey) Close() error { return nil }
