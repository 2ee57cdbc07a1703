package tang

import (
	"crypto"
	"crypto/ecdsa"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	jose "github.com/go-jose/go-jose/v4"
)

var (
	// ErrBadAdvertisement reports an advertisement that is not a well-formed
	// JWS over a JWK set.
	ErrBadAdvertisement = errors.New("malformed Tang advertisement")
	// ErrBadSignature reports an advertisement that one of its own signing
	// keys did not sign.
	ErrBadSignature = errors.New("tang advertisement signature does not verify")
	// ErrUntrusted reports an advertisement none of whose signing keys has
	// the thumbprint the caller trusts: the server's keys changed, or
	// someone is in the middle.
	ErrUntrusted = errors.New("tang advertisement is not signed by the trusted key")
	// ErrNoExchangeKey reports an advertisement without a key to seal to.
	ErrNoExchangeKey = errors.New("tang advertisement has no exchange key")
)

// maxAdvertisement bounds what we read and parse of an advertisement.
const maxAdvertisement = 64 << 10

// maxSigners bounds the signatures and the signing keys of an advertisement
// (tangd serves one signature per active signing key, plus one for
// /adv/{thp}). Each signing key is tried against every signature, so
// without a bound 64 KiB of repeated keys and signatures cost over ten
// thousand P-521 verifications: seconds of CPU that no timeout interrupts.
const maxSigners = 16

// Advertisement is a verified Tang advertisement: a JWS whose payload is the
// server's public JWK set, signed by every signing key in that set.
type Advertisement struct {
	// JWS is the advertisement as served (JWS JSON serialization).
	JWS []byte
	// Payload is the JWK set; Clevis embeds it in the JWE header as "adv".
	Payload json.RawMessage
	Keys    []*JWK
}

type jwsSignature struct {
	Protected string          `json:"protected,omitempty"`
	Header    json.RawMessage `json:"header,omitempty"`
	Signature string          `json:"signature,omitempty"`
}

type jwsJSON struct {
	Payload    string         `json:"payload"`
	Signatures []jwsSignature `json:"signatures,omitempty"`
	jwsSignature
}

// ParseKeySet decodes a JWK set ({"keys":[...]}) and validates every key.
func ParseKeySet(payload []byte) ([]*JWK, error) {
	var set struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if err := json.Unmarshal(payload, &set); err != nil {
		return nil, fmt.Errorf("%w: key set: %v", ErrBadAdvertisement, err)
	}
	if len(set.Keys) == 0 {
		return nil, fmt.Errorf("%w: key set has no keys", ErrBadAdvertisement)
	}
	keys := make([]*JWK, 0, len(set.Keys))
	for i, raw := range set.Keys {
		k, err := ParseJWK(raw)
		if err != nil {
			return nil, fmt.Errorf("%w: key %d: %w", ErrBadAdvertisement, i, err)
		}
		if k.D != "" {
			return nil, fmt.Errorf("%w: key %d carries a private part", ErrBadAdvertisement, i)
		}
		keys = append(keys, k)
	}
	return keys, nil
}

// ParseAdvertisement parses a JWS advertisement and verifies that every
// signing key listed in its payload signed it. It does not decide trust:
// call Trust with the thumbprint the user pinned.
func ParseAdvertisement(data []byte) (*Advertisement, error) {
	if len(data) > maxAdvertisement {
		return nil, fmt.Errorf("%w: larger than %d bytes", ErrBadAdvertisement, maxAdvertisement)
	}
	var jws jwsJSON
	if err := json.Unmarshal(data, &jws); err != nil {
		return nil, fmt.Errorf("%w: not JWS JSON: %v", ErrBadAdvertisement, err)
	}
	sigs := jws.Signatures
	if jws.Signature != "" || jws.Protected != "" {
		if len(sigs) > 0 {
			return nil, fmt.Errorf("%w: both flattened and general JWS members", ErrBadAdvertisement)
		}
		sigs = []jwsSignature{jws.jwsSignature}
	}
	if len(sigs) == 0 {
		return nil, fmt.Errorf("%w: no signatures", ErrBadAdvertisement)
	}
	if len(sigs) > maxSigners {
		return nil, fmt.Errorf("%w: %d signatures, more than %d", ErrBadAdvertisement, len(sigs), maxSigners)
	}
	payload, err := b64.DecodeString(jws.Payload)
	if err != nil {
		return nil, fmt.Errorf("%w: payload is not base64url", ErrBadAdvertisement)
	}
	keys, err := ParseKeySet(payload)
	if err != nil {
		return nil, err
	}
	// go-jose verifies. Its VerifyMulti accepts a JWS that any one
	// signature verifies: every signing key must, so it runs once per key.
	signed, err := jose.ParseSignedJSON(string(data), jwsAlgorithms)
	if err != nil {
		return nil, fmt.Errorf("%w: %s", ErrBadSignature, Printable(err.Error()))
	}
	signers := 0
	for _, k := range keys {
		if !k.IsSigning() {
			continue
		}
		if signers++; signers > maxSigners {
			return nil, fmt.Errorf("%w: more than %d signing keys", ErrBadAdvertisement, maxSigners)
		}
		pub, err := k.joseKey()
		if err != nil {
			return nil, fmt.Errorf("%w: signing key %s: %w", ErrBadAdvertisement, k.Thumbprint(), err)
		}
		if _, _, _, err := signed.VerifyMulti(pub.Key); err != nil {
			return nil, fmt.Errorf("%w: no valid signature by signing key %s", ErrBadSignature, k.Thumbprint())
		}
	}
	if signers == 0 {
		return nil, fmt.Errorf("%w: it lists no signing key", ErrBadAdvertisement)
	}
	return &Advertisement{JWS: data, Payload: payload, Keys: keys}, nil
}

