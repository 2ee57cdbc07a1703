package unlock

import (
	"bytes"
	"crypto"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/awnumar/memguard"
	jose "github.com/go-jose/go-jose/v4"
	josecipher "github.com/go-jose/go-jose/v4/cipher"

	"github.com/sealproxy/sealproxy/internal/secmem"
	"github.com/sealproxy/sealproxy/unlock/tang"
)

var b64 = base64.RawURLEncoding

var (
	// ErrMalformed reports input that is not a well-formed Clevis JWE.
	ErrMalformed = errors.New("malformed JWE")
	// ErrJSONSerialization reports a JWE in the JSON serialization, which
	// Clevis does not use.
	ErrJSONSerialization = errors.New("JWE is in JSON serialization; clevis uses the compact form")
	// ErrUnknownPin reports a pin this build does not implement.
	ErrUnknownPin = errors.New("unsupported clevis pin")
	// ErrTampered reports a JWE that failed authentication: its header,
	// IV, ciphertext or tag was altered, or the key recovered is not the
	// one it was sealed with.
	ErrTampered = errors.New("JWE failed authentication: it was altered or belongs to other keys")
)

// MaxJWE bounds the size of a JWE we parse; a sealed key is a few KiB.
const MaxJWE = 1 << 20

const (
	encA256GCM = "A256GCM"
	ivSize     = 12
	tagSize    = 16
	cekSize    = 32
)

// header is the JWE protected header as Clevis writes it.
type header struct {
	Alg    string      `json:"alg"`
	Enc    string      `json:"enc"`
	Zip    string      `json:"zip,omitempty"`
	Kid    string      `json:"kid,omitempty"`
	Epk    *tang.JWK   `json:"epk,omitempty"`
	Clevis *clevisNode `json:"clevis,omitempty"`
}

// clevisNode is the header's "clevis" member, {"pin":NAME,NAME:{...}}:
// the pin's name and its own node, which only the pin reads.
type clevisNode struct {
	Pin string
	// Node is the pin's node: its own type when sealing, the raw JSON
	// (nil if absent) once parsed.
	Node any
}

func (c *clevisNode) MarshalJSON() ([]byte, error) {
	pin, err := json.Marshal(c.Pin)
	if err != nil {
		return nil, err
	}
	if c.Node == nil {
		return []byte(`{"pin":` + string(pin) + `}`), nil
	}
	node, err := json.Marshal(c.Node)
	if err != nil {
		return nil, err
	}
	return []byte(`{"pin":` + string(pin) + `,` + string(pin) + `:` + string(node) + `}`), nil
}

func (c *clevisNode) UnmarshalJSON(data []byte) error {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(data, &m); err != nil {
		return err
	}
	c.Pin, c.Node = "", nil
	if raw, ok := m["pin"]; ok {
		if err := json.Unmarshal(raw, &c.Pin); err != nil {
			return fmt.Errorf("clevis.pin: %w", err)
		}
	}
	if raw, ok := m[c.Pin]; ok && c.Pin != "pin" {
		c.Node = raw
	}
	return nil
}

// node decodes j's clevis node into v, a pointer to a pointer to the
// pin's node type; it leaves *v nil when the node is absent or null.
func (j *jwe) node(v any) error {
	raw, _ := j.header.Clevis.Node.(json.RawMessage)
	if raw == nil {
		return nil
	}
	if err := json.Unmarshal(raw, v); err != nil {
		return fmt.Errorf("%w: clevis.%s: %v", ErrMalformed, tang.Printable(j.header.Clevis.Pin), err)
	}
	return nil
}

// jwe is a parsed compact JWE.
type jwe struct {
	protected  string // base64url header as it appeared: the AAD
	header     header
	jose       jose.Header // the same header as go-jose parsed it, for the key agreement
	iv         []byte
	ciphertext []byte
	tag        []byte
}

