package tang

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"slices"
)

var b64 = base64.RawURLEncoding

// Algorithms and key operations of Tang's two kinds of keys.
const (
	AlgSign     = "ES512"
	AlgExchange = "ECMR"
	OpSign      = "sign"
	OpVerify    = "verify"
	OpDeriveKey = "deriveKey"
)

// ErrBadKey reports a JWK that is malformed or unusable for what it was
// asked to do.
var ErrBadKey = errors.New("bad JWK")

// JWK is an elliptic-curve JSON Web Key as Tang and jose write it. Fields are
// declared in jose's (sorted) output order. D is only set on server keys.
type JWK struct {
	Alg    string   `json:"alg,omitempty"`
	Crv    string   `json:"crv,omitempty"`
	D      string   `json:"d,omitempty"`
	KeyOps []string `json:"key_ops,omitempty"`
	Kty    string   `json:"kty"`
	X      string   `json:"x,omitempty"`
	Y      string   `json:"y,omitempty"`
}

// ParseJWK decodes one JWK and checks that it is an EC point on a supported
// curve (and, if it carries d, that d is a valid scalar for that point).
func ParseJWK(data []byte) (*JWK, error) {
	var k JWK
	if err := json.Unmarshal(data, &k); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadKey, err)
	}
	if err := k.Validate(); err != nil {
		return nil, err
	}
	return &k, nil
}

// Validate checks that k is an EC key whose point lies on its curve.
func (k *JWK) Validate() error {
	if k.Kty != "EC" {
		return fmt.Errorf("%w: kty is %q, want \"EC\"", ErrBadKey, k.Kty)
	}
	c, err := curveByName(k.Crv)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrBadKey, err)
	}
	pt, err := k.point(c)
	if err != nil {
		return err
	}
	if err := c.check(pt); err != nil {
		return fmt.Errorf("%w: %w", ErrBadKey, err)
	}
	if k.D != "" {
		d, err := b64.DecodeString(k.D)
		if err != nil || len(d) != c.size() {
			return fmt.Errorf("%w: d is not a %d-byte base64url scalar", ErrBadKey, c.size())
		}
		pub, err := c.baseMul(d)
		clear(d)
		if err != nil || string(pub) != string(pt) {
			return fmt.Errorf("%w: d does not match the public point", ErrBadKey)
		}
	}
	return nil
}

// point returns the uncompressed SEC 1 encoding of k's public point.
func (k *JWK) point(c curve) ([]byte, error) {
	x, errX := b64.DecodeString(k.X)
	y, errY := b64.DecodeString(k.Y)
	if errX != nil || errY != nil || len(x) != c.size() || len(y) != c.size() {
		return nil, fmt.Errorf("%w: x and y must be %d-byte base64url coordinates on %s", ErrBadKey, c.size(), k.Crv)
	}
	return append(append([]byte{4}, x...), y...), nil
}

func jwkFromPoint(c curve, pt []byte, alg string, ops []string) *JWK {
	n := c.size()
	return &JWK{
		Alg: alg, Crv: c.name(), KeyOps: ops, Kty: "EC",
		X: b64.EncodeToString(pt[1 : 1+n]), Y: b64.EncodeToString(pt[1+n:]),
	}
}

// Public returns k without its private part and with only the key
// operations a public key can do, as `jose jwk pub` does.
func (k *JWK) Public() *JWK {
	p := *k
	p.D = ""
	p.KeyOps = slices.DeleteFunc(slices.Clone(k.KeyOps), func(op string) bool {
		return op == OpSign || op == "decrypt" || op == "unwrapKey"
	})
	if len(k.KeyOps) > 0 && len(p.KeyOps) == 0 {
		p.KeyOps = nil
	}
	return &p
}

// Can reports whether k lists op in key_ops. Unlike jose we treat a key
// without key_ops as good for nothing: tangd would use it for everything.
func (k *JWK) Can(op string) bool { return slices.Contains(k.KeyOps, op) }

// IsSigning reports whether k is one of Tang's advertisement signing keys.
func (k *JWK) IsSigning() bool { return k.Can(OpVerify) && (k.Alg == "" || k.Alg == AlgSign) }

// IsExchange reports whether k is a Tang exchange (recovery) key.
func (k *JWK) IsExchange() bool { return k.Can(OpDeriveKey) && (k.Alg == "" || k.Alg == AlgExchange) }

// thumbprintHashes maps the length of a base64url thumbprint to its hash, so
// a binding made with any hash jose supports (old ones used SHA-1) resolves.
var thumbprintHashes = map[int]func() hash.Hash{
	27: sha1.New,
	38: sha256.New224,
	43: sha256.New,
	64: sha512.New384,
	86: sha512.New,
}

// Thumbprint returns k's RFC 7638 thumbprint with SHA-256, the hash Tang and
// Clevis use by default.
func (k *JWK) Thumbprint() string { return k.thumbprint(sha256.New) }

func (k *JWK) thumbprint(h func() hash.Hash) string {
	// RFC 7638: the required members in lexicographic order, no whitespace.
	// json.Marshal of a string is the canonical JSON string.
	crv, _ := json.Marshal(k.Crv)
	x, _ := json.Marshal(k.X)
	y, _ := json.Marshal(k.Y)
	d := h()
	fmt.Fprintf(d, `{"crv":%s,"kty":"EC","x":%s,"y":%s}`, crv, x, y)
	return b64.EncodeToString(d.Sum(nil))
}

// HasThumbprint reports whether thp is k's thumbprint under any supported
// hash, chosen by the thumbprint's length.
func (k *JWK) HasThumbprint(thp string) bool {
	h, ok := thumbprintHashes[len(thp)]
	return ok && k.thumbprint(h) == thp
}

// ecdsaPublic returns k's point as an ECDSA public key for verifying.
func (k *JWK) ecdsaPublic() (*ecdsa.PublicKey, error) {
	c, err := curveByName(k.Crv)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadKey, err)
	}
	pt, err := k.point(c)
	if err != nil {
		return nil, err
	}
	ec, err := stdCurve(k.Crv)
	if err != nil {
		return nil, err
	}
	pub, err := ecdsa.ParseUncompressedPublicKey(ec, pt)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadKey, err)
	}
	return pub, nil
}

func stdCurve(crv string) (elliptic.Curve, error) {
	switch crv {
	case "P-256":
		return elliptic.P256(), nil
	case "P-384":
		return elliptic.P384(), nil
	case "P-521":
		return elliptic.P521(), nil
	}
	return nil, fmt.Errorf("%w: unsupported curve %q", ErrBadKey, crv)
}
