package tang

import (
	"bytes"
	"crypto/ecdh"
	"crypto/elliptic"
	"crypto/rand"
	"errors"
	"math/big"
	"strings"
	"testing"

	"filippo.io/nistec"

	"github.com/sealproxy/sealproxy/internal/secmem"
)

// These tests reach the unexported point arithmetic; they cannot import
// testenv (it imports this package), so they build their own keys.

var testCurves = []struct {
	name string
	std  elliptic.Curve
	ecdh ecdh.Curve
}{
	{"P-256", elliptic.P256(), ecdh.P256()},
	{"P-384", elliptic.P384(), ecdh.P384()},
	{"P-521", elliptic.P521(), ecdh.P521()},
}

func curveOrder(t *testing.T, name string) ([]byte, byte) {
	t.Helper()
	switch c := curves[name].(type) {
	case *nistCurve[*nistec.P256Point]:
		return c.order, c.topMask
	case *nistCurve[*nistec.P384Point]:
		return c.order, c.topMask
	case *nistCurve[*nistec.P521Point]:
		return c.order, c.topMask
	}
	t.Fatalf("curve %s has an unexpected type %T", name, curves[name])
	return nil, 0
}

func TestCurveConstantsMatchCryptoElliptic(t *testing.T) {
	if len(curves) != len(testCurves) {
		t.Errorf("%d curves registered, want %d", len(curves), len(testCurves))
	}
	for _, tc := range testCurves {
		t.Run(tc.name, func(t *testing.T) {
			c, err := curveByName(tc.name)
			if err != nil {
				t.Fatal(err)
			}
			p := tc.std.Params()
			if want := (p.BitSize + 7) / 8; c.size() != want {
				t.Errorf("size %d, want %d", c.size(), want)
			}
			if c.name() != p.Name {
				t.Errorf("name %q, want %q", c.name(), p.Name)
			}
			n, mask := curveOrder(t, tc.name)
			if new(big.Int).SetBytes(n).Cmp(p.N) != 0 || len(n) != c.size() {
				t.Errorf("order %x, want %x in %d bytes", n, p.N, c.size())
			}
			// The mask must keep every bit of n's top byte and clear
			// every bit above its highest one, so that rejection sampling
			// is uniform and terminates quickly.
			top := n[0]
			if top&^mask != 0 {
				t.Errorf("top mask %#x clears bits of n's top byte %#x", mask, top)
			}
			if mask&(mask+1) != 0 || (mask>>1) >= top {
				t.Errorf("top mask %#x is not the tightest all-ones mask for %#x", mask, top)
			}
			// The generator from baseMul is crypto/elliptic's.
			one := make([]byte, c.size())
			one[len(one)-1] = 1
			g, err := c.baseMul(one)
			if err != nil {
				t.Fatal(err)
			}
			want := append(append([]byte{4}, p.Gx.FillBytes(make([]byte, c.size()))...), p.Gy.FillBytes(make([]byte, c.size()))...)
			if !bytes.Equal(g, want) {
				t.Errorf("1·G = %x, want %x", g, want)
			}
		})
	}
	if _, err := curveByName("P-192"); err == nil {
		t.Error("curveByName accepted P-192")
	}
}

// seqReader hands out the given chunks in order, then fails.
type seqReader struct{ chunks [][]byte }

func (r *seqReader) Read(p []byte) (int, error) {
	if len(r.chunks) == 0 {
		return 0, errors.New("seqReader: out of data")
	}
	n := copy(p, r.chunks[0])
	r.chunks[0] = r.chunks[0][n:]
	if len(r.chunks[0]) == 0 {
		r.chunks = r.chunks[1:]
	}
	return n, nil
}

