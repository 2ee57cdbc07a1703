//lint:file-ignore SA1019 custody takes keys apart into the raw numbers a signature needs and rebuilds them (ecdsa D, X, Y; rsa CRTValues to wipe them); every copy is wiped here.

package vault

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"errors"
	"fmt"
	"io"
	"math/big"
	"math/bits"
	"runtime"
	"unsafe"

	"github.com/sealproxy/sealproxy/internal/secmem"
)

// A keyShape is the public half of a key and what is needed to rebuild the
// private half from the raw secret a custody keeps: only the numbers a
// signature needs, never an encoding (no DER, no PEM).
//
//   - ECDSA: the scalar d, big-endian, padded to the order's length.
//   - RSA: d ‖ p ‖ q ‖ dp ‖ dq ‖ qinv, d padded to the modulus length and
//     the others to the longer prime's length.
//   - Ed25519: the 64-byte private key (seed ‖ public key).
type keyShape struct {
	pub crypto.PublicKey
	// plen is the padded length of the RSA primes and CRT values.
	plen int
	// sigMax bounds a signature's length.
	sigMax int
}

// splitKey takes a parsed private key apart: it returns the public shape
// and the secret (a fresh slice the caller must wipe), and wipes the
// secret numbers of k itself. Call it inside secmem.Do.
func splitKey(k crypto.Signer) (keyShape, []byte, error) {
	switch k := k.(type) {
	case *ecdsa.PrivateKey:
		size := (k.Curve.Params().N.BitLen() + 7) / 8
		if k.D == nil || k.D.Sign() <= 0 || k.D.BitLen() > size*8 {
			return keyShape{}, nil, errors.New("malformed ECDSA private key")
		}
		secret := k.D.FillBytes(make([]byte, size))
		pub := &ecdsa.PublicKey{Curve: k.Curve, X: new(big.Int).Set(k.X), Y: new(big.Int).Set(k.Y)}
		secmem.BigInt(k.D)
		// An ASN.1 ECDSA signature: two integers of size bytes, with headers.
		return keyShape{pub: pub, sigMax: 2*size + 16}, secret, nil
	case *rsa.PrivateKey:
		if len(k.Primes) != 2 {
			return keyShape{}, nil, fmt.Errorf("RSA keys with %d primes are not supported (want 2)", len(k.Primes))
		}
		k.Precompute()
		if k.Precomputed.Dp == nil || k.Precomputed.Dq == nil || k.Precomputed.Qinv == nil {
			return keyShape{}, nil, errors.New("malformed RSA private key")
		}
		n := k.Size()
		plen := max(len(k.Primes[0].Bytes()), len(k.Primes[1].Bytes()))
		secret := make([]byte, n+5*plen)
		k.D.FillBytes(secret[:n])
		off := n
		for _, x := range []*big.Int{k.Primes[0], k.Primes[1], k.Precomputed.Dp, k.Precomputed.Dq, k.Precomputed.Qinv} {
			x.FillBytes(secret[off : off+plen])
			off += plen
		}
		pub := &rsa.PublicKey{N: new(big.Int).Set(k.N), E: k.E}
		wipeRSA(k)
		return keyShape{pub: pub, plen: plen, sigMax: n}, secret, nil
	case ed25519.PrivateKey:
		if len(k) != ed25519.PrivateKeySize {
			return keyShape{}, nil, errors.New("malformed Ed25519 private key")
		}
		secret := make([]byte, ed25519.PrivateKeySize)
		copy(secret, k)
		pub := make(ed25519.PublicKey, ed25519.PublicKeySize)
		copy(pub, k[32:])
		secmem.Bytes(k)
		return keyShape{pub: pub, sigMax: ed25519.SignatureSize}, secret, nil
	case *ed25519.PrivateKey:
		return splitKey(*k)
	}
	return keyShape{}, nil, fmt.Errorf("unsupported key type %T (want ECDSA, RSA or Ed25519)", k)
}

func wipeRSA(k *rsa.PrivateKey) {
	secmem.BigInt(k.D)
	for _, p := range k.Primes {
		secmem.BigInt(p)
	}
	secmem.BigInt(k.Precomputed.Dp)
	secmem.BigInt(k.Precomputed.Dq)
	secmem.BigInt(k.Precomputed.Qinv)
	for _, v := range k.Precomputed.CRTValues {
		secmem.BigInt(v.Exp)
		secmem.BigInt(v.Coeff)
		secmem.BigInt(v.R)
	}
}

