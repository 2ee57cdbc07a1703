// Package keyref parses key references (sealed:PATH, file:PATH, pkcs11:
// RFC 7512 URIs, winstore: queries) and is the one place that knows the
// schemes. Each scheme is registered once, with what the rest of the
// program asks of a reference: is it sealed (recovered through unlock,
// so the binary must protect its memory), is it plaintext, which files
// does opening it read (the Landlock sandbox allows them), and what
// identifies the key it names (so a replaced file is opened again).
//
// It imports only the standard library, so that proxy/config can
// validate references without linking any backend; vault registers the
// openers that turn a Ref into a key (vault.Open dispatches on the
// scheme).
package keyref

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
)

// ErrBadRef reports a key reference that cannot be parsed.
var ErrBadRef = errors.New("bad key reference")

// The built-in schemes.
const (
	SchemeSealed   = "sealed"
	SchemePKCS11   = "pkcs11"
	SchemeWinstore = "winstore"
	SchemeFile     = "file"
)

// Scheme is one kind of key reference.
type Scheme struct {
	Name string
	// Form shows the reference in messages, e.g. "sealed:FILE".
	Form string
	// Sealed: the key is recovered through unlock into locked memory,
	// so only a binary that erases the copies of a key may open it.
	Sealed bool
	// Plaintext: the key is on disk in the clear (development only).
	Plaintext bool
	// IsPath: the value is a file path, relative to the configuration's
	// directory; the file's size and modification time are part of the
	// key's identity.
	IsPath bool
	// Parse checks the value after "NAME:" and returns its parsed form,
	// which the backend gets back from Ref.Parsed. Nil for IsPath
	// schemes.
	Parse func(value string) (any, error)
	// Show prints a parsed value without secrets; nil prints the value.
	Show func(parsed any) string
	// Unlocks reports a reference that is not Sealed but still recovers
	// a secret through unlock (a pkcs11: key's sealed PIN). Nil: none.
	Unlocks func(parsed any) bool
	// Needs lists what opening the key reads besides its path: files
	// (their directories are allowed, so a replaced file is read) and
	// trees (allowed whole). Nil: nothing more.
	Needs func(parsed any, resolve func(string) string) (files, trees []string)
}

var (
	mu      sync.RWMutex
	schemes []*Scheme // in registration order: the order messages list them
)

// Register adds a scheme. It panics on a duplicate or unnamed one: a
// registration is a program's constant, made from an init function.
func Register(s Scheme) {
	mu.Lock()
	defer mu.Unlock()
	if s.Name == "" || strings.ContainsAny(s.Name, ":") {
		panic("keyref: bad scheme name " + s.Name)
	}
	for _, o := range schemes {
		if o.Name == s.Name {
			panic("keyref: scheme registered twice: " + s.Name)
		}
	}
	schemes = append(schemes, &s)
}

func init() {
	// One registration each, in the order messages list them.
	Register(Scheme{Name: SchemeSealed, Form: "sealed:FILE", Sealed: true, IsPath: true})
	Register(pkcs11Scheme)
	Register(winstoreScheme)
	Register(Scheme{Name: SchemeFile, Form: "file:FILE", Plaintext: true, IsPath: true})
}

// Lookup returns the scheme s (a whole reference) names and the value
// after its colon, without parsing the value.
func Lookup(s string) (sch *Scheme, value string, ok bool) {
	name, value, ok := strings.Cut(s, ":")
	if !ok {
		return nil, "", false
	}
	mu.RLock()
	defer mu.RUnlock()
	for _, sc := range schemes {
		if sc.Name == name {
			return sc, value, true
		}
	}
	return nil, value, false
}

// Names lists the registered schemes, e.g. "sealed, pkcs11, winstore or
// file".
func Names() string { return list(func(s *Scheme) string { return s.Name }, ", ", " or ") }

// Forms lists the registered schemes' forms joined by sep and last,
// e.g. "sealed:FILE, pkcs11:..., winstore:... or file:FILE".
func Forms(sep, last string) string { return list(func(s *Scheme) string { return s.Form }, sep, last) }

func list(f func(*Scheme) string, sep, last string) string {
	mu.RLock()
	defer mu.RUnlock()
	var b strings.Builder
	for i, s := range schemes {
		switch {
		case i == 0:
		case i == len(schemes)-1:
			b.WriteString(last)
		default:
			b.WriteString(sep)
		}
		b.WriteString(f(s))
	}
	return b.String()
}

// Format returns the reference of scheme with value, e.g. for test and
// tool configurations.
func Format(scheme, value string) string { return scheme + ":" + value }

