package tang

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

var (
	// ErrNoKeys reports a key directory without an active key pair.
	ErrNoKeys = errors.New("no Tang keys")
	// ErrUnknownKey reports a key id (thumbprint) the server does not have.
	ErrUnknownKey = errors.New("unknown Tang key")
	// ErrWrongKeyUse reports a key id that names a key which may not do
	// what was asked (recovering with a signing key).
	ErrWrongKeyUse = errors.New("tang key may not be used for this")
)

// Keys is the content of a tangd key directory: one JWK per *.jwk file;
// files whose names start with "." hold rotated keys, which are no longer
// advertised but still recover old bindings.
//
// The private scalars are sealed in memory (secmem.Box): they are in
// the clear only in locked memory, for one exchange or signature at a
// time.
type Keys struct {
	active  []*serverKey
	rotated []*serverKey
	payload []byte // the public JWK set of the active keys
	adv     []byte // payload signed by the active signing keys
	signers []*serverKey
}

// LoadKeys reads a tangd-compatible key directory.
func LoadKeys(dir string) (*Keys, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("reading Tang key directory: %w", err)
	}
	ks := &Keys{}
	for _, e := range entries {
		if e.IsDir() || !strings.HasSuffix(e.Name(), ".jwk") {
			continue
		}
		path := filepath.Join(dir, e.Name())
		k, err := loadKeyFile(path)
		if err != nil {
			return nil, err
		}
		if strings.HasPrefix(e.Name(), ".") {
			ks.rotated = append(ks.rotated, k)
		} else {
			ks.active = append(ks.active, k)
		}
	}
	if err := ks.prepare(); err != nil {
		return nil, fmt.Errorf("tang key directory %s: %w", dir, err)
	}
	return ks, nil
}

// KeyFileError names a key file of a directory that cannot be used, so a
// command can tell the operator which file to move or restore.
type KeyFileError struct {
	Path string
	Err  error
}

func (e *KeyFileError) Error() string { return "tang key " + e.Path + ": " + e.Err.Error() }
func (e *KeyFileError) Unwrap() error { return e.Err }

func (ks *Keys) prepare() error {
	var pubs []*JWK
	for _, k := range ks.active {
		pubs = append(pubs, k.Public())
		if k.Can(OpSign) {
			ks.signers = append(ks.signers, k)
		}
	}
	hasExchange := slices.ContainsFunc(ks.active, func(k *serverKey) bool { return k.IsExchange() })
	if len(ks.signers) == 0 || !hasExchange {
		return fmt.Errorf("%w: need an active signing key and an active exchange key", ErrNoKeys)
	}
	var err error
	if ks.payload, err = json.Marshal(struct {
		Keys []*JWK `json:"keys"`
	}{pubs}); err != nil {
		return err
	}
	ks.adv, err = signAdvertisement(ks.payload, ks.signers)
	return err
}

// Advertisement returns the advertisement (JWS JSON). With a thumbprint it
// is additionally signed by the (possibly rotated) signing key with that
// thumbprint, so clients that pinned an old key can follow a rotation.
func (ks *Keys) Advertisement(thp string) ([]byte, error) {
	if thp == "" {
		return ks.adv, nil
	}
	k := ks.find(thp)
	if k == nil || !k.Can(OpSign) {
		return nil, fmt.Errorf("%w: no signing key with thumbprint %s", ErrUnknownKey, thp)
	}
	signers := slices.Clone(ks.signers)
	if !slices.Contains(ks.active, k) {
		signers = append(signers, k)
	}
	return signAdvertisement(ks.payload, signers)
}

// Recover performs the server side of the exchange with the key whose
// thumbprint is kid: it returns s·X.
func (ks *Keys) Recover(kid string, x *JWK) (*JWK, error) {
	k := ks.find(kid)
	if k == nil {
		return nil, fmt.Errorf("%w %s", ErrUnknownKey, kid)
	}
	if !k.IsExchange() {
		return nil, fmt.Errorf("%w: key %s is not an exchange key", ErrWrongKeyUse, kid)
	}
	return k.exchange(x)
}

