//go:build cgo

package vault

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"sync"
	"time"
	"unsafe"

	"github.com/ThalesIgnite/crypto11"
	"github.com/awnumar/memguard"
	"github.com/miekg/pkcs11"

	"github.com/sealproxy/sealproxy/internal/secmem"
	"github.com/sealproxy/sealproxy/unlock"
	"github.com/sealproxy/sealproxy/vault/keyref"
)

func init() { register(keyref.SchemePKCS11, openPKCS11) }

// pkcs11PoolWait bounds how long a signature waits for a free session.
const pkcs11PoolWait = 30 * time.Second

// pkcs11Sessions is the session pool size per token: signing is done by
// the token, so a few sessions per CPU keep it busy without letting a
// burst of handshakes open hundreds of sessions.
func pkcs11Sessions() int { return max(4, 2*runtime.GOMAXPROCS(0)+1) }

// tokenKey identifies a logged-in crypto11 context shared by the keys of
// one token. The PIN's hash is kept so that a second reference with a
// different PIN is refused rather than riding on the existing login.
type tokenID struct {
	module, token, serial string
	slot                  int
	pinHash               [32]byte
}

type sharedContext struct {
	ctx    *crypto11.Context
	serial string // the token's serial number: its identity
	refs   int
}

var (
	tokensMu sync.Mutex
	tokens   = map[tokenID]*sharedContext{}
)

func openPKCS11(ctx context.Context, r keyref.Ref, opts *Options) (Key, error) {
	u := r.PKCS11()
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("opening key %s: %w", u, err)
	}
	if u.ModulePath == "" {
		return nil, fmt.Errorf("%w: key %s has no module-path (e.g. module-path=/usr/lib/softhsm/libsofthsm2.so)", ErrBadRef, u)
	}
	module := opts.path(u.ModulePath)
	if _, err := os.Stat(module); err != nil {
		return nil, fmt.Errorf("opening key %s: %w: %w", u, ErrModule, err)
	}
	pin, err := recoverPIN(ctx, u, opts)
	if err != nil {
		return nil, fmt.Errorf("opening key %s: %w", u, err)
	}
	return loginAndFind(ctx, u, module, pin, opts)
}

// A tokenPIN is a PIN in memory that Destroy wipes: a sealed PIN's
// locked buffer, or a plain one read from a file or the reference.
type tokenPIN interface {
	Bytes() []byte
	Destroy()
}

// plainPIN is a PIN from pin-value or a pin-source file.
type plainPIN []byte

func (p plainPIN) Bytes() []byte { return p }
func (p plainPIN) Destroy()      { secmem.Bytes(p) }

// maxPINFile bounds a pin-source file: a PIN is a line.
const maxPINFile = 4096

// recoverPIN returns the PIN of u: recovered through unlock for
// pin-source=sealed:PATH (from opts.Sealed when the caller read the file
// already, so that it is part of the caller's approval request group),
// else read from pin-value or the pin-source file. The caller destroys it.
func recoverPIN(ctx context.Context, u *keyref.PKCS11URI, opts *Options) (tokenPIN, error) {
	path, sealed := u.SealedPIN()
	if !sealed {
		pin, err := u.PIN(func(p string) ([]byte, error) { return readLimited(opts.path(p), maxPINFile) })
		if err != nil {
			return nil, err
		}
		return plainPIN(pin), nil
	}
	// Check before unlock allocates locked memory: memguard can hang
	// when mlock fails.
	if err := checkMemlock(MemlockNeed(1)); err != nil {
		return nil, err
	}
	data := opts.sealed()
	if data == nil {
		var err error
		if data, err = readFile(opts.path(path), maxJWE); err != nil {
			return nil, fmt.Errorf("reading sealed PIN %s: %w", path, err)
		}
	}
	var uo *unlock.Options
	if opts != nil {
		uo = opts.Unlock
	}
	buf, err := unlock.Decrypt(ctx, data, uo)
	if err != nil {
		return nil, fmt.Errorf("recovering sealed PIN %s: %w", path, err)
	}
	// A PIN is one line, as in a pin-source file; a trailing newline
	// (echo | seal encrypt) is not part of it.
	if b := buf.Bytes(); bytes.ContainsAny(bytes.TrimRight(b, "\r\n"), "\r\n") || len(bytes.TrimRight(b, "\r\n")) == 0 {
		buf.Destroy()
		return nil, fmt.Errorf("sealed PIN %s: %w: not one non-empty line", path, ErrPINRefused)
	}
	return trimmedPIN{buf}, nil
}