func TestRandomBelow(t *testing.T) {
	n, _ := curveOrder(t, "P-256")
	size := len(n)
	minus1 := new(big.Int).Sub(new(big.Int).SetBytes(n), big.NewInt(1)).FillBytes(make([]byte, size))
	zero := make([]byte, size)
	ones := bytes.Repeat([]byte{0xff}, size)
	one := make([]byte, size)
	one[size-1] = 1

	tests := []struct {
		name    string
		chunks  [][]byte
		want    []byte
		wantErr string
	}{
		{"zero rejected", [][]byte{zero, one}, one, ""},
		{"n rejected", [][]byte{n, minus1}, minus1, ""},
		{"above n rejected", [][]byte{ones, ones, one}, one, ""},
		{"n-1 accepted", [][]byte{minus1}, minus1, ""},
		{"reader fails", nil, nil, "reading randomness"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			k := make([]byte, size)
			var chunks [][]byte
			for _, c := range tc.chunks {
				chunks = append(chunks, bytes.Clone(c))
			}
			err := randomBelow(&seqReader{chunks}, k, n, 0xff)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(k, tc.want) {
				t.Fatalf("k = %x, want %x", k, tc.want)
			}
		})
	}

	t.Run("only zeros gives up and wipes", func(t *testing.T) {
		k := make([]byte, size)
		var chunks [][]byte
		for range 1000 {
			chunks = append(chunks, make([]byte, size))
		}
		if err := randomBelow(&seqReader{chunks}, k, n, 0xff); err == nil || !strings.Contains(err.Error(), "out-of-range") {
			t.Fatalf("err = %v, want out-of-range", err)
		}
	})
	t.Run("only n gives up and wipes", func(t *testing.T) {
		k := make([]byte, size)
		var chunks [][]byte
		for range 1000 {
			chunks = append(chunks, bytes.Clone(n))
		}
		if err := randomBelow(&seqReader{chunks}, k, n, 0xff); err == nil {
			t.Fatal("accepted n")
		}
		if !bytes.Equal(k, zero) {
			t.Fatalf("k not wiped after failure: %x", k)
		}
	})
	t.Run("wrong buffer length", func(t *testing.T) {
		if err := randomBelow(rand.Reader, make([]byte, size-1), n, 0xff); err == nil {
			t.Fatal("accepted a short buffer")
		}
	})
	t.Run("top mask applied", func(t *testing.T) {
		n521, mask := curveOrder(t, "P-521")
		k := make([]byte, len(n521))
		want := bytes.Repeat([]byte{0xff}, len(n521))
		want[0] = 0xff
		// 0xff.. masked to 0x01ff.. is still above n (0x01ff..fa..), and
		// then 0xfe 00.. 01 masked to 0x00 00.. 01 is accepted.
		next := make([]byte, len(n521))
		next[0], next[len(next)-1] = 0xfe, 1
		if err := randomBelow(&seqReader{[][]byte{want, next}}, k, n521, mask); err != nil {
			t.Fatal(err)
		}
		exp := make([]byte, len(n521))
		exp[len(exp)-1] = 1
		if !bytes.Equal(k, exp) {
			t.Fatalf("k = %x, want %x", k, exp)
		}
	})
	t.Run("uniform draws stay in range", func(t *testing.T) {
		for _, tc := range testCurves {
			c := curves[tc.name]
			nb := tc.std.Params().N
			k := make([]byte, c.size())
			for range 200 {
				if err := c.randomScalar(k); err != nil {
					t.Fatal(err)
				}
				v := new(big.Int).SetBytes(k)
				if v.Sign() == 0 || v.Cmp(nb) >= 0 {
					t.Fatalf("%s: scalar %x out of [1, n-1]", tc.name, k)
				}
			}
		}
	})
}

func TestLessThan(t *testing.T) {
	for range 2000 {
		a, b := make([]byte, 4), make([]byte, 4)
		rand.Read(a)
		rand.Read(b)
		if a[0]&1 == 0 {
			copy(b[:2], a[:2]) // make shared prefixes common
		}
		want := new(big.Int).SetBytes(a).Cmp(new(big.Int).SetBytes(b)) < 0
		if got := lessThan(a, b); got != want {
			t.Fatalf("lessThan(%x, %x) = %v, want %v", a, b, got, want)
		}
	}
	if lessThan([]byte{1, 2}, []byte{1, 2}) {
		t.Error("lessThan(x, x) = true")
	}
	if !isZero(make([]byte, 9)) || isZero([]byte{0, 0, 1}) {
		t.Error("isZero is wrong")
	}
}

// testExchangeKey makes a server exchange key on crv.
func testExchangeKey(t *testing.T, crv string) (*JWK, []byte) {
	t.Helper()
	c := curves[crv]
	d := make([]byte, c.size())
	if err := c.randomScalar(d); err != nil {
		t.Fatal(err)
	}
	pt, err := c.baseMul(d)
	if err != nil {
		t.Fatal(err)
	}
	k := jwkFromPoint(c, pt, AlgExchange, []string{OpDeriveKey})
	k.D = b64.EncodeToString(d)
	if err := k.Validate(); err != nil {
		t.Fatal(err)
	}
	return k, d
}