// CheckRecover reports whether Recover(kid, x) would succeed, without
// doing the exchange: a gate checks a request before it holds it, so only
// well-formed requests for its own keys wait for an operator. The errors
// are Recover's.
func (ks *Keys) CheckRecover(kid string, x *JWK) error {
	k := ks.find(kid)
	if k == nil {
		return fmt.Errorf("%w %s", ErrUnknownKey, kid)
	}
	if !k.IsExchange() {
		return fmt.Errorf("%w: key %s is not an exchange key", ErrWrongKeyUse, kid)
	}
	c, err := curveByName(k.Crv)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrBadKey, err)
	}
	if x.Kty != "EC" || x.Crv != c.name() {
		return fmt.Errorf("%w: request is a %q %q key, want EC %s", ErrBadExchange, x.Kty, x.Crv, c.name())
	}
	X, err := x.point(c)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrBadExchange, err)
	}
	if err := c.check(X); err != nil {
		return fmt.Errorf("%w: %w", ErrBadExchange, err)
	}
	return nil
}

// Point returns the uncompressed encoding of an EC JWK's point after
// checking that it lies on its curve.
func (k *JWK) Point() ([]byte, error) {
	if err := k.Validate(); err != nil {
		return nil, err
	}
	c, err := curveByName(k.Crv)
	if err != nil {
		return nil, err
	}
	return k.point(c)
}

// Thumbprints returns the SHA-256 thumbprints of the active signing keys.
func (ks *Keys) Thumbprints() []string {
	var out []string
	for _, k := range ks.active {
		if k.IsSigning() {
			out = append(out, k.Thumbprint())
		}
	}
	return out
}

func (ks *Keys) find(thp string) *serverKey {
	for _, k := range ks.active {
		if k.HasThumbprint(thp) {
			return k
		}
	}
	for _, k := range ks.rotated {
		if k.HasThumbprint(thp) {
			return k
		}
	}
	return nil
}

// Keygen creates a new signing key (ES512) and exchange key (ECMR) on P-521
// in dir, named by their SHA-256 thumbprints as tangd-keygen names them.
// It returns the new signing key's thumbprint.
func Keygen(dir string) (string, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", fmt.Errorf("creating Tang key directory: %w", err)
	}
	var sigThp string
	for _, kind := range []struct {
		alg string
		ops []string
	}{{AlgSign, []string{OpSign, OpVerify}}, {AlgExchange, []string{OpDeriveKey}}} {
		pub, file, err := newKeyFile(kind.alg, kind.ops)
		if err != nil {
			return "", err
		}
		err = writeKeyFile(filepath.Join(dir, pub.Thumbprint()+".jwk"), file.Bytes())
		file.Destroy()
		if err != nil {
			return "", err
		}
		if kind.alg == AlgSign {
			sigThp = pub.Thumbprint()
		}
	}
	return sigThp, nil
}

// Rotate hides the active keys (renames them to dot-files: they keep
// recovering old bindings but are no longer advertised) and generates a
// new pair, like tangd-rotate-keys. It returns the new signing thumbprint.
func Rotate(dir string) (string, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return "", fmt.Errorf("reading Tang key directory: %w", err)
	}
	// Generate first, so a failure leaves the directory serving.
	var old []string
	for _, e := range entries {
		if !e.IsDir() && strings.HasSuffix(e.Name(), ".jwk") && !strings.HasPrefix(e.Name(), ".") {
			old = append(old, e.Name())
		}
	}
	thp, err := Keygen(dir)
	if err != nil {
		return "", err
	}
	for _, name := range old {
		if err := renameKey(filepath.Join(dir, name), filepath.Join(dir, "."+name)); err != nil {
			return "", fmt.Errorf("rotating Tang key: %w", err)
		}
	}
	return thp, nil
}

// renameWait bounds how long a rotation waits for another program to let
// go of a key file (Windows only: see sharingViolation).
const renameWait = 5 * time.Second

// renameKey renames a key file, waiting while another program holds it
// open on Windows: our own readers share it (openKeyFile), but a backup or
// a virus scanner may not, and only for a moment.
func renameKey(from, to string) error {
	deadline := time.Now().Add(renameWait)
	for {
		err := os.Rename(from, to)
		if err == nil || !sharingViolation(err) || time.Now().After(deadline) {
			return err
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// writeKeyFile writes a key readable by its owner and group only (as
// tangd-keygen's umask does) without ever replacing an existing file.
func writeKeyFile(path string, data []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o440)
	if err != nil {
		if errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("tang key %s already exists", path)
		}
		return fmt.Errorf("writing Tang key: %w", err)
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		os.Remove(path)
		return fmt.Errorf("writing Tang key: %w", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		os.Remove(path)
		return fmt.Errorf("writing Tang key: %w", err)
	}
	return f.Close()
}