// trimmedPIN is a recovered PIN without its line ending.
type trimmedPIN struct{ *memguard.LockedBuffer }

func (p trimmedPIN) Bytes() []byte { return bytes.TrimRight(p.LockedBuffer.Bytes(), "\r\n") }

// loginAndFind logs in to u's token with pin (destroyed once the login is
// done, whatever its outcome) and finds u's key on it.
func loginAndFind(ctx context.Context, u *keyref.PKCS11URI, module string, pin tokenPIN, opts *Options) (Key, error) {
	id := tokenID{module: module, token: u.Token, serial: u.Serial, slot: -1, pinHash: sha256.Sum256(pin.Bytes())}
	if u.SlotID != nil {
		id.slot = *u.SlotID
	}
	// Loading the module and logging in can block (a network HSM, a token
	// waiting for insertion); crypto11 takes no context, so the login runs
	// in its own goroutine, which owns (and wipes) the PIN, and releases
	// the token itself if ctx ends first.
	type acquired struct {
		c       *crypto11.Context
		release func()
		err     error
	}
	done := make(chan acquired, 1)
	go func() {
		c, release, err := acquireToken(id, pin.Bytes(), opts)
		pin.Destroy() // before anyone hears the outcome
		done <- acquired{c, release, err}
	}()
	var a acquired
	select {
	case a = <-done:
	case <-ctx.Done():
		go func() {
			if a := <-done; a.err == nil {
				a.release()
			}
		}()
		return nil, fmt.Errorf("opening key %s: %w", u, ctx.Err())
	}
	c, release, err := a.c, a.release, a.err
	if err != nil {
		return nil, fmt.Errorf("opening key %s: %w", u, err)
	}
	var label []byte
	if u.Object != "" {
		label = []byte(u.Object)
	}
	signer, err := c.FindKeyPair(u.ID, label)
	if err == nil && signer == nil {
		err = fmt.Errorf("%w: no private key with that object/id and a public half (a public-key object with the same CKA_ID, or a certificate) on the token", ErrObjectNotFound)
	}
	if err != nil {
		release()
		return nil, fmt.Errorf("opening key %s: %w", u, err)
	}
	k := &tokenKey{name: u.String(), signer: signer, release: release}
	// The configuration's certificate wins: the token's is read only
	// when there is none, and a token without one is fine.
	if cert := opts.cert(); cert != nil {
		err = CheckCertificate(k, cert)
		k.cert = cert
	} else {
		k.cert, err = c.FindCertificate(u.ID, label, nil)
		if err == nil && k.cert != nil {
			err = CheckCertificate(k, k.cert)
		}
	}
	if err == nil && k.cert != nil {
		err = proveKey(k, k.cert)
	}
	if err != nil {
		release()
		return nil, fmt.Errorf("opening key %s: %w", u, err)
	}
	if _, ok := signer.(crypto.Decrypter); ok {
		return tokenRSAKey{k}, nil
	}
	return k, nil
}

