package keyref

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
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
	f.Fuzz(func(t *testing.T, s string) {
		u, err := ParsePKCS11URI(s)
		if err != nil {
			return
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
