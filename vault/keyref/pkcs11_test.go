package keyref

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"testing"
)

func TestParsePKCS11URI(t *testing.T) {
	u, err := ParsePKCS11URI("pkcs11:token=My%20Token;object=web;id=%01%a2?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=file:/run/pin")
	if err != nil {
		t.Fatal(err)
	}
	if u.Token != "My Token" || u.Object != "web" || !bytes.Equal(u.ID, []byte{1, 0xa2}) ||
		u.ModulePath != "/usr/lib/softhsm/libsofthsm2.so" || u.PinSource != "file:/run/pin" {
		t.Fatalf("parsed %#v wrongly: %+v", u, *u)
	}
	if got, want := u.String(), "pkcs11:token=My%20Token;object=web;id=%01%A2?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=file:/run/pin"; got != want {
		t.Errorf("String() = %s, want %s", got, want)
	}
	u, err = ParsePKCS11URI("pkcs11:serial=abc;slot-id=3;type=private;object=k?module-path=/m.so&pin-value=s3cr%65t")
	if err != nil {
		t.Fatal(err)
	}
	if u.Serial != "abc" || *u.SlotID != 3 || string(u.pinValue) != "s3cret" {
		t.Fatalf("parsed wrongly")
	}
}

func TestParsePKCS11URIErrors(t *testing.T) {
	for _, s := range []string{
		"pkcs11:object=k?module-path=/m.so",                 // no token
		"pkcs11:token=t?module-path=/m.so",                  // no key
		"pkcs11:token=t;object=k;object=j",                  // duplicate
		"pkcs11:token=t;object=k%zz",                        // bad escape
		"pkcs11:token=t;object=k%4",                         // truncated escape
		"pkcs11:token=t;object=k;type=cert",                 // not a private key
		"pkcs11:token=t;object=k;slot-id=x",                 // bad slot
		"pkcs11:token=t;object=k;frob=1",                    // unknown
		"pkcs11:token=t;object=k?module-name=softhsm2",      // unsupported
		"pkcs11:token=t;object=k?pin-value=a&pin-source=f",  // both
		"pkcs11:token=t;object=k?pin-value=sec%zzret",       // bad escape in PIN
		"pkcs11:token=t;object",                             // no value
		"pkcs11:token=t;object=k?pin-value=x&pin-value=pin", // duplicate PIN
		"pkcs11:token=t;object=k?pin-source=/run/pin",       // neither file: nor sealed:
		"pkcs11:token=t;object=k?pin-source=sealed:",        // sealed: without a path
		"pkcs11:token=t;object=k?pin-source=file:",          // file: without a path
		"pkcs11:token=t;object=k?pin-source=http://x/pin",   // not a PIN source
	} {
		_, err := ParsePKCS11URI(s)
		if !errors.Is(err, ErrBadRef) {
			t.Errorf("ParsePKCS11URI(%q) = %v, want ErrBadRef", s, err)
			continue
		}
		if strings.Contains(err.Error(), "sec") && strings.Contains(s, "sec%zz") {
			t.Errorf("error %q echoes the PIN", err)
		}
	}
}

// pin-source=sealed:PATH is a sealed PIN: PIN refuses to read it (the
// vault recovers it through unlock), and its file is among what opening
// the key needs (the sandbox allows its directory).
func TestSealedPINSource(t *testing.T) {
	r, err := Parse("pkcs11:token=t;object=k?module-path=/m.so&pin-source=sealed:pins/web.jwe")
	if err != nil {
		t.Fatal(err)
	}
	u := r.PKCS11()
	path, ok := u.SealedPIN()
	if !ok || path != "pins/web.jwe" {
		t.Fatalf("SealedPIN() = %q, %v", path, ok)
	}
	if _, ok := u.pinFile(); ok {
		t.Error("a sealed PIN is taken for a PIN file")
	}
	if !r.UsesUnlock() || r.IsSealed() {
		t.Errorf("UsesUnlock() = %v, IsSealed() = %v: want a key that recovers its PIN, not a sealed key", r.UsesUnlock(), r.IsSealed())
	}
	if plain, _ := Parse("pkcs11:token=t;object=k?module-path=/m.so&pin-source=file:pin"); plain.UsesUnlock() {
		t.Error("a PIN file counts as recovered through unlock")
	}
	if pin, err := u.PIN(nil); err == nil || pin != nil {
		t.Errorf("PIN() read a sealed PIN as plain text: %q, %v", pin, err)
	}
	files, _ := r.Needs(func(p string) string { return "/etc/sealproxy/" + p })
	if !slices.Contains(files, "/etc/sealproxy/pins/web.jwe") {
		t.Errorf("Needs() = %q, want the sealed PIN file", files)
	}
	if got := r.String(); got != "pkcs11:token=t;object=k?module-path=/m.so&pin-source=sealed:pins/web.jwe" {
		t.Errorf("String() = %s", got)
	}
}