// The algorithms a clevis JWE may use: go-jose refuses any other "alg" or
// "enc" before anything else reads the header.
var (
	keyAlgorithms     = []jose.KeyAlgorithm{jose.ECDH_ES, jose.DIRECT}
	contentEncryption = []jose.ContentEncryption{jose.A256GCM}
)

// parseJWE parses the compact serialization. Surrounding white space is
// forgiven (a file may end in a newline); everything else must be exact.
//
// The size bound and the checks that name what is wrong in clevis's terms
// run first; go-jose then parses the whole JWE against the algorithm
// allow-list, and we keep its view of the header for the pin's key
// agreement (jose.OpaqueKeyDecrypter).
func parseJWE(data []byte) (*jwe, error) {
	data = bytes.TrimSpace(data)
	if len(data) > MaxJWE {
		return nil, fmt.Errorf("%w: larger than %d bytes", ErrMalformed, MaxJWE)
	}
	if len(data) == 0 {
		return nil, fmt.Errorf("%w: input is empty", ErrMalformed)
	}
	if data[0] == '{' {
		return nil, ErrJSONSerialization
	}
	parts := strings.Split(string(data), ".")
	if len(parts) != 5 {
		return nil, fmt.Errorf("%w: found %d of 5 dot-separated parts (truncated or not a JWE)", ErrMalformed, len(parts))
	}
	if parts[1] != "" {
		return nil, fmt.Errorf("%w: a clevis JWE has an empty encrypted-key part", ErrMalformed)
	}
	j := &jwe{protected: parts[0]}
	rawHeader, err := b64.DecodeString(parts[0])
	if err != nil {
		return nil, fmt.Errorf("%w: protected header is not base64url", ErrMalformed)
	}
	dec := json.NewDecoder(bytes.NewReader(rawHeader))
	if err := dec.Decode(&j.header); err != nil {
		return nil, fmt.Errorf("%w: protected header is not JSON: %v", ErrMalformed, err)
	}
	if j.header.Enc != encA256GCM {
		return nil, fmt.Errorf("%w: enc %q is not supported (clevis uses A256GCM)", ErrMalformed, j.header.Enc)
	}
	if j.header.Zip != "" {
		return nil, fmt.Errorf("%w: compressed (zip) JWEs are not supported", ErrMalformed)
	}
	if j.header.Clevis == nil || j.header.Clevis.Pin == "" {
		return nil, fmt.Errorf("%w: header has no clevis pin", ErrMalformed)
	}
	for i, dst := range []*[]byte{&j.iv, &j.ciphertext, &j.tag} {
		if *dst, err = b64.DecodeString(parts[i+2]); err != nil {
			return nil, fmt.Errorf("%w: part %d is not base64url", ErrMalformed, i+3)
		}
	}
	if len(j.iv) != ivSize || len(j.tag) != tagSize {
		return nil, fmt.Errorf("%w: IV must be %d bytes and tag %d bytes (truncated?)", ErrMalformed, ivSize, tagSize)
	}
	if _, ok := lookup(j.header.Clevis.Pin); !ok {
		// A pin we lack (clevis tpm2 writes no "alg" in its children):
		// Inspect shows it by name and Decrypt says it is unsupported.
		return j, nil
	}
	if !slices.Contains(keyAlgorithms, jose.KeyAlgorithm(j.header.Alg)) {
		return nil, fmt.Errorf("%w: alg %q is not supported (clevis uses ECDH-ES and dir)", ErrMalformed, j.header.Alg)
	}
	obj, err := jose.ParseEncryptedCompact(string(data), keyAlgorithms, contentEncryption)
	if err != nil {
		// go-jose quotes header values in some errors: the JWE is anyone's.
		return nil, fmt.Errorf("%w: %s", ErrMalformed, tang.Printable(err.Error()))
	}
	j.jose = obj.Header
	return j, nil
}

