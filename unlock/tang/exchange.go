package tang

import (
	"errors"
	"fmt"

	"github.com/sealproxy/sealproxy/internal/secmem"
)

// The McCallum-Relyea exchange. Uppercase letters are points, G is the
// generator, s is the server's exchange scalar and S = s·G.
//
//	bind:    pick c; C = c·G; K = c·S; seal with K.x; keep C, forget c
//	recover: pick e; send X = C + e·G; server returns Y = s·X;
//	         K = Y − e·S
//
// The server sees only X, which is uniformly random, so it learns nothing
// about K; the client alone (without the server's s) cannot compute K.

// ErrBadExchange reports a point from a peer that the exchange cannot use.
var ErrBadExchange = errors.New("bad exchange point")

// Bind performs the seal-time half of the exchange against the server's
// exchange key. It returns the client point C, to store in the JWE as
// "epk", and z = K.x, the ECDH-ES shared secret. The caller wipes z.
func Bind(srv *JWK) (epk *JWK, z []byte, err error) {
	c, S, err := exchangePoint(srv)
	if err != nil {
		return nil, nil, err
	}
	var C []byte
	z = make([]byte, c.size())
	// The point arithmetic runs inside secmem.Do: nistec's internal
	// representations of c and K are heap values we cannot clear ourselves.
	secmem.Do(func() {
		k := make([]byte, c.size())
		defer secmem.Bytes(k)
		if err = c.randomScalar(k); err != nil {
			return
		}
		if C, err = c.baseMul(k); err != nil {
			return
		}
		var K []byte
		if K, err = c.mul(S, k); err != nil {
			return
		}
		copy(z, K[1:1+c.size()])
		secmem.Bytes(K)
	})
	if err != nil {
		secmem.Bytes(z)
		return nil, nil, err
	}
	return jwkFromPoint(c, C, "", nil), z, nil
}

// Blind is the client side of one recovery. It keeps the same blinded point
// across retries, so a gate that holds a request for approval sees (and
// shows the operator a code for) one stable point.
type Blind struct {
	c curve
	S []byte // the server's exchange key
	e []byte // the blinding scalar: secret
	X []byte // C + e·G, sent to the server
}

// NewBlind prepares a recovery of the binding whose client point is epk,
// made against the server exchange key srv.
func NewBlind(srv, epk *JWK) (*Blind, error) {
	c, S, err := exchangePoint(srv)
	if err != nil {
		return nil, err
	}
	if epk.Kty != "EC" || epk.Crv != c.name() {
		return nil, fmt.Errorf("%w: epk is on %q, the server key on %s", ErrBadExchange, epk.Crv, c.name())
	}
	C, err := epk.point(c)
	if err != nil {
		return nil, err
	}
	if err := c.check(C); err != nil {
		return nil, fmt.Errorf("%w: epk: %w", ErrBadExchange, err)
	}
	b := &Blind{c: c, S: S, e: make([]byte, c.size())}
	secmem.Do(func() {
		if err = c.randomScalar(b.e); err != nil {
			return
		}
		var E []byte
		if E, err = c.baseMul(b.e); err != nil {
			return
		}
		b.X, err = c.add(C, E)
	})
	if err != nil {
		b.Wipe()
		return nil, err
	}
	return b, nil
}

// Request returns the blinded point X as the JWK body of POST /rec/{kid}.
func (b *Blind) Request() *JWK { return jwkFromPoint(b.c, b.X, AlgExchange, nil) }

// Point returns the uncompressed encoding of X, from which a gate derives
// the approval code.
func (b *Blind) Point() []byte { return b.X }

// Unblind takes the server's answer Y = s·X and returns z = K.x, where
// K = Y − e·S. The caller wipes z.
func (b *Blind) Unblind(y *JWK) ([]byte, error) {
	if b.e == nil {
		return nil, errors.New("blind was already wiped")
	}
	if y.Kty != "EC" || y.Crv != b.c.name() {
		return nil, fmt.Errorf("%w: server answered with a %q %q key, want EC %s", ErrBadExchange, y.Kty, y.Crv, b.c.name())
	}
	Y, err := y.point(b.c)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadExchange, err)
	}
	if err := b.c.check(Y); err != nil {
		return nil, fmt.Errorf("%w: server's point: %w", ErrBadExchange, err)
	}
	z := make([]byte, b.c.size())
	secmem.Do(func() {
		var eS, K []byte
		if eS, err = b.c.mul(b.S, b.e); err != nil {
			return
		}
		defer secmem.Bytes(eS)
		if K, err = b.c.sub(Y, eS); err != nil {
			err = fmt.Errorf("%w: %w", ErrBadExchange, err)
			return
		}
		copy(z, K[1:1+b.c.size()])
		secmem.Bytes(K)
	})
	if err != nil {
		secmem.Bytes(z)
		return nil, err
	}
	return z, nil
}

// Wipe erases the blinding scalar. The Blind cannot be used afterwards.
func (b *Blind) Wipe() {
	secmem.Bytes(b.e)
	b.e = nil
}

// exchange is the server side: Y = s·X for the client's point X. The
// scalar s is opened only for the multiplication, in locked memory.
func exchange(c curve, s *secmem.Box, x *JWK) (*JWK, error) {
	if x.Kty != "EC" || x.Crv != c.name() {
		return nil, fmt.Errorf("%w: request is a %q %q key, want EC %s", ErrBadExchange, x.Kty, x.Crv, c.name())
	}
	X, err := x.point(c)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadExchange, err)
	}
	var Y []byte
	var mulErr error
	if err := s.Open(func(d []byte) error {
		Y, mulErr = c.mul(X, d)
		return nil
	}); err != nil {
		return nil, err
	}
	if err := mulErr; err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadExchange, err)
	}
	return jwkFromPoint(c, Y, AlgExchange, []string{OpDeriveKey}), nil
}

func exchangePoint(srv *JWK) (curve, []byte, error) {
	if !srv.IsExchange() {
		return nil, nil, fmt.Errorf("%w: key %s is not an exchange (deriveKey) key", ErrBadKey, srv.Thumbprint())
	}
	c, err := curveByName(srv.Crv)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %v", ErrBadKey, err)
	}
	S, err := srv.point(c)
	if err != nil {
		return nil, nil, err
	}
	if err := c.check(S); err != nil {
		return nil, nil, fmt.Errorf("%w: %w", ErrBadKey, err)
	}
	return c, S, nil
}