// acquireToken returns the logged-in context for id, configuring it on
// first use, and a function that releases this key's hold on it.
func acquireToken(id tokenID, pin []byte, opts *Options) (*crypto11.Context, func(), error) {
	tokensMu.Lock()
	defer tokensMu.Unlock()
	sc := tokens[id]
	if sc == nil {
		cfg := &crypto11.Config{
			Path:            id.module,
			TokenLabel:      id.token,
			TokenSerial:     id.serial,
			Pin:             borrowString(pin), // cleared once Configure logged in
			MaxSessions:     pkcs11Sessions(),
			PoolWaitTimeout: pkcs11PoolWait,
		}
		if id.slot >= 0 {
			slot := id.slot
			cfg.SlotNumber = &slot
		}
		if cfg.Pin == "" {
			cfg.LoginNotSupported = true
		}
		// crypto11.Configure finalizes the module when it fails after
		// initializing it, even under other open contexts; and a login to a
		// token that is already logged in succeeds whatever the PIN. So
		// find the token and log in here first, without those effects.
		serial, err := precheckToken(id, pin, !moduleInUse(id.module))
		if err != nil {
			return nil, nil, err
		}
		for other, osc := range tokens {
			if other.module == id.module && osc.serial == serial && other.pinHash != id.pinHash {
				return nil, nil, errors.New("the token is already open with a different PIN")
			}
		}
		c, err := crypto11.Configure(cfg)
		// crypto11 keeps cfg for the context's life but reads the PIN only
		// to log in, in Configure: drop its view of the caller's buffer,
		// which is wiped (a sealed PIN's unmapped) once this returns.
		cfg.Pin = ""
		if err != nil {
			return nil, nil, err
		}
		sc = &sharedContext{ctx: c, serial: serial}
		tokens[id] = sc
	}
	sc.refs++
	var once sync.Once
	return sc.ctx, func() {
		once.Do(func() {
			tokensMu.Lock()
			defer tokensMu.Unlock()
			sc.refs--
			if sc.refs == 0 {
				delete(tokens, id)
				if err := sc.ctx.Close(); err != nil {
					opts.log().Warn("closing a PKCS#11 token", "err", err)
				}
			}
		})
	}, nil
}

// moduleInUse reports whether a context of the module is open. Call with
// tokensMu held.
func moduleInUse(module string) bool {
	for id := range tokens {
		if id.module == module {
			return true
		}
	}
	return false
}

// precheckToken does what crypto11.Configure does that can fail (find the
// token, open a session, log in) and returns the token's serial number.
// If initialize is set the module is not in use: it is initialized here
// and finalized again. Otherwise it is used as it is, and nothing here
// finalizes it. A login to a token the process is already logged in to
// reports CKR_USER_ALREADY_LOGGED_IN whatever the PIN; the caller then
// relies on the PIN check against the contexts it has open.
func precheckToken(id tokenID, pin []byte, initialize bool) (string, error) {
	p := pkcs11.New(id.module)
	if p == nil {
		return "", fmt.Errorf("%w: dlopen failed (not a PKCS#11 module, or a library it needs is missing)", ErrModule)
	}
	defer p.Destroy()
	if initialize {
		if err := p.Initialize(); err != nil {
			return "", fmt.Errorf("%w: initializing it: %w", ErrModule, err)
		}
		defer p.Finalize()
	}
	slots, err := p.GetSlotList(true)
	if err != nil {
		return "", fmt.Errorf("listing PKCS#11 slots: %w", err)
	}
	var (
		found bool
		slot  uint
		info  pkcs11.TokenInfo
	)
	for _, sl := range slots {
		ti, err := p.GetTokenInfo(sl)
		if err != nil {
			continue
		}
		if (id.token != "" && ti.Label == id.token) || (id.serial != "" && ti.SerialNumber == id.serial) ||
			(id.slot >= 0 && sl == uint(id.slot)) {
			found, slot, info = true, sl, ti
			break
		}
	}
	if !found {
		return "", fmt.Errorf("%w: no slot of the module holds a token with that token/serial/slot-id", ErrTokenNotFound)
	}
	if len(pin) == 0 {
		return info.SerialNumber, nil
	}
	session, err := p.OpenSession(slot, pkcs11.CKF_SERIAL_SESSION)
	if err != nil {
		return "", fmt.Errorf("opening a session: %w", err)
	}
	defer p.CloseSession(session)
	err = p.Login(session, pkcs11.CKU_USER, borrowString(pin))
	if perr, ok := err.(pkcs11.Error); ok && perr == pkcs11.CKR_USER_ALREADY_LOGGED_IN {
		err = nil
	}
	if perr, ok := err.(pkcs11.Error); ok {
		switch perr {
		case pkcs11.CKR_PIN_INCORRECT, pkcs11.CKR_PIN_INVALID, pkcs11.CKR_PIN_LEN_RANGE, pkcs11.CKR_PIN_EXPIRED, pkcs11.CKR_PIN_LOCKED:
			return "", fmt.Errorf("logging in: %w (%w)", ErrPINRefused, err)
		}
	}
	if err != nil {
		return "", fmt.Errorf("logging in: %w", err)
	}
	return info.SerialNumber, nil
}

