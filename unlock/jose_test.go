package unlock

import (
	"bytes"
	"errors"
	"strings"
	"testing"
)

// The guarantees kept by our own code at the boundary with go-jose
// (docs/unlock.md, "go-jose and our code"). Each test fails if that code
// is bypassed.

// TestOversizedJWERefusedBeforeParse: the MaxJWE bound runs before go-jose
// (or our own parts) reads anything. An otherwise valid JWE made larger
// than the bound is refused with a handful of allocations: parsing it
// (splitting, base64 decoding, go-jose's copies) would allocate dozens.
func TestOversizedJWERefusedBeforeParse(t *testing.T) {
	cek := bytes.Repeat([]byte{7}, cekSize)
	hdr := &header{Alg: "dir", Enc: encA256GCM, Clevis: &clevisNode{Pin: "sss"}}
	small, err := sealContent(hdr, cek, []byte("x"))
	if err != nil {
		t.Fatal(err)
	}
	parts := strings.Split(string(small), ".")
	// The ciphertext grown to just past MaxJWE: still five well-formed
	// base64url parts, which parse (and fail only at the tag) without the
	// bound.
	parts[3] = strings.Repeat("A", MaxJWE-len(small)+len(parts[3])+4)
	big := []byte(strings.Join(parts, "."))
	if _, err := parseJWE(big[:MaxJWE-8]); err == nil || strings.Contains(err.Error(), "larger than") {
		t.Fatalf("parseJWE just under the bound = %v, want a parse (not a size) error", err)
	}
	if _, err := parseJWE(big); !errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), "larger than") {
		t.Fatalf("parseJWE(%d bytes) = %v, want ErrMalformed: larger than", len(big), err)
	}
	under := testing.AllocsPerRun(3, func() { parseJWE(big[:MaxJWE-8]) })
	over := testing.AllocsPerRun(3, func() { parseJWE(big) })
	if over > 4 || under < 2*over {
		t.Fatalf("parseJWE allocates %.0f times over the bound, %.0f under it: the bound does not run first", over, under)
	}
}

// TestAlgorithmAllowList: only what clevis writes is parsed at all: "alg"
// ECDH-ES (tang) or dir (sss), "enc" A256GCM. Everything else go-jose
// supports (key wrapping, RSA, PBES2, CBC-HMAC, "none") is refused before
// a pin sees the JWE, for tang and sss alike.
func TestAlgorithmAllowList(t *testing.T) {
	cek := bytes.Repeat([]byte{7}, cekSize)
	for _, pin := range []string{"tang", "sss"} {
		for _, tc := range []struct{ alg, enc string }{
			{"RSA-OAEP", "A256GCM"}, {"RSA1_5", "A256GCM"}, {"A256KW", "A256GCM"}, {"A256GCMKW", "A256GCM"},
			{"ECDH-ES+A256KW", "A256GCM"}, {"PBES2-HS512+A256KW", "A256GCM"}, {"none", "A256GCM"}, {"", "A256GCM"},
			{"dir", "A128GCM"}, {"dir", "A256CBC-HS512"}, {"ECDH-ES", "A128CBC-HS256"}, {"ECDH-ES", ""},
		} {
			hdr := &header{Alg: tc.alg, Enc: tc.enc, Clevis: &clevisNode{Pin: pin}}
			jwe, err := sealContent(hdr, cek, []byte("x"))
			if err != nil {
				t.Fatal(err)
			}
			_, err = parseJWE(jwe)
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("%s pin, alg %q enc %q: parseJWE = %v, want ErrMalformed", pin, tc.alg, tc.enc, err)
			}
			want := `enc "` + tc.enc + `"`
			if tc.enc == encA256GCM {
				want = `alg "` + tc.alg + `"`
			}
			if !strings.Contains(err.Error(), want) {
				t.Fatalf("%s pin, alg %q enc %q: %v does not name %q", pin, tc.alg, tc.enc, err, want)
			}
		}
	}
	// The two clevis uses parse.
	for _, alg := range []string{"ECDH-ES", "dir"} {
		jwe, _ := sealContent(&header{Alg: alg, Enc: encA256GCM, Clevis: &clevisNode{Pin: "sss"}}, cek, []byte("x"))
		if _, err := parseJWE(jwe); err != nil {
			t.Fatalf("alg %s: %v", alg, err)
		}
	}
}
