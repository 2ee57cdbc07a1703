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
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"runtime"
	"strings"

	"github.com/sealproxy/sealproxy/internal/secmem"
	"github.com/sealproxy/sealproxy/unlock"
)

// Key is a private key in custody. RSA keys also implement
// crypto.Decrypter. Close releases the key (wipes an enclave, logs out of
// a token); a closed key must not be used.
type Key interface {
	crypto.Signer
	Close() error
}

var (
	// ErrBadRef reports a key reference that cannot be parsed.
	ErrBadRef = errors.New("bad key reference")
	// ErrPlaintextRefused reports a file: key without AllowPlaintext.
	ErrPlaintextRefused = errors.New("plaintext key files are refused")
	// ErrUnavailable reports a backend this build or platform lacks.
	ErrUnavailable = errors.New("key backend unavailable")
	// ErrKeyMismatch reports a key whose public half is not the certificate's.
	ErrKeyMismatch = errors.New("private key does not match certificate")
	// ErrPINRefused reports a PKCS#11 token that refused the PIN: wrong,
	// malformed, expired or locked.
	ErrPINRefused = errors.New("the token refused the PIN")
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
	// Log receives warnings (a nil logger discards them).
	Log *slog.Logger
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

// Ref is a parsed key reference. Its String and LogValue never show a PIN.
type Ref struct {
	Scheme string // sealed, file, pkcs11, winstore
	// Path is the file of sealed: and file: references.
	Path string
	// Opaque is the rest of a pkcs11: or winstore: reference, parsed by
	// its backend.
	Opaque string
}

// ParseRef parses a key reference: sealed:PATH, file:PATH,
// pkcs11:ATTRS?QUERY (RFC 7512) or winstore:QUERY.
func ParseRef(s string) (Ref, error) {
	scheme, rest, ok := strings.Cut(s, ":")
	if !ok || rest == "" {
		return Ref{}, fmt.Errorf("%w: want SCHEME:VALUE with scheme sealed, pkcs11, winstore or file", ErrBadRef)
	}
	switch scheme {
	case "sealed", "file":
		return Ref{Scheme: scheme, Path: rest}, nil
	case "pkcs11":
		if _, err := ParsePKCS11URI(rest); err != nil {
			return Ref{}, err
		}
		return Ref{Scheme: scheme, Opaque: rest}, nil
	case "winstore":
		if _, err := ParseWinstoreRef(rest); err != nil {
			return Ref{}, err
		}
		return Ref{Scheme: scheme, Opaque: rest}, nil
	}
	return Ref{}, fmt.Errorf("%w: unknown scheme %q (sealed, pkcs11, winstore or file)", ErrBadRef, scheme)
}

// String returns the reference with any PIN redacted.
func (r Ref) String() string {
	if r.Path != "" {
		return r.Scheme + ":" + r.Path
	}
	if r.Scheme == "pkcs11" {
		if u, err := ParsePKCS11URI(r.Opaque); err == nil {
			return u.String()
		}
	}
	return r.Scheme + ":" + redactPIN(r.Opaque)
}

// LogValue logs the redacted form.
func (r Ref) LogValue() slog.Value { return slog.StringValue(r.String()) }

// redactPIN hides the value of any pin-value attribute (RFC 7512 query).
func redactPIN(s string) string {
	parts := strings.FieldsFunc(s, func(r rune) bool { return r == '&' || r == '?' || r == ';' })
	for _, p := range parts {
		if name, _, ok := strings.Cut(p, "="); ok && strings.EqualFold(name, "pin-value") {
			s = strings.Replace(s, p, name+"=REDACTED", 1)
		}
	}
	return s
}

// Open opens the key a reference names.
func Open(ctx context.Context, ref string, opts *Options) (Key, error) {
	r, err := ParseRef(ref)
	if err != nil {
		return nil, err
	}
	switch r.Scheme {
	case "file":
		return openFile(r, opts)
	case "sealed":
		return openSealed(ctx, r, opts)
	case "pkcs11":
		return openPKCS11(ctx, r, opts)
	case "winstore":
		return openWinstore(ctx, r, opts)
	}
	return nil, fmt.Errorf("%w: %s keys are not implemented in this build", ErrUnavailable, r.Scheme)
}
