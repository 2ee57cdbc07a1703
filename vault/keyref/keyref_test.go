package keyref

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestSchemesListed: messages (config validation, parse errors) list the
// registered schemes in registration order; golden tests lock these texts.
func TestSchemesListed(t *testing.T) {
	if got, want := Names(), "sealed, pkcs11, winstore or file"; got != want {
		t.Errorf("Names() = %q, want %q", got, want)
	}
	if got, want := Forms(", ", " or "), "sealed:FILE, pkcs11:..., winstore:... or file:FILE"; got != want {
		t.Errorf("Forms() = %q, want %q", got, want)
	}
	_, err := Parse("tpm2:handle=0x81000001")
	if !errors.Is(err, ErrBadRef) || !strings.Contains(err.Error(), `unknown scheme "tpm2" (sealed, pkcs11, winstore or file)`) {
		t.Errorf("Parse of an unregistered scheme: %v", err)
	}
}

// TestRegisterScheme: a new scheme is one registration, and every
// question the program asks of a reference is answered from it.
func TestRegisterScheme(t *testing.T) {
	Register(Scheme{
		Name: "x-tpm2", Form: "x-tpm2:...", Sealed: true,
		Parse: func(v string) (any, error) {
			if !strings.HasPrefix(v, "handle=") {
				return nil, errors.New("want handle=")
			}
			return v, nil
		},
		Needs: func(any, func(string) string) ([]string, []string) { return nil, []string{"/dev/tpmrm0"} },
	})
	t.Cleanup(func() {
		mu.Lock()
		schemes = slices.DeleteFunc(schemes, func(s *Scheme) bool { return s.Name == "x-tpm2" })
		mu.Unlock()
	})
	r, err := Parse("x-tpm2:handle=0x81000001")
	if err != nil {
		t.Fatal(err)
	}
	if !r.IsSealed() || r.IsPlaintext() || r.Parsed() != "handle=0x81000001" || r.String() != "x-tpm2:handle=0x81000001" {
		t.Errorf("parsed %+v: sealed %v plaintext %v", r, r.IsSealed(), r.IsPlaintext())
	}
	if _, trees := r.Needs(nil); !slices.Equal(trees, []string{"/dev/tpmrm0"}) {
		t.Errorf("Needs: %q", trees)
	}
	if _, err := Parse("x-tpm2:nohandle"); err == nil {
		t.Error("the scheme's own parser was not asked")
	}
	defer func() {
		if recover() == nil {
			t.Error("a second registration of a scheme was accepted")
		}
	}()
	Register(Scheme{Name: "x-tpm2"})
}

// TestIdentity: a path reference's identity changes when its file is
// replaced (size or modification time), so a reload opens the new key;
// other references are identified by their text.
func TestIdentity(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "web.key.jwe")
	if err := os.WriteFile(path, []byte("one"), 0o600); err != nil {
		t.Fatal(err)
	}
	r, err := Parse(Sealed("web.key.jwe"))
	if err != nil {
		t.Fatal(err)
	}
	resolve := func(p string) string { return filepath.Join(dir, p) }
	before := r.Identity(resolve)
	if before == r.Identity(nil) {
		t.Error("identity ignores the file")
	}
	if r.Identity(resolve) != before {
		t.Error("identity not stable")
	}
	later := time.Now().Add(time.Hour)
	if err := os.Chtimes(path, later, later); err != nil {
		t.Fatal(err)
	}
	if r.Identity(resolve) == before {
		t.Error("identity unchanged after the file was replaced")
	}
	p1, _ := Parse("pkcs11:token=t;object=k?pin-value=1111")
	p2, _ := Parse("pkcs11:token=t;object=k?pin-value=2222")
	if p1.Identity(resolve) == p2.Identity(resolve) || p1.String() != p2.String() {
		t.Error("two PINs, one identity: a second login would ride on the first")
	}
}

// TestNeedsPKCS11: the sandbox allows a pkcs11: key's module, pin-source
// file and the shared library directories.
func TestNeedsPKCS11(t *testing.T) {
	t.Setenv("SOFTHSM2_CONF", filepath.Join(t.TempDir(), "none.conf"))
	r, err := Parse("pkcs11:token=t;object=k?module-path=lib/libsofthsm2.so&pin-source=file:pin")
	if err != nil {
		t.Fatal(err)
	}
	files, trees := r.Needs(func(p string) string { return "/etc/sp/" + p })
	if !slices.Equal(files, []string{"/etc/sp/lib/libsofthsm2.so", "/etc/sp/pin"}) {
		t.Errorf("files %q", files)
	}
	if !slices.Contains(trees, "/usr/lib") || !slices.Contains(trees, os.Getenv("SOFTHSM2_CONF")) {
		t.Errorf("trees %q", trees)
	}
}
