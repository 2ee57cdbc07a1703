// Package sss is Shamir's secret sharing over a prime field, laid out as
// Clevis's sss pin lays it out: a 32-byte prime p, a random polynomial of
// degree t-1 whose constant term is the secret, and shares that are the
// 64 bytes x‖y of points on it.
package sss

import (
	"crypto/rand"
	"errors"
	"fmt"
	"math/big"

	"github.com/sealproxy/sealproxy/internal/secmem"
)

// KeyBytes is the size of the secret, of p and of each share coordinate.
const KeyBytes = 32

// ErrBadShare reports a share or prime that cannot be combined.
var ErrBadShare = errors.New("bad sss share")

// Polynomial is the dealer's side: it knows the secret and hands out shares.
type Polynomial struct {
	p      *big.Int
	coeffs []*big.Int // coeffs[0] is the secret
	xs     map[string]bool
}

// New makes a random polynomial of degree t-1 over a fresh 256-bit prime.
func New(t int) (*Polynomial, error) {
	if t < 1 {
		return nil, fmt.Errorf("sss threshold must be at least 1, got %d", t)
	}
	p, err := rand.Prime(rand.Reader, KeyBytes*8)
	if err != nil {
		return nil, fmt.Errorf("generating sss prime: %w", err)
	}
	q := &Polynomial{p: p, xs: map[string]bool{}}
	for range t {
		c, err := rand.Int(rand.Reader, p)
		if err != nil {
			q.Wipe()
			return nil, fmt.Errorf("generating sss polynomial: %w", err)
		}
		q.coeffs = append(q.coeffs, c)
	}
	return q, nil
}

// Prime returns p as KeyBytes big-endian bytes.
func (q *Polynomial) Prime() []byte { return q.p.FillBytes(make([]byte, KeyBytes)) }

// Secret returns the secret as KeyBytes big-endian bytes. The caller wipes it.
func (q *Polynomial) Secret() []byte { return q.coeffs[0].FillBytes(make([]byte, KeyBytes)) }

// Share returns a new point x‖y with a random x in [1, p) not handed out
// before. The caller wipes it.
func (q *Polynomial) Share() ([]byte, error) {
	out := make([]byte, 2*KeyBytes)
	var err error
	secmem.Do(func() {
		var x *big.Int
		for {
			x, err = rand.Int(rand.Reader, q.p)
			if err != nil {
				return
			}
			if x.Sign() != 0 && !q.xs[x.String()] {
				break
			}
		}
		q.xs[x.String()] = true
		// Horner's rule: y = (...(c[t-1]·x + c[t-2])·x ...) + c[0] mod p.
		y := new(big.Int)
		for i := len(q.coeffs) - 1; i >= 0; i-- {
			y.Mul(y, x)
			y.Add(y, q.coeffs[i])
			y.Mod(y, q.p)
		}
		x.FillBytes(out[:KeyBytes])
		y.FillBytes(out[KeyBytes:])
		secmem.BigInt(y)
	})
	if err != nil {
		return nil, fmt.Errorf("generating sss share: %w", err)
	}
	return out, nil
}

// Wipe erases the polynomial's coefficients.
func (q *Polynomial) Wipe() {
	for _, c := range q.coeffs {
		secmem.BigInt(c)
	}
	q.coeffs = nil
}

// Combine interpolates the polynomial at zero from shares (each x‖y) and
// returns the secret as KeyBytes bytes. It needs exactly as many shares as
// the threshold; more are harmless if they lie on the same polynomial. The
// caller wipes the result.
func Combine(prime []byte, shares [][]byte) ([]byte, error) {
	if len(prime) != KeyBytes {
		return nil, fmt.Errorf("%w: p is %d bytes, want %d", ErrBadShare, len(prime), KeyBytes)
	}
	if len(shares) == 0 {
		return nil, fmt.Errorf("%w: no shares", ErrBadShare)
	}
	p := new(big.Int).SetBytes(prime)
	// Baillie-PSW alone: the JWE's tag already authenticates p, so this
	// check only turns a corrupt header into a clearer error.
	if p.Cmp(big.NewInt(2)) <= 0 || !p.ProbablyPrime(0) {
		return nil, fmt.Errorf("%w: p is not prime", ErrBadShare)
	}
	secret := make([]byte, KeyBytes)
	var err error
	secmem.Do(func() { err = combine(p, shares, secret) })
	if err != nil {
		secmem.Bytes(secret)
		return nil, err
	}
	return secret, nil
}

func combine(p *big.Int, shares [][]byte, secret []byte) error {
	xs := make([]*big.Int, len(shares))
	ys := make([]*big.Int, len(shares))
	defer func() {
		for i := range ys {
			secmem.BigInt(xs[i])
			secmem.BigInt(ys[i])
		}
	}()
	for i, s := range shares {
		if len(s) != 2*KeyBytes {
			return fmt.Errorf("%w: share %d is %d bytes, want %d", ErrBadShare, i, len(s), 2*KeyBytes)
		}
		xs[i] = new(big.Int).SetBytes(s[:KeyBytes])
		ys[i] = new(big.Int).SetBytes(s[KeyBytes:])
		if xs[i].Sign() == 0 || xs[i].Cmp(p) >= 0 || ys[i].Cmp(p) >= 0 {
			return fmt.Errorf("%w: share %d is not a point of the field", ErrBadShare, i)
		}
		for j := range i {
			if xs[j].Cmp(xs[i]) == 0 {
				return fmt.Errorf("%w: shares %d and %d are the same point", ErrBadShare, j, i)
			}
		}
	}
	// Lagrange interpolation at 0: sum of y_i · Π_{j≠i} x_j / (x_j − x_i).
	sum := new(big.Int)
	num, den, tmp := new(big.Int), new(big.Int), new(big.Int)
	defer secmem.BigInt(sum)
	for i := range xs {
		num.SetInt64(1)
		den.SetInt64(1)
		for j := range xs {
			if i == j {
				continue
			}
			num.Mul(num, xs[j]).Mod(num, p)
			tmp.Sub(xs[j], xs[i]).Mod(tmp, p)
			den.Mul(den, tmp).Mod(den, p)
		}
		if den.ModInverse(den, p) == nil {
			return fmt.Errorf("%w: shares cannot be interpolated", ErrBadShare)
		}
		tmp.Mul(ys[i], num).Mod(tmp, p)
		tmp.Mul(tmp, den).Mod(tmp, p)
		sum.Add(sum, tmp).Mod(sum, p)
	}
	sum.FillBytes(secret)
	secmem.BigInt(num)
	secmem.BigInt(den)
	secmem.BigInt(tmp)
	return nil
}
