package tang

import (
	"crypto/ecdsa"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/awnumar/memguard"

	"github.com/sealproxy/sealproxy/internal/secmem"
)

// maxKeyFile bounds a key file: a P-521 JWK with its private part is
// under 600 bytes.
const maxKeyFile = 16 << 10

// maxScalar is the longest private scalar (P-521).
const maxScalar = 66

// serverKey is one key of a key directory: its public JWK (D is empty)
// and its private scalar, sealed.
type serverKey struct {
	*JWK
	c curve
	d *secmem.Box
}

// loadKeyFile reads a key file into locked memory, takes its private
// scalar out of the JSON without making a string of it, seals the scalar
// and wipes the file's bytes. Errors never quote the file's content.
func loadKeyFile(path string) (*serverKey, error) {
	f, err := openKeyFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading Tang key: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("reading Tang key: %w", err)
	}
	if st.Size() <= 0 || st.Size() > maxKeyFile {
		return nil, &KeyFileError{path, fmt.Errorf("%w: %d bytes, want 1 to %d", ErrBadKey, st.Size(), maxKeyFile)}
	}
	if err := checkMemlock(); err != nil {
		return nil, err
	}
	// One locked buffer: the file (and one byte to notice it growing),
	// then room for the decoded scalar.
	size := int(st.Size()) + 1
	buf := memguard.NewBuffer(size + maxScalar)
	defer buf.Destroy()
	data, scalar := buf.Bytes()[:size], buf.Bytes()[size:]
	n, err := io.ReadFull(f, data)
	switch {
	case err == nil:
		return nil, &KeyFileError{path, fmt.Errorf("%w: the file grew while it was read", ErrBadKey)}
	case errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF):
	default:
		return nil, fmt.Errorf("reading Tang key: %w", err)
	}
	k, err := parseKeyFile(data[:n], scalar)
	if err != nil {
		return nil, &KeyFileError{path, err}
	}
	return k, nil
}

// keyFileJSON is a key file's JSON with d decoded straight into locked
// memory.
type keyFileJSON struct {
	Alg    string      `json:"alg"`
	Crv    string      `json:"crv"`
	D      scalarField `json:"d"`
	KeyOps []string    `json:"key_ops"`
	Kty    string      `json:"kty"`
	X      string      `json:"x"`
	Y      string      `json:"y"`
}

// scalarField decodes a base64url JSON string into dst, which the caller
// owns (and wipes); it accepts only the form jose writes (no escapes), so
// the raw JSON bytes are the base64url text and nothing is copied on the
// way.
type scalarField struct {
	dst []byte
	n   int
	set bool
}

var errScalarField = errors.New("d is not a base64url string")

func (f *scalarField) UnmarshalJSON(data []byte) error {
	if string(data) == "null" {
		return nil
	}
	if len(data) < 2 || data[0] != '"' || data[len(data)-1] != '"' {
		return errScalarField
	}
	text := data[1 : len(data)-1]
	for _, ch := range text {
		if !isBase64URL(ch) {
			return errScalarField
		}
	}
	secmem.Bytes(f.dst)
	f.n, f.set = 0, false
	if b64.DecodedLen(len(text)) > len(f.dst) {
		return fmt.Errorf("d is longer than %d bytes", len(f.dst))
	}
	n, err := b64.Decode(f.dst, text)
	if err != nil {
		secmem.Bytes(f.dst)
		return errScalarField
	}
	f.n, f.set = n, true
	return nil
}

func isBase64URL(ch byte) bool {
	return 'A' <= ch && ch <= 'Z' || 'a' <= ch && ch <= 'z' || '0' <= ch && ch <= '9' || ch == '-' || ch == '_'
}