// AdvertisementFromPayload rebuilds an Advertisement from the key set that
// Clevis stores in a JWE header. There is no signature left to check: the
// JWE's authentication tag protects it instead.
func AdvertisementFromPayload(payload []byte) (*Advertisement, error) {
	keys, err := ParseKeySet(payload)
	if err != nil {
		return nil, err
	}
	return &Advertisement{Payload: payload, Keys: keys}, nil
}

// jwsAlgorithms are the signature algorithms an advertisement may use.
var jwsAlgorithms = []jose.SignatureAlgorithm{jose.ES512, jose.ES384, jose.ES256}

// jwsAlgs maps the ECDSA JWS algorithms to their curves and hashes, for
// signing our own advertisements.
var jwsAlgs = map[string]struct {
	crv  string
	hash crypto.Hash
}{
	"ES256": {"P-256", crypto.SHA256},
	"ES384": {"P-384", crypto.SHA384},
	"ES512": {"P-521", crypto.SHA512},
}

func hashFor(alg string, pub *ecdsa.PublicKey) (crypto.Hash, error) {
	a, ok := jwsAlgs[alg]
	if !ok || a.crv != pub.Curve.Params().Name {
		return 0, fmt.Errorf("alg %q does not fit a %s key", alg, pub.Curve.Params().Name)
	}
	return a.hash, nil
}

func algFor(pub *ecdsa.PublicKey) string {
	for alg, a := range jwsAlgs {
		if a.crv == pub.Curve.Params().Name {
			return alg
		}
	}
	return ""
}

// Trust checks that a signing key of the advertisement has thumbprint thp
// (SHA-256, or any other hash jose supports, chosen by its length).
func (a *Advertisement) Trust(thp string) error {
	for _, k := range a.Keys {
		if k.IsSigning() && k.HasThumbprint(thp) {
			return nil
		}
	}
	return fmt.Errorf("%w: no signing key has thumbprint %s (advertised: %s)",
		ErrUntrusted, thp, strings.Join(a.SigningThumbprints(), ", "))
}

// SigningThumbprints lists the SHA-256 thumbprints of the signing keys, the
// values a user pins as "thp".
func (a *Advertisement) SigningThumbprints() []string {
	var out []string
	for _, k := range a.Keys {
		if k.IsSigning() {
			out = append(out, k.Thumbprint())
		}
	}
	return out
}

// ExchangeKey returns the key new bindings seal to: the first exchange key,
// as clevis picks it.
func (a *Advertisement) ExchangeKey() (*JWK, error) {
	for _, k := range a.Keys {
		if k.IsExchange() {
			return k, nil
		}
	}
	return nil, ErrNoExchangeKey
}

// FindExchangeKey returns the exchange key whose thumbprint is kid.
func (a *Advertisement) FindExchangeKey(kid string) (*JWK, error) {
	for _, k := range a.Keys {
		if k.IsExchange() && k.HasThumbprint(kid) {
			return k, nil
		}
	}
	return nil, fmt.Errorf("%w with thumbprint %s", ErrNoExchangeKey, Printable(kid))
}

// signAdvertisement signs payload with every signer, producing the
// flattened JWS JSON form for one signer and the general form for several,
// as tangd does.
func signAdvertisement(payload []byte, signers []*serverKey) ([]byte, error) {
	payloadB64 := b64.EncodeToString(payload)
	sigs := make([]jwsSignature, 0, len(signers))
	for _, k := range signers {
		pub, err := k.ecdsaPublic()
		if err != nil {
			return nil, err
		}
		alg := algFor(pub)
		protected := b64.EncodeToString([]byte(`{"alg":"` + alg + `","cty":"jwk-set+json"}`))
		h, err := hashFor(alg, pub)
		if err != nil {
			return nil, err
		}
		d := h.New()
		d.Write([]byte(protected + "." + payloadB64))
		sig, err := k.signJWS(d.Sum(nil))
		if err != nil {
			return nil, err
		}
		sigs = append(sigs, jwsSignature{Protected: protected, Signature: b64.EncodeToString(sig)})
	}
	out := jwsJSON{Payload: payloadB64}
	if len(sigs) == 1 {
		out.jwsSignature = sigs[0]
	} else {
		out.Signatures = sigs
	}
	return json.Marshal(out)
}
