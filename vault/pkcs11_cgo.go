//go:build cgo

package vault

import (
	"context"
	"crypto"
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

	"github.com/ThalesIgnite/crypto11"
	"github.com/miekg/pkcs11"

	"github.com/sealproxy/sealproxy/internal/secmem"
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
		return nil, fmt.Errorf("opening key %s: PKCS#11 module: %w", u, err)
	}
	pin, err := u.PIN(opts.path)
	if err != nil {
		return nil, fmt.Errorf("opening key %s: %w", u, err)
	}
	id := tokenID{module: module, token: u.Token, serial: u.Serial, slot: -1, pinHash: sha256.Sum256(pin)}
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
		defer secmem.Bytes(pin)
		c, release, err := acquireToken(id, pin, opts)
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
		err = errors.New("no private key with that object/id and a matching public key on the token")
	}
	if err != nil {
		release()
		return nil, fmt.Errorf("opening key %s: %w", u, err)
	}
	cert, err := c.FindCertificate(u.ID, label, nil)
	if err == nil && cert == nil {
		err = errors.New("no certificate with that object/id on the token")
	}
	if err == nil {
		err = CheckCertificate(signer, cert)
	}
	if err != nil {
		release()
		return nil, fmt.Errorf("opening key %s: %w", u, err)
	}
	k := &tokenKey{name: u.String(), signer: signer, cert: cert, release: release}
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
			Pin:             string(pin), // crypto11 takes a string: it cannot be wiped
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
		return "", errors.New("could not load the PKCS#11 module")
	}
	defer p.Destroy()
	if initialize {
		if err := p.Initialize(); err != nil {
			return "", fmt.Errorf("initializing the PKCS#11 module: %w", err)
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
		return "", errors.New("could not find PKCS#11 token")
	}
	if len(pin) == 0 {
		return info.SerialNumber, nil
	}
	session, err := p.OpenSession(slot, pkcs11.CKF_SERIAL_SESSION)
	if err != nil {
		return "", fmt.Errorf("opening a session: %w", err)
	}
	defer p.CloseSession(session)
	err = p.Login(session, pkcs11.CKU_USER, string(pin))
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

// tokenKey is a private key that stays on a PKCS#11 token.
type tokenKey struct {
	name    string
	signer  crypto11.Signer
	cert    *x509.Certificate
	release func()
}

func (k *tokenKey) String() string           { return k.name }
func (k *tokenKey) Public() crypto.PublicKey { return k.signer.Public() }

// Certificate is the key's certificate, read from the token.
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