// parseKeyFile parses a key file held in data, using scalar (locked, at
// least maxScalar bytes) for the decoded private scalar, and checks it
// the way loadKeyFile's callers rely on.
func parseKeyFile(data, scalar []byte) (*serverKey, error) {
	kf := keyFileJSON{D: scalarField{dst: scalar}}
	if err := json.Unmarshal(data, &kf); err != nil {
		var syn *json.SyntaxError
		if errors.As(err, &syn) {
			// Keep json's words unless they quote a character of the file.
			msg := syn.Error()
			if strings.ContainsRune(msg, '\'') {
				msg = "invalid JSON"
			}
			return nil, fmt.Errorf("%w: %s (at byte %d)", ErrBadKey, msg, syn.Offset)
		}
		if errors.Is(err, errScalarField) {
			return nil, fmt.Errorf("%w: %w", ErrBadKey, errScalarField)
		}
		return nil, fmt.Errorf("%w: not a JWK object", ErrBadKey)
	}
	k := &JWK{Alg: kf.Alg, Crv: kf.Crv, KeyOps: kf.KeyOps, Kty: kf.Kty, X: kf.X, Y: kf.Y}
	if err := k.Validate(); err != nil {
		return nil, err
	}
	if !kf.D.set {
		return nil, fmt.Errorf("%w: it has no private part", ErrBadKey)
	}
	if len(k.KeyOps) == 0 {
		// tangd would use such a key for everything; refuse to guess.
		return nil, fmt.Errorf("%w: it has no key_ops, so its use is ambiguous", ErrBadKey)
	}
	if !k.IsExchange() && !(k.Can(OpSign) && k.IsSigning()) {
		return nil, fmt.Errorf("%w: key_ops %v allow neither signing nor recovery", ErrBadKey, k.KeyOps)
	}
	c, err := curveByName(k.Crv)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadKey, err)
	}
	d := scalar[:kf.D.n]
	if len(d) != c.size() {
		return nil, fmt.Errorf("%w: d is not a %d-byte base64url scalar", ErrBadKey, c.size())
	}
	pt, err := k.point(c)
	if err != nil {
		return nil, err
	}
	var match bool
	secmem.Do(func() {
		pub, err := c.baseMul(d)
		match = err == nil && string(pub) == string(pt)
	})
	if !match {
		return nil, fmt.Errorf("%w: d does not match the public point", ErrBadKey)
	}
	sealed, err := secmem.Seal(d)
	if err != nil {
		return nil, err
	}
	return &serverKey{JWK: k, c: c, d: sealed}, nil
}

// exchange performs the server side of the exchange with k: Y = s·X.
func (k *serverKey) exchange(x *JWK) (*JWK, error) {
	return exchange(k.c, k.d, x)
}

// signJWS signs a JWS signing input's digest with k and returns the JWS
// form of the signature (r ‖ s, each one coordinate long).
func (k *serverKey) signJWS(digest []byte) ([]byte, error) {
	ec, err := stdCurve(k.Crv)
	if err != nil {
		return nil, err
	}
	size := (ec.Params().BitSize + 7) / 8
	sig := make([]byte, 2*size)
	err = k.d.Open(func(d []byte) error {
		// crypto/ecdsa keeps its own forms of the key (the big.Int and a
		// per-key cache); made inside Open, hence inside secmem.Do, they are
		// erased when the collector frees them.
		priv, err := ecdsa.ParseRawPrivateKey(ec, d)
		if err != nil {
			return fmt.Errorf("%w: signing key %s is unusable", ErrBadKey, k.Thumbprint())
		}
		defer secmem.BigInt(priv.D) //lint:ignore SA1019 the only way to wipe crypto/ecdsa's big.Int copy of the scalar
		r, s, err := ecdsa.Sign(rand.Reader, priv, digest)
		if err != nil {
			return fmt.Errorf("signing advertisement: %w", err)
		}
		r.FillBytes(sig[:size])
		s.FillBytes(sig[size:])
		return nil
	})
	if err != nil {
		return nil, err
	}
	return sig, nil
}

// checkMemlock checks the locked-memory limit before anything is locked
// (memguard can hang when mlock fails): the boxes' pool, and a page for a
// key file being read.
func checkMemlock() error {
	return secmem.CheckMemlock(secmem.PoolNeed()+os.Getpagesize(), "the Tang server")
}

// newKeyFile generates a P-521 key and returns its public JWK and the
// key file's JSON (with d, members in jose's order) in a locked buffer
// the caller destroys.
func newKeyFile(alg string, ops []string) (*JWK, *memguard.LockedBuffer, error) {
	c := curves["P-521"]
	if err := checkMemlock(); err != nil {
		return nil, nil, err
	}
	scratch := memguard.NewBuffer(c.size())
	defer scratch.Destroy()
	d := scratch.Bytes()
	if err := c.randomScalar(d); err != nil {
		return nil, nil, err
	}
	var (
		pt  []byte
		err error
	)
	secmem.Do(func() { pt, err = c.baseMul(d) })
	if err != nil {
		return nil, nil, err
	}
	pub := jwkFromPoint(c, pt, alg, ops)
	head, err := json.Marshal(struct {
		Alg string `json:"alg"`
		Crv string `json:"crv"`
	}{alg, c.name()})
	if err != nil {
		return nil, nil, err
	}
	tail, err := json.Marshal(struct {
		KeyOps []string `json:"key_ops"`
		Kty    string   `json:"kty"`
		X      string   `json:"x"`
		Y      string   `json:"y"`
	}{ops, "EC", pub.X, pub.Y})
	if err != nil {
		return nil, nil, err
	}
	const dOpen, dClose = `,"d":"`, `",`
	dLen := b64.EncodedLen(len(d))
	file := memguard.NewBuffer(len(head) - 1 + len(dOpen) + dLen + len(dClose) + len(tail) - 1)
	b := file.Bytes()
	i := copy(b, head[:len(head)-1])
	i += copy(b[i:], dOpen)
	b64.Encode(b[i:i+dLen], d)
	i += dLen
	i += copy(b[i:], dClose)
	copy(b[i:], tail[1:])
	return pub, file, nil
}