// A PIN never shows in a reference's String, GoString, %v, %+v, %#v or log.
func TestPINRedaction(t *testing.T) {
	const pin = "hunter2-4f9e"
	ref := "pkcs11:token=t;object=k?module-path=/m.so&pin-value=" + pin
	r, err := Parse(ref)
	if err != nil {
		t.Fatal(err)
	}
	u, err := ParsePKCS11URI(r.Opaque)
	if err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	log := slog.New(slog.NewJSONHandler(&logs, nil))
	log.Info("x", "key", r, "uri", u)
	out := strings.Join([]string{r.String(), u.String(), u.GoString(),
		fmt.Sprint(r), fmt.Sprintf("%v %+v %#v", u, u, u), fmt.Sprintf("%v %+v %#v", r, r, r), logs.String()}, "\n")
	if strings.Contains(out, pin) {
		t.Errorf("PIN leaked:\n%s", out)
	}
	if !strings.Contains(r.String(), "pin-value=REDACTED") {
		t.Errorf("String() = %s, want pin-value=REDACTED", r)
	}
	// Even a reference that does not parse is not echoed with its PIN.
	_, err = Parse("pkcs11:token=t;object=k;nonsense?pin-value=" + pin)
	if err == nil || strings.Contains(err.Error(), pin) {
		t.Errorf("ParseRef error %v", err)
	}
}

// FuzzParsePKCS11URI: parsing never panics; a parsed URI prints (redacted)
// to a URI that parses to the same selection; the PIN never shows.
func FuzzParsePKCS11URI(f *testing.F) {
	f.Add("pkcs11:token=t;object=k;id=%01?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=file:/p")
	f.Add("pkcs11:serial=1;slot-id=0;id=%00%ff?pin-value=abc%20def")
	f.Add("pkcs11:token=a%3Bb;object=c%3Fd?module-path=/x%26y")
	f.Add("pkcs11:token=t;object=k?module-path=/m.so&pin-source=sealed:pins/web.jwe")
	f.Fuzz(func(t *testing.T, s string) {
		u, err := ParsePKCS11URI(s)
		if err != nil {
			return
		}
		if u.PinSource != "" {
			_, file := u.pinFile()
			_, sealed := u.SealedPIN()
			if file == sealed {
				t.Fatalf("pin-source %q of %q is not exactly one of file:PATH and sealed:PATH", u.PinSource, s)
			}
		}
		out := u.String()
		v, err := ParsePKCS11URI(out)
		if err != nil {
			t.Fatalf("String() %q of %q does not parse: %v", out, s, err)
		}
		if v.Token != u.Token || v.Object != u.Object || !bytes.Equal(v.ID, u.ID) || v.Serial != u.Serial ||
			v.ModulePath != u.ModulePath || v.PinSource != u.PinSource || (v.SlotID == nil) != (u.SlotID == nil) {
			t.Fatalf("round trip of %q: %+v became %+v", s, u, v)
		}
		if u.hasPin && len(u.pinValue) >= 4 && string(u.pinValue) != "REDACTED" &&
			!strings.Contains(u.Token+u.Object+u.Serial+u.ModulePath+string(u.ID), string(u.pinValue)) &&
			strings.Contains(out, string(u.pinValue)) {
			t.Fatalf("String() %q shows the PIN", out)
		}
	})
}
