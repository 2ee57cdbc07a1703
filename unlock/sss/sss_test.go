package sss_test

import (
	"bytes"
	"errors"
	"math/big"
	"testing"

	"github.com/sealproxy/sealproxy/unlock/sss"
)

// p256m189 = 2^256 − 189, the largest prime below 2^256.
var p256m189 = new(big.Int).Sub(new(big.Int).Lsh(big.NewInt(1), 256), big.NewInt(189))

func be32(v *big.Int) []byte { return v.FillBytes(make([]byte, sss.KeyBytes)) }

func point(x, y *big.Int) []byte { return append(be32(x), be32(y)...) }

// TestCombineKnownAnswer interpolates f(x) = 42 + 7x + 3x² over
// p = 2^256 − 189 from the points (1, 52), (2, 68), (3, 90), worked by hand.
func TestCombineKnownAnswer(t *testing.T) {
	p := be32(p256m189)
	shares := [][]byte{
		point(big.NewInt(1), big.NewInt(52)),
		point(big.NewInt(2), big.NewInt(68)),
		point(big.NewInt(3), big.NewInt(90)),
	}
	for _, order := range [][]int{{0, 1, 2}, {2, 0, 1}, {1, 2, 0}} {
		in := [][]byte{shares[order[0]], shares[order[1]], shares[order[2]]}
		got, err := sss.Combine(p, in)
		if err != nil {
			t.Fatal(err)
		}
		if want := be32(big.NewInt(42)); !bytes.Equal(got, want) {
			t.Fatalf("Combine(order %v) = %x, want 42", order, got)
		}
	}
	// Two points of a degree-2 polynomial give the line through them:
	// through (1, 52) and (2, 68) it is 36 + 16x, so 36 at zero.
	got, err := sss.Combine(p, shares[:2])
	if err != nil {
		t.Fatal(err)
	}
	if want := be32(big.NewInt(36)); !bytes.Equal(got, want) {
		t.Fatalf("Combine(2 of 3) = %x, want 36", got)
	}
	// y values wrap modulo p: f(x) = (p − 1) + x at x = 1 is 0.
	pm1 := new(big.Int).Sub(p256m189, big.NewInt(1))
	got, err = sss.Combine(p, [][]byte{point(big.NewInt(1), big.NewInt(0)), point(big.NewInt(2), big.NewInt(1))})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, be32(pm1)) {
		t.Fatalf("Combine(wrapping) = %x, want p−1", got)
	}
}

// subsets calls f with every k-element subset of {0..n-1}.
func subsets(n, k int, f func([]int)) {
	var rec func(start int, cur []int)
	rec = func(start int, cur []int) {
		if len(cur) == k {
			f(cur)
			return
		}
		for i := start; i < n; i++ {
			rec(i+1, append(cur, i))
		}
	}
	rec(0, nil)
}

func TestAnyTOfN(t *testing.T) {
	for _, tc := range []struct{ t, n int }{{1, 1}, {1, 3}, {2, 3}, {3, 5}, {5, 5}} {
		poly, err := sss.New(tc.t)
		if err != nil {
			t.Fatal(err)
		}
		secret, prime := poly.Secret(), poly.Prime()
		var shares [][]byte
		for range tc.n {
			s, err := poly.Share()
			if err != nil {
				t.Fatal(err)
			}
			shares = append(shares, s)
		}
		poly.Wipe()
		for k := 1; k <= tc.n; k++ {
			subsets(tc.n, k, func(idx []int) {
				var in [][]byte
				for _, i := range idx {
					in = append(in, shares[i])
				}
				got, err := sss.Combine(prime, in)
				if err != nil {
					t.Fatalf("%d-of-%d, shares %v: %v", tc.t, tc.n, idx, err)
				}
				// t or more shares give the secret; fewer give something
				// else (Combine cannot tell: the JWE tag does).
				if k >= tc.t && !bytes.Equal(got, secret) {
					t.Fatalf("%d-of-%d, shares %v: got %x, want the secret", tc.t, tc.n, idx, got)
				}
				if k < tc.t && bytes.Equal(got, secret) {
					t.Fatalf("%d-of-%d, shares %v: fewer than t shares gave the secret", tc.t, tc.n, idx)
				}
			})
		}
	}
}

func TestPolynomial(t *testing.T) {
	if _, err := sss.New(0); err == nil {
		t.Fatal("New(0) succeeded")
	}
	if _, err := sss.New(-1); err == nil {
		t.Fatal("New(-1) succeeded")
	}
	poly, err := sss.New(3)
	if err != nil {
		t.Fatal(err)
	}
	defer poly.Wipe()
	prime, secret := poly.Prime(), poly.Secret()
	p := new(big.Int).SetBytes(prime)
	if len(prime) != 32 || p.BitLen() != 256 || !p.ProbablyPrime(32) {
		t.Fatalf("p = %x is not a 256-bit prime", prime)
	}
	if len(secret) != 32 || new(big.Int).SetBytes(secret).Cmp(p) >= 0 {
		t.Fatalf("secret %x is not an element of the field", secret)
	}
	other, err := sss.New(3)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(other.Prime(), prime) || bytes.Equal(other.Secret(), secret) {
		t.Fatal("two polynomials share a prime or a secret")
	}
	other.Wipe()
	seen := map[string]bool{}
	for range 50 {
		s, err := poly.Share()
		if err != nil {
			t.Fatal(err)
		}
		if len(s) != 64 {
			t.Fatalf("share of %d bytes", len(s))
		}
		x, y := new(big.Int).SetBytes(s[:32]), new(big.Int).SetBytes(s[32:])
		if x.Sign() == 0 || x.Cmp(p) >= 0 || y.Cmp(p) >= 0 {
			t.Fatalf("share %x is not a point of the field", s)
		}
		if seen[x.String()] {
			t.Fatal("two shares with the same x")
		}
		seen[x.String()] = true
	}
	// t = 1: every share's y is the secret itself.
	one, err := sss.New(1)
	if err != nil {
		t.Fatal(err)
	}
	s, _ := one.Share()
	if !bytes.Equal(s[32:], one.Secret()) {
		t.Fatal("t=1 share's y is not the secret")
	}
	one.Wipe()
}

