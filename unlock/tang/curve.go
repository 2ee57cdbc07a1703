package tang

import (
	"crypto/elliptic"
	"crypto/rand"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"

	"filippo.io/nistec"

	"github.com/sealproxy/sealproxy/internal/secmem"
)

// ErrNotOnCurve reports a point that is not on its curve (or is the point at
// infinity). Every point that crosses the network is checked.
var ErrNotOnCurve = errors.New("point is not on the curve")

// curve does the point arithmetic of the McCallum-Relyea exchange on
// uncompressed SEC 1 encodings (0x04 || x || y). crypto/ecdh cannot add
// points; nistec can, in constant time.
type curve interface {
	name() string
	size() int // bytes of a coordinate and of a scalar
	check(p []byte) error
	add(p, q []byte) ([]byte, error)
	sub(p, q []byte) ([]byte, error)
	mul(p, k []byte) ([]byte, error)
	baseMul(k []byte) ([]byte, error)
	// randomScalar fills k (size bytes) with a uniform scalar in [1, n-1].
	randomScalar(k []byte) error
}

type nistPoint[P any] interface {
	Bytes() []byte
	SetBytes([]byte) (P, error)
	Add(P, P) P
	Negate(P) P
	ScalarMult(P, []byte) (P, error)
	ScalarBaseMult([]byte) (P, error)
	IsInfinity() int
}

type nistCurve[P nistPoint[P]] struct {
	crv      string
	bytes    int
	order    []byte // n, big-endian, bytes long
	topMask  byte   // mask for the first byte of a random scalar
	newPoint func() P
}

func (c *nistCurve[P]) name() string { return c.crv }
func (c *nistCurve[P]) size() int    { return c.bytes }

func (c *nistCurve[P]) decode(b []byte) (P, error) {
	p, err := c.newPoint().SetBytes(b)
	if err != nil || len(b) != 1+2*c.bytes {
		var zero P
		return zero, fmt.Errorf("%s: %w", c.crv, ErrNotOnCurve)
	}
	if p.IsInfinity() == 1 {
		var zero P
		return zero, fmt.Errorf("%s: point at infinity: %w", c.crv, ErrNotOnCurve)
	}
	return p, nil
}

func (c *nistCurve[P]) encode(p P) ([]byte, error) {
	if p.IsInfinity() == 1 {
		return nil, fmt.Errorf("%s: result is the point at infinity: %w", c.crv, ErrNotOnCurve)
	}
	return p.Bytes(), nil
}

func (c *nistCurve[P]) check(b []byte) error {
	_, err := c.decode(b)
	return err
}

func (c *nistCurve[P]) add(a, b []byte) ([]byte, error) {
	p, err := c.decode(a)
	if err != nil {
		return nil, err
	}
	q, err := c.decode(b)
	if err != nil {
		return nil, err
	}
	return c.encode(c.newPoint().Add(p, q))
}

func (c *nistCurve[P]) sub(a, b []byte) ([]byte, error) {
	p, err := c.decode(a)
	if err != nil {
		return nil, err
	}
	q, err := c.decode(b)
	if err != nil {
		return nil, err
	}
	return c.encode(c.newPoint().Add(p, c.newPoint().Negate(q)))
}

func (c *nistCurve[P]) mul(a, k []byte) ([]byte, error) {
	p, err := c.decode(a)
	if err != nil {
		return nil, err
	}
	r, err := c.newPoint().ScalarMult(p, k)
	if err != nil {
		return nil, fmt.Errorf("%s: scalar multiplication: %w", c.crv, err)
	}
	return c.encode(r)
}

func (c *nistCurve[P]) baseMul(k []byte) ([]byte, error) {
	r, err := c.newPoint().ScalarBaseMult(k)
	if err != nil {
		return nil, fmt.Errorf("%s: scalar multiplication: %w", c.crv, err)
	}
	return c.encode(r)
}

func (c *nistCurve[P]) randomScalar(k []byte) error {
	return randomBelow(rand.Reader, k, c.order, c.topMask)
}

// randomBelow fills k with a uniform value in [1, n-1] by rejection
// sampling, so that no big.Int copy of the secret scalar is ever made.
func randomBelow(r io.Reader, k, n []byte, topMask byte) error {
	if len(k) != len(n) {
		return errors.New("scalar buffer has the wrong length")
	}
	for range 1000 {
		if _, err := io.ReadFull(r, k); err != nil {
			return fmt.Errorf("reading randomness: %w", err)
		}
		k[0] &= topMask
		if !isZero(k) && lessThan(k, n) {
			return nil
		}
	}
	secmem.Bytes(k)
	return errors.New("randomness source keeps returning out-of-range scalars")
}

func isZero(b []byte) bool {
	var acc byte
	for _, v := range b {
		acc |= v
	}
	return subtle.ConstantTimeByteEq(acc, 0) == 1
}

// lessThan reports a < b for equal-length big-endian numbers.
func lessThan(a, b []byte) bool {
	borrow := 0
	for i := len(a) - 1; i >= 0; i-- {
		d := int(a[i]) - int(b[i]) - borrow
		borrow = (d >> 8) & 1
	}
	return borrow == 1
}

// order returns the curve's group order n, big-endian, one coordinate long.
func order(c elliptic.Curve) []byte {
	p := c.Params()
	return p.N.FillBytes(make([]byte, (p.BitSize+7)/8))
}

var curves = map[string]curve{
	"P-256": &nistCurve[*nistec.P256Point]{
		crv: "P-256", bytes: 32, order: order(elliptic.P256()), topMask: 0xff, newPoint: nistec.NewP256Point,
	},
	"P-384": &nistCurve[*nistec.P384Point]{
		crv: "P-384", bytes: 48, order: order(elliptic.P384()), topMask: 0xff, newPoint: nistec.NewP384Point,
	},
	"P-521": &nistCurve[*nistec.P521Point]{
		crv: "P-521", bytes: 66, order: order(elliptic.P521()), topMask: 0x01, newPoint: nistec.NewP521Point,
	},
}

func curveByName(crv string) (curve, error) {
	c, ok := curves[crv]
	if !ok {
		return nil, fmt.Errorf("unsupported curve %q (Tang uses P-256, P-384 or P-521)", crv)
	}
	return c, nil
}