// proveKey has the token sign a random digest and checks the signature
// with the certificate's public key. The public half a token shows (a
// public-key object under the same CKA_ID) is only a claim about its
// private key: an object written there can be any key's, and TLS
// handshakes would then fail one by one instead of start-up once.
func proveKey(k *tokenKey, cert *x509.Certificate) error {
	digest := make([]byte, sha256.Size)
	if _, err := rand.Read(digest); err != nil {
		return err
	}
	sig, err := k.Sign(rand.Reader, digest, crypto.SHA256)
	if err != nil {
		return fmt.Errorf("signing a test digest: %w", err)
	}
	ok := true
	switch pub := cert.PublicKey.(type) {
	case *ecdsa.PublicKey:
		ok = ecdsa.VerifyASN1(pub, digest, sig)
	case *rsa.PublicKey:
		ok = rsa.VerifyPKCS1v15(pub, crypto.SHA256, digest, sig) == nil
	}
	if !ok {
		return fmt.Errorf("%w: the token's private key does not sign for the public key it shows (certificate %q): its public-key object belongs to another key", ErrKeyMismatch, cert.Subject.String())
	}
	return nil
}

// borrowString views b as a string without copying it: crypto11 and the
// PKCS#11 binding take the PIN as a string and copy it into C memory at
// once, so a view keeps a Go heap copy (which nothing could wipe) from
// existing. Valid only while b is; nothing may keep it.
func borrowString(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	return unsafe.String(unsafe.SliceData(b), len(b))
}

// tokenKey is a private key that stays on a PKCS#11 token.
type tokenKey struct {
	name    string
	signer  crypto11.Signer
	cert    *x509.Certificate
	release func()
}

func (k *tokenKey) String() string           { return k.name }
func (k *tokenKey) Public() crypto.PublicKey { return k.signer.Public() }

// Certificate is the key's certificate: the configuration's, or else the
// token's; nil when neither has one.
func (k *tokenKey) Certificate() *x509.Certificate { return k.cert }

func (k *tokenKey) Sign(rand io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	sig, err := k.signer.Sign(rand, digest, opts)
	if err != nil {
		return nil, fmt.Errorf("signing with key %s: %w", k.name, err)
	}
	return sig, nil
}

func (k *tokenKey) Close() error {
	k.release()
	return nil
}

// tokenRSAKey adds crypto.Decrypter for RSA keys (TLS 1.2 RSA key exchange).
type tokenRSAKey struct{ *tokenKey }

// Decrypt decrypts with the token. crypto11 does not implement SessionKeyLen (what crypto/tls asks for),
// so it is done here as crypto/rsa does: on any failure or a wrong length
// the result is random bytes of that length, and no error. The token's own
// timing may still differ between good and bad padding; RSA key exchange
// is off in crypto/tls by default and should stay off.
func (k tokenRSAKey) Decrypt(random io.Reader, ciphertext []byte, opts crypto.DecrypterOpts) ([]byte, error) {
	d := k.signer.(crypto.Decrypter)
	//lint:ignore SA1019 crypto/tls asks for PKCS #1 v1.5 decryption in TLS 1.2 RSA key exchange; this answers it without a padding oracle.
	if o, ok := opts.(*rsa.PKCS1v15DecryptOptions); ok && o.SessionKeyLen > 0 {
		if random == nil {
			random = rand.Reader
		}
		key := make([]byte, o.SessionKeyLen)
		if _, err := io.ReadFull(random, key); err != nil {
			return nil, fmt.Errorf("decrypting with key %s: %w", k.name, err)
		}
		pt, err := d.Decrypt(random, ciphertext, &rsa.PKCS1v15DecryptOptions{}) //lint:ignore SA1019 see above
		ok := err == nil && len(pt) == len(key)
		if ok {
			subtle.ConstantTimeCopy(1, key, pt)
		}
		secmem.Bytes(pt)
		return key, nil
	}
	pt, err := d.Decrypt(random, ciphertext, opts)
	if err != nil {
		return nil, fmt.Errorf("decrypting with key %s: %w", k.name, err)
	}
	return pt, nil
}

// cert is the [[key]]'s certificate file, if the caller gave one.
func (o *Options) cert() *x509.Certificate {
	if o == nil {
		return nil
	}
	return o.Cert
}
