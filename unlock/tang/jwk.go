package tang

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	_ "crypto/sha1" // thumbprints of old bindings
	_ "crypto/sha256"
	_ "crypto/sha512"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"slices"

	jose "github.com/go-jose/go-jose/v4"
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
var thumbprintHashes = map[int]crypto.Hash{
	27: crypto.SHA1,
	38: crypto.SHA224,
	43: crypto.SHA256,
	64: crypto.SHA384,
	86: crypto.SHA512,
}

// Thumbprint returns k's RFC 7638 thumbprint with SHA-256, the hash Tang and
// Clevis use by default; "" if k is not a valid public key.
func (k *JWK) Thumbprint() string { return k.thumbprint(crypto.SHA256) }

// thumbprint is go-jose's RFC 7638 thumbprint of k's public point.
func (k *JWK) thumbprint(h crypto.Hash) string {
	pub, err := k.ecdsaPublic()
	if err != nil {
		return ""
	}
	sum, err := (&jose.JSONWebKey{Key: pub}).Thumbprint(h)
	if err != nil {
		return ""
	}
	return b64.EncodeToString(sum)
}

// HasThumbprint reports whether thp is k's thumbprint under any supported
// hash, chosen by the thumbprint's length.
func (k *JWK) HasThumbprint(thp string) bool {
	h, ok := thumbprintHashes[len(thp)]
	return ok && k.thumbprint(h) == thp
}

// joseKey is k's public part as go-jose parses a JWK (kty, crv,
// coordinates of the right size, a point on the curve): the key an
// advertisement's signatures are verified with. Only the public members
// are handed over: a private d stays out of go-jose's big.Int.
func (k *JWK) joseKey() (*jose.JSONWebKey, error) {
	pub, err := json.Marshal(struct {
		Kty string `json:"kty"`
		Crv string `json:"crv"`
		X   string `json:"x"`
		Y   string `json:"y"`
	}{k.Kty, k.Crv, k.X, k.Y})
	if err != nil {
		return nil, err
	}
	var jk jose.JSONWebKey
	if err := jk.UnmarshalJSON(pub); err != nil {
		return nil, fmt.Errorf("%w: %s", ErrBadKey, Printable(err.Error()))
	}
	if _, ok := jk.Key.(*ecdsa.PublicKey); !ok {
		return nil, fmt.Errorf("%w: not an EC public key", ErrBadKey)
	}
	return &jk, nil
}

// ecdsaPublic returns k's point as an ECDSA public key, without a JSON
// round trip: thumbprints are computed on every /rec a server answers.
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
