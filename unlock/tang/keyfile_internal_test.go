package tang

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sealproxy/sealproxy/internal/secmem"
)

// TestParseKeyFile checks the key file parser that takes d out of the JSON
// into locked memory: what it accepts, what it refuses, and that its
// errors never quote d.
func TestParseKeyFile(t *testing.T) {
	pub, file, err := newKeyFile(AlgExchange, []string{OpDeriveKey})
	if err != nil {
		t.Fatal(err)
	}
	defer file.Destroy()
	good := bytes.Clone(file.Bytes())
	if !bytes.HasPrefix(good, []byte(`{"alg":"ECMR","crv":"P-521","d":"`)) || !bytes.Contains(good, []byte(`","key_ops":["deriveKey"],"kty":"EC","x":"`)) {
		t.Fatalf("key file is not in jose's member order: %s", good)
	}
	// The file parses as a JWK (with d) for anything else that reads it.
	k, err := ParseJWK(good)
	if err != nil || k.D == "" || k.Thumbprint() != pub.Thumbprint() {
		t.Fatalf("ParseJWK(new key file) = %+v, %v", k, err)
	}
	d := k.D
	scratch := make([]byte, maxScalar)
	sk, err := parseKeyFile(good, scratch)
	if err != nil {
		t.Fatal(err)
	}
	if sk.D != "" || sk.Thumbprint() != pub.Thumbprint() || !sk.IsExchange() {
		t.Fatalf("parsed key %+v", sk.JWK)
	}
	other, otherFile, err := newKeyFile(AlgExchange, []string{OpDeriveKey})
	if err != nil {
		t.Fatal(err)
	}
	otherFile.Destroy()
	swapped := strings.Replace(string(good), `"x":"`+pub.X+`","y":"`+pub.Y+`"`, `"x":"`+other.X+`","y":"`+other.Y+`"`, 1)
	for _, tc := range []struct {
		name, data string
	}{
		{"not JSON", `{"d":"` + d + `"`},
		{"escaped d", strings.Replace(string(good), `"d":"`+d[:1], `"d":"\u00`+hex2(d[0]), 1)},
		{"number d", strings.Replace(string(good), `"d":"`+d+`"`, `"d":1`, 1)},
		{"short d", strings.Replace(string(good), d, d[:40], 1)},
		{"long d", strings.Replace(string(good), d, d+d, 1)},
		{"padded d", strings.Replace(string(good), d, d+"==", 1)},
		{"no d", strings.Replace(string(good), `"d":"`+d+`",`, ``, 1)},
		{"no key_ops", strings.Replace(string(good), `"key_ops":["deriveKey"],`, ``, 1)},
		{"d of another point", swapped},
		{"array", `[` + string(good) + `]`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parseKeyFile([]byte(tc.data), make([]byte, maxScalar))
			if !errors.Is(err, ErrBadKey) {
				t.Fatalf("parseKeyFile = %v, want ErrBadKey", err)
			}
			if strings.Contains(err.Error(), d[:8]) {
				t.Fatalf("error quotes d: %v", err)
			}
		})
	}
}

func hex2(b byte) string {
	const digits = "0123456789abcdef"
	return string([]byte{digits[b>>4], digits[b&15]})
}

// FuzzParseKeyFile feeds the key file parser arbitrary bytes: it must
// not panic, must keep d within its buffer, and what it accepts must be
// a key whose sealed scalar matches its public point.
func FuzzParseKeyFile(f *testing.F) {
	for _, kind := range []struct {
		alg string
		ops []string
	}{{AlgSign, []string{OpSign, OpVerify}}, {AlgExchange, []string{OpDeriveKey}}} {
		_, file, err := newKeyFile(kind.alg, kind.ops)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(bytes.Clone(file.Bytes()))
		file.Destroy()
	}
	f.Add([]byte(`{"kty":"EC","crv":"P-256","x":"gI0GAILBdu7T53akrFmMyGcsF3n5dO7MmwNBHKW5SV0","y":"SLW_xSffzlPWrHEVI30DHM_4egVwt3NQqeUD7nMFpps","d":"0_NxaRPUMQoAJt50Gz8YiTr8gRTwyEaCumd-MToTmIo","key_ops":["deriveKey"],"alg":"ECMR"}`))
	f.Add([]byte(`{"d":null,"d":"AA"}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		buf := make([]byte, maxScalar+8)
		k, err := parseKeyFile(data, buf[:maxScalar])
		if !bytes.Equal(buf[maxScalar:], make([]byte, 8)) {
			t.Fatal("d was decoded past its buffer")
		}
		if err != nil {
			if !errors.Is(err, ErrBadKey) && !errors.Is(err, secmem.ErrMemlock) {
				t.Fatalf("error %v is not ErrBadKey", err)
			}
			return
		}
		pt, err := k.point(k.c)
		if err != nil {
			t.Fatal(err)
		}
		var match bool
		if err := k.d.Open(func(d []byte) error {
			pub, err := k.c.baseMul(d)
			match = err == nil && bytes.Equal(pub, pt)
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		if !match {
			t.Fatal("the sealed scalar does not match the public point")
		}
	})
}

// TestRenameWhileOpen: a key file the server is reading can be renamed
// by a rotation (on Windows only because openKeyFile shares deletion).
func TestRenameWhileOpen(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "k.jwk")
	if err := os.WriteFile(path, []byte("{}"), 0o440); err != nil {
		t.Fatal(err)
	}
	f, err := openKeyFile(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := os.Rename(path, filepath.Join(dir, ".k.jwk")); err != nil {
		t.Fatalf("rename while a server reads the key: %v", err)
	}
}

// TestRenameWaitsForOtherReader: a key file another program holds open
// (here os.Open, which does not share deletion on Windows) is renamed once
// that program lets go, instead of failing the rotation.
func TestRenameWaitsForOtherReader(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "k.jwk")
	if err := os.WriteFile(path, []byte("{}"), 0o440); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	time.AfterFunc(200*time.Millisecond, func() { f.Close() })
	if err := renameKey(path, filepath.Join(dir, ".k.jwk")); err != nil {
		t.Fatalf("rename of a key another program held briefly: %v", err)
	}
}