// Sealed returns the reference of a sealed key file.
func Sealed(path string) string { return Format(SchemeSealed, path) }

// File returns the reference of a plaintext key file.
func File(path string) string { return Format(SchemeFile, path) }

// Ref is a parsed key reference. Its String and LogValue never show a
// PIN.
type Ref struct {
	Scheme string
	// Path is the file of a path scheme (sealed:, file:).
	Path string
	// Opaque is the value of other schemes (pkcs11:, winstore:); Parsed
	// is its parsed form.
	Opaque string

	sch    *Scheme
	parsed any
	raw    string
}

// Parse parses a key reference: sealed:PATH, file:PATH, pkcs11:ATTRS?QUERY
// (RFC 7512), winstore:QUERY, or a scheme registered later.
func Parse(s string) (Ref, error) {
	name, rest, ok := strings.Cut(s, ":")
	if !ok || rest == "" {
		return Ref{}, fmt.Errorf("%w: want SCHEME:VALUE with scheme %s", ErrBadRef, Names())
	}
	sch, _, known := Lookup(s)
	if !known {
		return Ref{}, fmt.Errorf("%w: unknown scheme %q (%s)", ErrBadRef, name, Names())
	}
	r := Ref{Scheme: name, sch: sch, raw: s}
	if sch.IsPath {
		r.Path = rest
		return r, nil
	}
	r.Opaque = rest
	if sch.Parse != nil {
		p, err := sch.Parse(rest)
		if err != nil {
			return Ref{}, err
		}
		r.parsed = p
	}
	return r, nil
}

// Parsed is the value as the scheme's Parse returned it (a *PKCS11URI,
// a *WinstoreQuery), nil for path schemes.
func (r Ref) Parsed() any { return r.parsed }

// PKCS11 is the parsed URI of a pkcs11: reference, nil for others.
func (r Ref) PKCS11() *PKCS11URI { u, _ := r.parsed.(*PKCS11URI); return u }

// Winstore is the parsed query of a winstore: reference, nil for others.
func (r Ref) Winstore() *WinstoreQuery { q, _ := r.parsed.(*WinstoreQuery); return q }

// IsSealed reports a key recovered through unlock (see Scheme.Sealed).
func (r Ref) IsSealed() bool { return r.sch != nil && r.sch.Sealed }

// UsesUnlock reports a reference whose opening recovers a secret
// through unlock into locked memory: a sealed key, or a key whose PIN is
// sealed. Its JWE joins the start-up's approval request group.
func (r Ref) UsesUnlock() bool {
	return r.IsSealed() || (r.sch != nil && r.sch.Unlocks != nil && r.parsed != nil && r.sch.Unlocks(r.parsed))
}

// IsPlaintext reports a key in the clear on disk.
func (r Ref) IsPlaintext() bool { return r.sch != nil && r.sch.Plaintext }

// Needs lists what opening the key reads, paths resolved by resolve (nil:
// as written): files, whose directories a sandbox must allow (so that a
// file replaced by rename is read), and trees it must allow whole.
func (r Ref) Needs(resolve func(string) string) (files, trees []string) {
	if resolve == nil {
		resolve = func(p string) string { return p }
	}
	if r.sch == nil {
		return nil, nil
	}
	if r.sch.IsPath {
		files = append(files, resolve(r.Path))
	}
	if r.sch.Needs != nil {
		f, t := r.sch.Needs(r.parsed, resolve)
		files, trees = append(files, f...), append(trees, t...)
	}
	return files, trees
}

// Identity names the key the reference opens, for keeping it open across
// reloads: the reference as written and, for a path scheme, the file's
// size and modification time, so that a key file replaced under the same
// name is opened again. It holds a pkcs11: reference's pin-value: compare
// it, never print it.
func (r Ref) Identity(resolve func(string) string) string {
	id := r.raw
	if r.sch != nil && r.sch.IsPath {
		if resolve == nil {
			resolve = func(p string) string { return p }
		}
		if fi, err := os.Stat(resolve(r.Path)); err == nil {
			id += fmt.Sprintf("\x00%d\x00%d", fi.Size(), fi.ModTime().UnixNano())
		}
	}
	return id
}

// String returns the reference with any PIN redacted.
func (r Ref) String() string {
	if r.Path != "" {
		return r.Scheme + ":" + r.Path
	}
	if r.sch != nil && r.sch.Show != nil && r.parsed != nil {
		return r.sch.Show(r.parsed)
	}
	return r.Scheme + ":" + redactPIN(r.Opaque)
}

// GoString is String, so %#v cannot print a PIN either.
func (r Ref) GoString() string { return r.String() }

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
