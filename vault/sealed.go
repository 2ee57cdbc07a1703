package vault

import (
	"context"
	"crypto"
	"crypto/rsa"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"

	"github.com/sealproxy/sealproxy/internal/secmem"
	"github.com/sealproxy/sealproxy/unlock"
	"github.com/sealproxy/sealproxy/vault/keyref"
)

func init() { register(keyref.SchemeSealed, openSealed) }

// maxJWE bounds the size of a sealed key file: a PEM key of RSA-8192 is
// under 7 KiB, its JWE with a few Tang servers well under 64 KiB.
const maxJWE = 1 << 20

// ErrClosed reports the use of a key after Close.
var ErrClosed = errors.New("key is closed")

// openSealed recovers a sealed: key through unlock and moves its secret
// into custody.
func openSealed(ctx context.Context, r keyref.Ref, opts *Options) (Key, error) {
	if err := CheckMemoryProtection(opts != nil && opts.AllowUnprotectedMemory); err != nil {
		return nil, fmt.Errorf("opening key %s: %w", r, err)
	}
	// Check before unlock allocates locked memory: memguard can hang when
	// mlock fails.
	if err := checkMemlock(MemlockNeed(1)); err != nil {
		return nil, fmt.Errorf("opening key %s: %w", r, err)
	}
	data := opts.sealed()
	if data == nil {
		var err error
		if data, err = readSealed(r, opts); err != nil {
			return nil, err
		}
	}
	var uo *unlock.Options
	if opts != nil {
		uo = opts.Unlock
	}
	buf, err := unlock.Decrypt(ctx, data, uo)
	if err != nil {
		return nil, fmt.Errorf("recovering sealed key %s: %w", r, err)
	}
	defer buf.Destroy()
	if opts != nil && opts.TicketSecret {
		return NewTicketSecret(r.String(), buf.Bytes())
	}
	if !secmem.Erasing() {
		opts.log().Warn("allow_unprotected_memory: copies of the key the standard library makes while signing stay in freed memory until it is reused", "key", r)
	}
	k, err := newSealedKey(r.String(), buf.Bytes(), custodyBox)
	if err != nil {
		return nil, fmt.Errorf("sealed key %s: %w", r, err)
	}
	return k.asKey(), nil
}

// ReadSealed returns the JWE that a reference recovers through unlock,
// read as Open reads it (relative to opts.BaseDir, at most 1 MiB), so a
// caller can prepare its recovery (an approval session) or show its Tang
// servers: a sealed: key's file, or a pkcs11: key's pin-source=sealed:
// file. ok is false for references that recover nothing.
func ReadSealed(ref string, opts *Options) (data []byte, ok bool, err error) {
	r, err := keyref.Parse(ref)
	if err != nil || !r.UsesUnlock() {
		return nil, false, err
	}
	if u := r.PKCS11(); u != nil {
		path, _ := u.SealedPIN()
		if data, err = readFile(opts.path(path), maxJWE); err != nil {
			return nil, true, fmt.Errorf("reading sealed PIN %s: %w", path, err)
		}
		return data, true, nil
	}
	data, err = readSealed(r, opts)
	return data, true, err
}

// sealed is the JWE the caller read already, if any.
func (o *Options) sealed() []byte {
	if o == nil {
		return nil
	}
	return o.Sealed
}

// readFile reads the sealed key files; tests count the reads.
var readFile = readLimited

func readSealed(r keyref.Ref, opts *Options) ([]byte, error) {
	data, err := readFile(opts.path(r.Path), maxJWE)
	if err != nil {
		return nil, fmt.Errorf("reading sealed key %s: %w", r, err)
	}
	return data, nil
}

func readLimited(path string, limit int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(data)) > limit {
		return nil, fmt.Errorf("file is larger than %d bytes", limit)
	}
	return data, nil
}

// A custody holds the secret half of one key and lends it out, in the
// clear and inside secmem.Do, only for the duration of a call to Open.
// Between calls no plaintext copy exists in readable memory.
type custody interface {
	Open(f func(secret []byte) error) error
	Destroy()
}

type custodyMode int

