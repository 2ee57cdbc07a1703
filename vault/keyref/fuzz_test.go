package keyref

import (
	"errors"
	"strings"
	"testing"
)

// FuzzParseRef parses key references, the one place where sealed:,
// file:, pkcs11: and winstore: are told apart. Properties: no panic; a
// refusal wraps ErrBadRef and never echoes a PIN; an accepted reference
// has a known scheme and a non-empty value, prints (String, LogValue) to
// a reference that parses to the same key (sealed: and file: exactly),
// never with its pin-value; only sealed: is sealed, only file: plaintext,
// and a path scheme needs its file.
func FuzzParseRef(f *testing.F) {
	for _, s := range []string{
		"sealed:keys/web.jwe",
		"sealed:/etc/sealproxy/web.jwe",
		"file:web.key",
		"file:C:\\keys\\web.key",
		"pkcs11:token=sealproxy;object=web?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-value=1234",
		"pkcs11:pkcs11:token=x;object=y?pin-source=file:/run/pin",
		"pkcs11:object=web;id=%01%02?pin-value=secret%20pin&module-path=/x",
		"winstore:thumbprint=0123456789abcdef0123456789abcdef01234567",
		"winstore:subject=web.test&store=machine",
		"sealed:",
		"sealed",
		":x",
		"SEALED:x",
		"http://example.com/key",
		"pkcs11:token=x?pin-value=",
		"pkcs11:token=x;token=y",
		"pkcs11:token=x;object=y?module-path=/m.so&pin-source=sealed:/etc/sealproxy/pin.jwe",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		pin := pinOf(s)
		r, err := Parse(s)
		if err != nil {
			if !errors.Is(err, ErrBadRef) {
				t.Fatalf("Parse(%q) error %v does not wrap ErrBadRef", s, err)
			}
			if pin != "" && strings.Contains(err.Error(), pin) {
				t.Fatalf("ParseRef error %q shows the PIN %q", err, pin)
			}
			return
		}
		scheme, rest, _ := strings.Cut(s, ":")
		if r.Scheme != scheme || rest == "" {
			t.Fatalf("Parse(%q) = %+v", s, r)
		}
		switch r.Scheme {
		case "sealed", "file":
			if r.Path != rest || r.Opaque != "" {
				t.Fatalf("Parse(%q) = %+v", s, r)
			}
		case "pkcs11", "winstore":
			if r.Path != "" || r.Opaque != rest {
				t.Fatalf("Parse(%q) = %+v", s, r)
			}
		default:
			t.Fatalf("Parse(%q) accepted scheme %q", s, r.Scheme)
		}
		out := r.String()
		if lv := r.LogValue().String(); lv != out {
			t.Fatalf("LogValue %q, String %q", lv, out)
		}
		if pin != "" && strings.Contains(out, pin) {
			t.Fatalf("String() %q of %q shows the PIN", out, s)
		}
		r2, err := Parse(out)
		if err != nil {
			t.Fatalf("String() %q of %q does not parse: %v", out, s, err)
		}
		if r2.Scheme != r.Scheme || ((r.Scheme == "sealed" || r.Scheme == "file") && r2 != r) {
			t.Fatalf("round trip of %q: %+v became %+v", s, r, r2)
		}
		if r.IsSealed() != (r.Scheme == "sealed") || r.IsPlaintext() != (r.Scheme == "file") {
			t.Fatalf("ParseRef(%q): sealed %v, plaintext %v", s, r.IsSealed(), r.IsPlaintext())
		}
		if id := r.Identity(nil); !strings.HasPrefix(id, s) {
			t.Fatalf("Identity of %q is %q", s, id)
		}
		if files, _ := r.Needs(nil); (r.Scheme == "sealed" || r.Scheme == "file") && (len(files) != 1 || files[0] != rest) {
			t.Fatalf("Needs of %q: %q", s, files)
		}
	})
}

// pinOf returns a pkcs11 reference's PIN when it is distinctive enough
// to look for in output: 4 bytes or more, and found nowhere else in the
// reference.
func pinOf(s string) string {
	rest, ok := strings.CutPrefix(s, "pkcs11:")
	if !ok {
		return ""
	}
	u, err := ParsePKCS11URI(rest)
	if err != nil {
		// A refused reference: look for the raw pin-value text instead.
		_, q, _ := strings.Cut(rest, "?")
		for _, kv := range strings.Split(q, "&") {
			if v, ok := strings.CutPrefix(kv, "pin-value="); ok && len(v) >= 4 && strings.Count(s, v) == 1 && v != "REDACTED" {
				return v
			}
		}
		return ""
	}
	pin := string(u.pinValue)
	if !u.hasPin || len(pin) < 4 || pin == "REDACTED" || strings.Count(s, pin) != 1 ||
		strings.Contains(u.Token+u.Object+u.Serial+u.ModulePath+u.PinSource+string(u.ID)+"pkcs11:REDACTED", pin) {
		return ""
	}
	return pin
}