// sealContent encrypts plaintext under cek with hdr as the protected
// header and returns the compact JWE.
func sealContent(hdr *header, cek, plaintext []byte) ([]byte, error) {
	rawHeader, err := json.Marshal(hdr)
	if err != nil {
		return nil, err
	}
	protected := b64.EncodeToString(rawHeader)
	iv := make([]byte, ivSize)
	if _, err := rand.Read(iv); err != nil {
		return nil, err
	}
	var sealed []byte
	secmem.Do(func() {
		var gcm cipher.AEAD
		if gcm, err = newGCM(cek); err == nil {
			sealed = gcm.Seal(nil, iv, plaintext, []byte(protected))
		}
	})
	if err != nil {
		return nil, err
	}
	ct, tag := sealed[:len(sealed)-tagSize], sealed[len(sealed)-tagSize:]
	out := protected + ".." + b64.EncodeToString(iv) + "." + b64.EncodeToString(ct) + "." + b64.EncodeToString(tag)
	if len(out) > MaxJWE {
		// parseJWE would refuse it: say so now, not when the key is needed.
		return nil, fmt.Errorf("the sealed JWE would be %d bytes, larger than the %d bytes Decrypt accepts", len(out), MaxJWE)
	}
	return []byte(out), nil
}

// openContent decrypts straight into locked memory, so the plaintext never
// exists on the Go heap. The AES key schedule is a heap value of the
// standard library's; secmem.Do erases it once it is garbage.
func openContent(j *jwe, cek []byte) (buf *memguard.LockedBuffer, err error) {
	secmem.Do(func() { buf, err = openContentIn(j, cek) })
	return buf, err
}

func openContentIn(j *jwe, cek []byte) (*memguard.LockedBuffer, error) {
	gcm, err := newGCM(cek)
	if err != nil {
		return nil, err
	}
	sealed := make([]byte, 0, len(j.ciphertext)+tagSize)
	sealed = append(append(sealed, j.ciphertext...), j.tag...)
	if len(j.ciphertext) == 0 {
		if _, err := gcm.Open(nil, j.iv, sealed, []byte(j.protected)); err != nil {
			return nil, ErrTampered
		}
		return memguard.NewBuffer(0), nil
	}
	buf := memguard.NewBuffer(len(j.ciphertext))
	dst := buf.Bytes()
	out, err := gcm.Open(dst[:0], j.iv, sealed, []byte(j.protected))
	if err != nil {
		buf.Destroy()
		return nil, ErrTampered
	}
	if &out[0] != &dst[0] {
		// Open did not decrypt in place: the plaintext is on the heap.
		secmem.Bytes(out)
		buf.Destroy()
		return nil, errors.New("internal error: AES-GCM did not decrypt into locked memory")
	}
	return buf, nil
}

func newGCM(cek []byte) (cipher.AEAD, error) {
	if len(cek) != cekSize {
		return nil, fmt.Errorf("content key is %d bytes, want %d", len(cek), cekSize)
	}
	block, err := aes.NewCipher(cek)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}

// concatKDF derives the A256GCM content key from the ECDH-ES shared secret
// z (RFC 7518 §4.6.2: AlgorithmID = enc, empty PartyUInfo and PartyVInfo,
// 256-bit output) with go-jose's Concat KDF. Its hash state and digest
// are heap values of go-jose's, so it runs inside secmem.Do; the caller
// wipes the result.
func concatKDF(z []byte, enc string) []byte {
	cek := make([]byte, cekSize)
	secmem.Do(func() {
		var bits [4]byte
		binary.BigEndian.PutUint32(bits[:], cekSize*8)
		kdf := josecipher.NewConcatKDF(crypto.SHA256, z, lengthPrefixed(enc), lengthPrefixed(""), lengthPrefixed(""), bits[:], nil)
		if _, err := io.ReadFull(kdf, cek); err != nil {
			panic("unlock: Concat KDF: " + err.Error()) // a hash reader does not fail
		}
	})
	return cek
}

// lengthPrefixed is a Concat KDF info field: a 32-bit big-endian length,
// then the bytes.
func lengthPrefixed(s string) []byte {
	out := binary.BigEndian.AppendUint32(nil, uint32(len(s)))
	return append(out, s...)
}