const (
	// custodyBox: a secmem.Box, opened into long-lived locked scratch
	// buffers (the default).
	custodyBox custodyMode = iota
	// custodyEnclave: a secmem.Enclave, a memguard Enclave opened per
	// signature (to measure the box against).
	custodyEnclave
)

// newSealedKey parses a PEM private key (which stays where the caller
// keeps it, in locked memory) and moves its secret numbers into custody.
// Every copy made on the way is wiped, or erased by secmem.Do.
func newSealedKey(name string, pemData []byte, mode custodyMode) (*sealedKey, error) {
	var (
		shape  keyShape
		c      custody
		outErr error
	)
	secmem.Do(func() {
		signer, err := ParsePrivateKeyPEM(pemData)
		if err != nil {
			outErr = err
			return
		}
		var secret []byte
		shape, secret, err = splitKey(signer)
		if err != nil {
			outErr = err
			return
		}
		defer secmem.Bytes(secret)
		switch mode {
		case custodyEnclave:
			c, outErr = secmem.NewEnclave(secret)
		default:
			c, outErr = secmem.Seal(secret)
		}
	})
	if outErr != nil {
		return nil, outErr
	}
	k := &sealedKey{name: name, shape: shape, custody: c}
	secmem.Used()
	return k, nil
}

// asKey returns k as a Key that is also a crypto.Decrypter for RSA, and
// only for RSA: crypto/tls offers RSA key exchange to any key that is one.
func (k *sealedKey) asKey() Key {
	if _, ok := k.shape.pub.(*rsa.PublicKey); ok {
		return sealedRSAKey{k}
	}
	return k
}

// sealedRSAKey adds crypto.Decrypter to an RSA sealedKey.
type sealedRSAKey struct{ *sealedKey }

// Decrypt decrypts an RSA ciphertext (TLS 1.2 RSA key exchange).
func (k sealedRSAKey) Decrypt(rand io.Reader, ciphertext []byte, opts crypto.DecrypterOpts) ([]byte, error) {
	return k.decrypt(rand, ciphertext, opts)
}

// sealedKey is a private key in custody. It implements crypto.Signer and,
// for RSA, crypto.Decrypter; it is safe for concurrent use.
type sealedKey struct {
	name  string // the redacted reference
	shape keyShape

	mu      sync.RWMutex // Close excludes signing
	custody custody      // nil once closed
}

func (k *sealedKey) String() string { return k.name }

func (k *sealedKey) Public() crypto.PublicKey { return k.shape.pub }

// Sign signs digest with the key: the secret is decrypted into locked
// scratch memory, the key rebuilt and used inside secmem.Do, and every copy
// wiped before Sign returns.
func (k *sealedKey) Sign(rand io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	out := make([]byte, 0, k.shape.sigMax)
	err := k.use(func(s crypto.Signer) error {
		var err error
		out, err = signWith(s, rand, digest, opts, out)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("signing with key %s: %w", k.name, err)
	}
	return out, nil
}

func (k *sealedKey) decrypt(rand io.Reader, ciphertext []byte, opts crypto.DecrypterOpts) ([]byte, error) {
	if _, ok := k.shape.pub.(*rsa.PublicKey); !ok {
		return nil, fmt.Errorf("decrypting with key %s: not an RSA key", k.name)
	}
	out := make([]byte, 0, k.shape.sigMax)
	err := k.use(func(s crypto.Signer) error {
		pt, err := s.(*rsa.PrivateKey).Decrypt(rand, ciphertext, opts)
		out = append(out, pt...)
		secmem.Bytes(pt)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("decrypting with key %s: %w", k.name, err)
	}
	return out, nil
}

func (k *sealedKey) use(f func(crypto.Signer) error) error {
	k.mu.RLock()
	defer k.mu.RUnlock()
	if k.custody == nil {
		return ErrClosed
	}
	fr := k.shape.frame()
	return k.custody.Open(func(secret []byte) error {
		return k.shape.rebuildIn(fr, secret, f)
	})
}

// Close destroys the key's custody; later signatures fail with ErrClosed.
func (k *sealedKey) Close() error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.custody != nil {
		k.custody.Destroy()
		k.custody = nil
	}
	return nil
}