// exchangeJWK is the server side of the exchange with a test key whose
// private part is in the JWK: it seals d as a key file's would be.
func exchangeJWK(t *testing.T, srv, x *JWK) (*JWK, error) {
	t.Helper()
	c, err := curveByName(srv.Crv)
	if err != nil {
		t.Fatal(err)
	}
	d, err := b64.DecodeString(srv.D)
	if err != nil {
		t.Fatal(err)
	}
	s, err := secmem.Seal(d)
	if err != nil {
		t.Fatal(err)
	}
	return exchange(c, s, x)
}

func TestMcCallumRelyea(t *testing.T) {
	for _, tc := range testCurves {
		t.Run(tc.name, func(t *testing.T) {
			srv, d := testExchangeKey(t, tc.name)
			pub := srv.Public()
			epk, z, err := Bind(pub)
			if err != nil {
				t.Fatal(err)
			}
			if epk.Crv != tc.name || epk.D != "" || epk.Validate() != nil {
				t.Fatalf("epk = %+v", epk)
			}

			// Independently: K = s·C, whose x is the ECDH shared secret.
			priv, err := tc.ecdh.NewPrivateKey(d)
			if err != nil {
				t.Fatal(err)
			}
			cpt, err := epk.point(curves[tc.name])
			if err != nil {
				t.Fatal(err)
			}
			cpub, err := tc.ecdh.NewPublicKey(cpt)
			if err != nil {
				t.Fatal(err)
			}
			want, err := priv.ECDH(cpub)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(z, want) {
				t.Fatalf("Bind z = %x, want s·C.x = %x", z, want)
			}

			b1, err := NewBlind(pub, epk)
			if err != nil {
				t.Fatal(err)
			}
			b2, err := NewBlind(pub, epk)
			if err != nil {
				t.Fatal(err)
			}
			if bytes.Equal(b1.Point(), b2.Point()) || bytes.Equal(b1.Point(), cpt) {
				t.Fatal("blinded point X does not change per Blind (or equals C)")
			}
			for i, b := range []*Blind{b1, b2} {
				req := b.Request()
				if req.Alg != AlgExchange || req.D != "" {
					t.Fatalf("request %+v", req)
				}
				y, err := exchangeJWK(t, srv, req)
				if err != nil {
					t.Fatal(err)
				}
				z2, err := b.Unblind(y)
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(z2, z) {
					t.Fatalf("blind %d: recovered z = %x, want %x", i, z2, z)
				}
				// A retry with the same Blind gives the same z.
				z3, err := b.Unblind(y)
				if err != nil || !bytes.Equal(z3, z) {
					t.Fatalf("blind %d: second Unblind = %x, %v", i, z3, err)
				}
				b.Wipe()
				if _, err := b.Unblind(y); err == nil {
					t.Fatal("Unblind worked after Wipe")
				}
			}
		})
	}
}

// offCurve returns a copy of k with y changed so the point is off the curve.
func offCurve(k *JWK) *JWK {
	bad := *k
	y, _ := b64.DecodeString(k.Y)
	y[len(y)-1] ^= 1
	bad.Y = b64.EncodeToString(y)
	return &bad
}