func TestCombineRejects(t *testing.T) {
	p := be32(p256m189)
	one, two, three := big.NewInt(1), big.NewInt(2), big.NewInt(3)
	good1, good2 := point(one, big.NewInt(5)), point(two, big.NewInt(9))
	composite := be32(new(big.Int).Sub(p256m189, big.NewInt(2))) // 2^256 − 191 is odd and composite
	if new(big.Int).SetBytes(composite).ProbablyPrime(20) {
		t.Fatal("test bug: p − 2 is prime")
	}
	even := be32(new(big.Int).Sub(p256m189, big.NewInt(1)))
	carmichael := be32(big.NewInt(561)) // 3·11·17: fools a Fermat test
	tests := []struct {
		name   string
		prime  []byte
		shares [][]byte
	}{
		{"no shares", p, nil},
		{"duplicate share", p, [][]byte{good1, good1}},
		{"same x, other y", p, [][]byte{good1, point(one, big.NewInt(6))}},
		{"x zero", p, [][]byte{point(big.NewInt(0), big.NewInt(5)), good2}},
		{"x equal to p", p, [][]byte{point(p256m189, big.NewInt(5)), good2}},
		{"x above p", p, [][]byte{append(bytes.Repeat([]byte{0xff}, 32), be32(three)...), good2}},
		{"y equal to p", p, [][]byte{point(one, p256m189), good2}},
		{"share short", p, [][]byte{good1[:63], good2}},
		{"share long", p, [][]byte{append(bytes.Clone(good1), 0), good2}},
		{"share empty", p, [][]byte{{}, good2}},
		{"p composite", composite, [][]byte{good1, good2}},
		{"p even", even, [][]byte{good1, good2}},
		{"p Carmichael number", carmichael, [][]byte{point(one, big.NewInt(5)), point(two, big.NewInt(9))}},
		{"p zero", make([]byte, 32), [][]byte{good1}},
		{"p two", be32(two), [][]byte{good1}},
		{"p short", p[1:], [][]byte{good1, good2}},
		{"p long", append([]byte{0}, p...), [][]byte{good1, good2}},
		{"p empty", nil, [][]byte{good1}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := sss.Combine(tc.prime, tc.shares)
			if !errors.Is(err, sss.ErrBadShare) {
				t.Fatalf("Combine = %x, %v; want ErrBadShare", got, err)
			}
			if got != nil {
				t.Fatal("a secret returned with the error")
			}
		})
	}
	// A 32-byte prime with leading zero bytes is a valid (small) field.
	small := be32(big.NewInt(1_000_003))
	got, err := sss.Combine(small, [][]byte{point(one, big.NewInt(5)), point(two, big.NewInt(9))})
	if err != nil || !bytes.Equal(got, be32(big.NewInt(1))) {
		t.Fatalf("Combine over a small prime = %x, %v; want 1", got, err)
	}
}

func FuzzCombine(f *testing.F) {
	f.Add(be32(p256m189), point(big.NewInt(1), big.NewInt(52)), point(big.NewInt(2), big.NewInt(68)))
	f.Fuzz(func(t *testing.T, prime, a, b []byte) {
		got, err := sss.Combine(prime, [][]byte{a, b})
		if err != nil {
			if !errors.Is(err, sss.ErrBadShare) || got != nil {
				t.Fatalf("Combine = %x, %v", got, err)
			}
			return
		}
		// The line through a and b evaluated at zero, the long way round.
		p := new(big.Int).SetBytes(prime)
		x1, y1 := new(big.Int).SetBytes(a[:32]), new(big.Int).SetBytes(a[32:])
		x2, y2 := new(big.Int).SetBytes(b[:32]), new(big.Int).SetBytes(b[32:])
		// f(0) = (y1·x2 − y2·x1) / (x2 − x1)
		num := new(big.Int).Sub(new(big.Int).Mul(y1, x2), new(big.Int).Mul(y2, x1))
		den := new(big.Int).ModInverse(new(big.Int).Mod(new(big.Int).Sub(x2, x1), p), p)
		want := new(big.Int).Mod(new(big.Int).Mul(num, den), p)
		if !bytes.Equal(got, be32(want)) {
			t.Fatalf("Combine = %x, want %x", got, be32(want))
		}
	})
}