// rebuild makes a private key from the shape and the secret, calls f with
// it, and wipes the numbers it made. Call it inside secmem.Do: the standard
// library keeps derived copies (crypto/ecdsa's per-key cache, crypto/rsa's
// precomputed FIPS key) that only the runtime can erase.
func (s *keyShape) rebuild(secret []byte, f func(crypto.Signer) error) error {
	return s.rebuildIn(s.frame(), secret, f)
}

// A keyFrame is what rebuild fills in, allocated by frame before
// secmem.Do: with GOEXPERIMENT=runtimesecret every object allocated inside
// Do costs the runtime a record (a "special") in the sorted list of its
// span, and the walk of that list dominates a signature's cost (see
// docs/benchmarks.md). The frame holds no secret until rebuildIn fills it,
// and rebuildIn wipes what it put there before returning, as it wipes
// the scratch buffer.
type keyFrame struct {
	ec *ecFrame
}

// An ecFrame is an ECDSA key and the words of its scalar in one object,
// padded to a size class of eight objects per span: crypto/ecdsa caches
// its FIPS form of each *ecdsa.PrivateKey under a weak pointer with a
// cleanup, two more specials on the key's span, and a span of small
// objects holds hundreds of specials to walk.
type ecFrame struct {
	ecParts
	_ [ecFrameSize - unsafe.Sizeof(ecParts{})]byte
}

type ecParts struct {
	key   ecdsa.PrivateKey // first, so &f.key is the object's address
	d     big.Int
	words [(66 + wordBytes - 1) / wordBytes]big.Word // a P-521 scalar
}

// ecFrameSize plus the runtime's 8-byte header of objects over 512 bytes
// is the 1024-byte size class.
const ecFrameSize = 1024 - 8

// frame allocates the frame for one rebuild. Call it outside secmem.Do.
func (s *keyShape) frame() keyFrame {
	pub, ok := s.pub.(*ecdsa.PublicKey)
	if !ok {
		return keyFrame{}
	}
	f := new(ecFrame)
	f.key.PublicKey = *pub
	f.d.SetBits(f.words[:0])
	f.key.D = &f.d
	return keyFrame{ec: f}
}

const wordBytes = bits.UintSize / 8

// wipeWords overwrites x's words up to their capacity (SetBytes reuses
// them and trims the length to the significant words) and sets x to zero.
func wipeWords(x *big.Int) {
	w := x.Bits()
	clear(w[:cap(w)])
	runtime.KeepAlive(w)
	x.SetInt64(0)
}

// rebuildIn is rebuild with a frame from frame.
func (s *keyShape) rebuildIn(fr keyFrame, secret []byte, f func(crypto.Signer) error) error {
	switch s.pub.(type) {
	case *ecdsa.PublicKey:
		if fr.ec == nil || len(secret) > len(fr.ec.words)*wordBytes {
			return errors.New("sealed ECDSA key has the wrong length")
		}
		k := &fr.ec.key
		// Fills the words frame allocated: nothing is allocated here.
		k.D.SetBytes(secret)
		defer wipeWords(k.D)
		return f(k)
	case *rsa.PublicKey:
		pub := s.pub.(*rsa.PublicKey)
		n := pub.Size()
		if len(secret) != n+5*s.plen {
			return errors.New("sealed RSA key has the wrong length")
		}
		num := func(i int) *big.Int {
			if i == 0 {
				return new(big.Int).SetBytes(secret[:n])
			}
			off := n + (i-1)*s.plen
			return new(big.Int).SetBytes(secret[off : off+s.plen])
		}
		k := &rsa.PrivateKey{
			PublicKey:   *pub,
			D:           num(0),
			Primes:      []*big.Int{num(1), num(2)},
			Precomputed: rsa.PrecomputedValues{Dp: num(3), Dq: num(4), Qinv: num(5)},
		}
		defer wipeRSA(k)
		return f(k)
	case ed25519.PublicKey:
		// A heap copy, not the scratch buffer itself: crypto/ed25519 caches
		// its expanded key by the address of the slice, and only a heap
		// address lets that cache entry die (and be erased) with the copy.
		k := make(ed25519.PrivateKey, len(secret))
		copy(k, secret)
		defer secmem.Bytes(k)
		return f(k)
	}
	return fmt.Errorf("unsupported public key %T", s.pub)
}

// signWith signs digest with the rebuilt key and appends the signature to
// out, whose capacity the caller allocated outside secmem.Do.
func signWith(k crypto.Signer, rand io.Reader, digest []byte, opts crypto.SignerOpts, out []byte) ([]byte, error) {
	sig, err := k.Sign(rand, digest, opts)
	if err != nil {
		return nil, err
	}
	return append(out, sig...), nil
}