func TestPointValidation(t *testing.T) {
	for _, tc := range testCurves {
		t.Run(tc.name, func(t *testing.T) {
			c := curves[tc.name]
			srv, _ := testExchangeKey(t, tc.name)
			S, _ := srv.point(c)
			n := tc.std.Params().N.FillBytes(make([]byte, c.size()))

			bad := bytes.Clone(S)
			bad[len(bad)-1] ^= 1
			pBytes := tc.std.Params().P.FillBytes(make([]byte, c.size()))
			aboveP := append(append([]byte{4}, pBytes...), S[1+c.size():]...)
			for name, pt := range map[string][]byte{
				"off curve":          bad,
				"infinity":           {0},
				"all zero":           make([]byte, 1+2*c.size()),
				"compressed":         append([]byte{2 + S[len(S)-1]&1}, S[1:1+c.size()]...),
				"short":              S[:len(S)-1],
				"x not reduced (=p)": aboveP,
			} {
				if err := c.check(pt); !errors.Is(err, ErrNotOnCurve) {
					t.Errorf("check(%s) = %v, want ErrNotOnCurve", name, err)
				}
			}
			if err := c.check(S); err != nil {
				t.Errorf("check(S) = %v", err)
			}

			// Results at infinity are refused, not encoded.
			if _, err := c.mul(S, n); !errors.Is(err, ErrNotOnCurve) {
				t.Errorf("n·S = %v, want ErrNotOnCurve", err)
			}
			if _, err := c.baseMul(make([]byte, c.size())); !errors.Is(err, ErrNotOnCurve) {
				t.Errorf("0·G = %v, want ErrNotOnCurve", err)
			}
			if _, err := c.sub(S, S); !errors.Is(err, ErrNotOnCurve) {
				t.Errorf("S−S = %v, want ErrNotOnCurve", err)
			}
			if _, err := c.add(S, bad); !errors.Is(err, ErrNotOnCurve) {
				t.Errorf("S+bad = %v, want ErrNotOnCurve", err)
			}

			// Off-curve points from the network at every step.
			epk, _, err := Bind(srv.Public())
			if err != nil {
				t.Fatal(err)
			}
			if _, err := NewBlind(srv.Public(), offCurve(epk)); !errors.Is(err, ErrBadExchange) || !errors.Is(err, ErrNotOnCurve) {
				t.Errorf("NewBlind(off-curve epk) = %v, want ErrBadExchange and ErrNotOnCurve", err)
			}
			if _, _, err := Bind(offCurve(srv.Public())); !errors.Is(err, ErrBadKey) || !errors.Is(err, ErrNotOnCurve) {
				t.Errorf("Bind(off-curve server key) = %v, want ErrBadKey and ErrNotOnCurve", err)
			}
			b, err := NewBlind(srv.Public(), epk)
			if err != nil {
				t.Fatal(err)
			}
			defer b.Wipe()
			if _, err := exchangeJWK(t, srv, offCurve(b.Request())); !errors.Is(err, ErrBadExchange) || !errors.Is(err, ErrNotOnCurve) {
				t.Errorf("exchange(off-curve X) = %v, want ErrBadExchange and ErrNotOnCurve", err)
			}
			y, err := exchangeJWK(t, srv, b.Request())
			if err != nil {
				t.Fatal(err)
			}
			if _, err := b.Unblind(offCurve(y)); !errors.Is(err, ErrBadExchange) || !errors.Is(err, ErrNotOnCurve) {
				t.Errorf("Unblind(off-curve Y) = %v, want ErrBadExchange and ErrNotOnCurve", err)
			}
			other := "P-256"
			if tc.name == "P-256" {
				other = "P-384"
			}
			foreign, _ := testExchangeKey(t, other)
			if _, err := b.Unblind(foreign.Public()); !errors.Is(err, ErrBadExchange) {
				t.Errorf("Unblind(point on %s) = %v, want ErrBadExchange", other, err)
			}
			if _, err := exchangeJWK(t, srv, foreign.Public()); !errors.Is(err, ErrBadExchange) {
				t.Errorf("exchange(point on %s) = %v, want ErrBadExchange", other, err)
			}
			if _, err := NewBlind(srv.Public(), foreign.Public()); !errors.Is(err, ErrBadExchange) {
				t.Errorf("NewBlind(epk on %s) = %v, want ErrBadExchange", other, err)
			}
			// A server answering Y = e·S makes K = Y − e·S the point at infinity.
			eS, err := c.mul(S, b.e)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := b.Unblind(jwkFromPoint(c, eS, "", nil)); !errors.Is(err, ErrBadExchange) || !errors.Is(err, ErrNotOnCurve) {
				t.Errorf("Unblind(Y = e·S) = %v, want ErrBadExchange and ErrNotOnCurve", err)
			}
		})
	}
}

func TestBindRefusesSigningKey(t *testing.T) {
	k, file, err := newKeyFile(AlgSign, []string{OpSign, OpVerify})
	if err != nil {
		t.Fatal(err)
	}
	file.Destroy()
	if _, _, err := Bind(k.Public()); !errors.Is(err, ErrBadKey) {
		t.Fatalf("Bind(signing key) = %v, want ErrBadKey", err)
	}
	if _, err := NewBlind(k.Public(), k.Public()); !errors.Is(err, ErrBadKey) {
		t.Fatalf("NewBlind(signing key) = %v, want ErrBadKey", err)
	}
}
