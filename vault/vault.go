// Package vault keeps private keys in custody and hands them out as
// crypto.Signer: sealed keys recovered through unlock into locked,
// encrypted memory, PKCS#11 tokens, the Windows certificate store, and
// (for development only) plain PEM files.
//
// A sealed key's secret numbers are in the clear only during a signature,
// in a locked scratch buffer, and the key is rebuilt and used inside
// secmem.Do. Build with GOEXPERIMENT=runtimesecret: only then are the copies
// the standard library makes while signing erased (TestCustodyMemoryScan
// shows the difference). A daemon calls Harden at start-up and Purge on
// its way out.
package vault

import (
	"context"
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"runtime"

	"github.com/sealproxy/sealproxy/internal/secmem"
	"github.com/sealproxy/sealproxy/unlock"
	"github.com/sealproxy/sealproxy/vault/keyref"
)

// Key is a private key in custody. RSA keys also implement
// crypto.Decrypter. Close releases the key (wipes an enclave, logs out of
// a token); a closed key must not be used.
type Key interface {
	crypto.Signer
	Close() error
}

var (
	// ErrBadRef reports a key reference that cannot be parsed; it is
	// keyref.ErrBadRef.
	ErrBadRef = keyref.ErrBadRef
	// ErrPlaintextRefused reports a file: key without AllowPlaintext.
	ErrPlaintextRefused = errors.New("plaintext key files are refused")
	// ErrUnavailable reports a backend this build or platform lacks.
	ErrUnavailable = errors.New("key backend unavailable")
	// ErrKeyMismatch reports a key whose public half is not the certificate's.
	ErrKeyMismatch = errors.New("private key does not match certificate")
	// ErrPINRefused reports a PKCS#11 token that refused the PIN: wrong,
	// malformed, expired or locked.
	ErrPINRefused = errors.New("the token refused the PIN")
	// ErrTokenNotFound reports a pkcs11: reference whose token (token=,
	// serial=, slot-id=) no slot of the module holds.
	ErrTokenNotFound = errors.New("no such PKCS#11 token")
	// ErrObjectNotFound reports a token that has no private key with the
	// reference's object/id, or none whose public half it can show.
	ErrObjectNotFound = errors.New("no such key on the PKCS#11 token")
	// ErrModule reports a PKCS#11 module that cannot be loaded or
	// initialized (a wrong module-path, a missing library it needs).
	ErrModule = errors.New("the PKCS#11 module cannot be loaded")
	// ErrUnprotectedMemory reports a sealed: key refused because this
	// binary does not erase the copies the standard library makes of it
	// (see CheckMemoryProtection).
	ErrUnprotectedMemory = errors.New("sealed keys are refused: this binary leaves copies of a key in freed memory")
)

// Options say where and how keys are opened.
type Options struct {
	// BaseDir resolves relative paths (the config file's directory).
	BaseDir string
	// AllowPlaintext permits file: keys (development only).
	AllowPlaintext bool
	// AllowUnprotectedMemory permits sealed: keys in a binary whose
	// secmem.Do erases nothing (built without GOEXPERIMENT=runtimesecret,
	// or a platform runtime/secret does not cover): development only.
	AllowUnprotectedMemory bool
	// Unlock configures the recovery of sealed: keys.
	Unlock *unlock.Options
	// Sealed is the JWE of a sealed: key when the caller read it already
	// (ReadSealed), to prepare an approval request group or show its
	// Tang servers: Open recovers from these bytes and does not read the
	// file again, so what it recovers is what the caller prepared.
	Sealed []byte
	// Cert is the key's certificate from the configuration (the leaf of
	// its cert file), if the caller has one. A backend that can find a
	// certificate elsewhere (on a PKCS#11 token) checks the key against
	// this one instead and looks for its own only when Cert is nil.
	Cert *x509.Certificate
	// Log receives warnings (a nil logger discards them).
	Log *slog.Logger
	// TicketSecret: the reference holds a shared session-ticket secret
	// ([tickets]), not a private key; Open returns a *TicketSecret. Only
	// sealed: references hold one.
	TicketSecret bool
}

// CheckMemoryProtection refuses sealed: keys in a binary that cannot
// erase the copies of a key the standard library makes while parsing and
// signing, unless allow says the operator accepts that (a plain `go
// build` left 16 copies of a key's scalar in a process's memory after
// handshakes; docs/benchmarks.md, "Key custody"). A daemon calls it at
// start-up, before it contacts any Tang server; Open calls it too.
func CheckMemoryProtection(allow bool) error {
	if allow || secmem.Erasing() {
		return nil
	}
	if !secmem.Built() {
		return fmt.Errorf("%w: it was built without GOEXPERIMENT=runtimesecret (a plain go build or go install)", ErrUnprotectedMemory)
	}
	return fmt.Errorf("%w: runtime/secret erases nothing on %s/%s", ErrUnprotectedMemory, runtime.GOOS, runtime.GOARCH)
}

func (o *Options) log() *slog.Logger {
	if o == nil || o.Log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return o.Log
}

func (o *Options) path(p string) string {
	if o == nil || o.BaseDir == "" || filepath.IsAbs(p) {
		return p
	}
	return filepath.Join(o.BaseDir, p)
}

// opener opens the key of one scheme's references.
type opener func(ctx context.Context, r keyref.Ref, opts *Options) (Key, error)

var openers = map[string]opener{}

// register makes open the backend of scheme's references. Each backend
// file registers itself once from init; a build-tagged twin registers
// unavailable instead.
func register(scheme string, open opener) {
	if _, dup := openers[scheme]; dup {
		panic("vault: backend registered twice: " + scheme)
	}
	openers[scheme] = open
}

// Open opens the key a reference names, through the backend registered
// for its scheme.
func Open(ctx context.Context, ref string, opts *Options) (Key, error) {
	r, err := keyref.Parse(ref)
	if err != nil {
		return nil, err
	}
	if opts != nil && opts.TicketSecret && !r.IsSealed() {
		return nil, fmt.Errorf("%w: a session ticket secret is a sealed: file, not %s", ErrBadRef, r)
	}
	open, ok := openers[r.Scheme]
	if !ok {
		return nil, fmt.Errorf("%w: %s keys are not implemented in this build", ErrUnavailable, r.Scheme)
	}
	return open(ctx, r, opts)
}
