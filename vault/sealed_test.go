package vault

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/sealproxy/sealproxy/internal/secmem"
	"github.com/sealproxy/sealproxy/testenv"
	"github.com/sealproxy/sealproxy/unlock"
	"github.com/sealproxy/sealproxy/vault/keyref"
)

var modes = []struct {
	name string
	mode custodyMode
}{{"box", custodyBox}, {"enclave", custodyEnclave}}

// verify checks that sig is a valid signature of msg by pub.
func verify(t *testing.T, pub crypto.PublicKey, msg, sig []byte) {
	t.Helper()
	if !verifies(pub, msg, sig) {
		t.Fatalf("signature does not verify")
	}
}

func verifies(pub crypto.PublicKey, msg, sig []byte) bool {
	digest := sha256.Sum256(msg)
	switch pub := pub.(type) {
	case *ecdsa.PublicKey:
		return ecdsa.VerifyASN1(pub, digest[:], sig)
	case *rsa.PublicKey:
		return rsa.VerifyPSS(pub, crypto.SHA256, digest[:], sig, nil) == nil
	case ed25519.PublicKey:
		return ed25519.Verify(pub, msg, sig)
	}
	return false
}

func signMsg(k crypto.Signer, msg []byte) ([]byte, error) {
	if _, ok := k.Public().(ed25519.PublicKey); ok {
		return k.Sign(rand.Reader, msg, crypto.Hash(0))
	}
	digest := sha256.Sum256(msg)
	var opts crypto.SignerOpts = crypto.SHA256
	if _, ok := k.Public().(*rsa.PublicKey); ok {
		opts = &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash, Hash: crypto.SHA256}
	}
	return k.Sign(rand.Reader, digest[:], opts)
}

func TestSealedKeySigns(t *testing.T) {
	msg := []byte("the handshake transcript")
	for _, tk := range testKeys(t) {
		for enc, p := range tk.pems {
			for _, m := range modes {
				t.Run(tk.name+"/"+enc+"/"+m.name, func(t *testing.T) {
					pemCopy := bytes.Clone(p)
					k, err := newSealedKey("sealed:test.jwe", pemCopy, m.mode)
					if err != nil {
						t.Fatal(err)
					}
					defer k.Close()
					pub := k.Public().(interface{ Equal(crypto.PublicKey) bool })
					if !pub.Equal(tk.signer.Public()) {
						t.Fatal("public key differs from the original")
					}
					for range 3 {
						sig, err := signMsg(k, msg)
						if err != nil {
							t.Fatal(err)
						}
						verify(t, k.Public(), msg, sig)
					}
					if err := CheckCertificate(k, mustLeaf(t, tk.signer)); err != nil {
						t.Fatal(err)
					}
					if err := k.Close(); err != nil {
						t.Fatal(err)
					}
					if _, err := signMsg(k, msg); !errors.Is(err, ErrClosed) {
						t.Fatalf("sign after Close: got %v, want ErrClosed", err)
					}
				})
			}
		}
	}
}

func mustLeaf(t *testing.T, k crypto.Signer) *x509.Certificate {
	t.Helper()
	c, _ := selfSigned(t, k)
	return c.Leaf
}

func TestSealedRSADecrypts(t *testing.T) {
	for _, tk := range testKeys(t) {
		r, ok := tk.signer.(*rsa.PrivateKey)
		if !ok {
			continue
		}
		k, err := newSealedKey("sealed:rsa.jwe", bytes.Clone(tk.pems["PKCS1"]), custodyBox)
		if err != nil {
			t.Fatal(err)
		}
		defer k.Close()
		secret := []byte("pre-master secret, 48 bytes long, for TLS 1.2!!")
		ct, err := rsa.EncryptPKCS1v15(rand.Reader, &r.PublicKey, secret) //lint:ignore SA1019 what a TLS 1.2 client does with an RSA key
		if err != nil {
			t.Fatal(err)
		}
		d := k.asKey().(crypto.Decrypter)
		pt, err := d.Decrypt(rand.Reader, ct, nil)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(pt, secret) {
			t.Fatal("decrypted plaintext differs")
		}
	}
}

func TestSealedKeyTLS(t *testing.T) {
	for _, tk := range testKeys(t) {
		k, err := newSealedKey("sealed:tls.jwe", bytes.Clone(tk.pems["PKCS8"]), custodyBox)
		if err != nil {
			t.Fatal(err)
		}
		defer k.Close()
		cert, pool := selfSigned(t, tk.signer)
		cert.PrivateKey = k.asKey()
		versions := []uint16{tls.VersionTLS13, tls.VersionTLS12}
		for _, v := range versions {
			srv := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: v, MaxVersion: v}
			cli := &tls.Config{RootCAs: pool, ServerName: "localhost", MinVersion: v, MaxVersion: v}
			if err := handshake(srv, cli); err != nil {
				t.Errorf("%s TLS %x: %v", tk.name, v, err)
			}
		}
		if _, ok := tk.signer.(*rsa.PrivateKey); ok {
			// TLS 1.2 with RSA key exchange uses the key's Decrypt.
			srv := &tls.Config{Certificates: []tls.Certificate{cert}, MaxVersion: tls.VersionTLS12,
				CipherSuites: []uint16{tls.TLS_RSA_WITH_AES_128_GCM_SHA256}}
			cli := &tls.Config{RootCAs: pool, ServerName: "localhost", MaxVersion: tls.VersionTLS12,
				CipherSuites: []uint16{tls.TLS_RSA_WITH_AES_128_GCM_SHA256}}
			if err := handshake(srv, cli); err != nil {
				t.Errorf("RSA key exchange: %v", err)
			}
		}
	}
}

func TestOpenSealedThroughTang(t *testing.T) {
	srv := testenv.EmbeddedTang(t)
	ctx := context.Background()
	dir := t.TempDir()
	tk := testKeys(t)[0]
	jwe, err := unlock.Encrypt(ctx, "tang", []byte(srv.Config()), tk.pems["SEC1"], nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "key.jwe"), jwe, 0o600); err != nil {
		t.Fatal(err)
	}
	// Accepted here so that the test runs in both build modes;
	// TestOpenSealedMemoryProtection covers the refusal.
	opts := &Options{BaseDir: dir, AllowUnprotectedMemory: true}
	k, err := Open(ctx, "sealed:key.jwe", opts)
	if err != nil {
		t.Fatal(err)
	}
	defer k.Close()
	sig, err := signMsg(k, []byte("m"))
	if err != nil {
		t.Fatal(err)
	}
	verify(t, tk.signer.Public(), []byte("m"), sig)

	// With Tang gone the key cannot be recovered, and the error names it.
	srv.Stop()
	_, err = Open(ctx, "sealed:key.jwe", opts)
	if err == nil || !strings.Contains(err.Error(), "sealed:key.jwe") {
		t.Fatalf("open without Tang: got %v, want an error naming sealed:key.jwe", err)
	}
}

// TestOpenSealedFromBytes: with Options.Sealed, Open recovers the JWE it
// is given and does not read the file (here: gone), so a caller that
// read the file once to prepare an approval recovers what it prepared.
func TestOpenSealedFromBytes(t *testing.T) {
	srv := testenv.EmbeddedTang(t)
	ctx := context.Background()
	tk := testKeys(t)[0]
	jwe, err := unlock.Encrypt(ctx, "tang", []byte(srv.Config()), tk.pems["SEC1"], nil)
	if err != nil {
		t.Fatal(err)
	}
	var reads int
	read := readFile
	readFile = func(path string, limit int64) ([]byte, error) { reads++; return read(path, limit) }
	t.Cleanup(func() { readFile = read })
	opts := &Options{BaseDir: t.TempDir(), AllowUnprotectedMemory: true, Sealed: jwe}
	k, err := Open(ctx, keyref.Sealed("absent.jwe"), opts)
	if err != nil {
		t.Fatal(err)
	}
	defer k.Close()
	sig, err := signMsg(k, []byte("m"))
	if err != nil {
		t.Fatal(err)
	}
	verify(t, tk.signer.Public(), []byte("m"), sig)
	if reads != 0 {
		t.Errorf("the sealed file was read %d times", reads)
	}
	opts.Sealed = nil
	if _, err := Open(ctx, keyref.Sealed("absent.jwe"), opts); err == nil || reads != 1 {
		t.Errorf("without Sealed: %v after %d reads, want the file read (and missing)", err, reads)
	}
}

// A binary whose secmem.Do erases nothing (built without
// GOEXPERIMENT=runtimesecret) refuses sealed: keys before it asks Tang,
// unless the options accept it; a protected binary opens them. The
// Makefile runs this package in both build modes.
func TestOpenSealedMemoryProtection(t *testing.T) {
	srv := testenv.EmbeddedTang(t)
	ctx := context.Background()
	dir := t.TempDir()
	tk := testKeys(t)[0]
	jwe, err := unlock.Encrypt(ctx, "tang", []byte(srv.Config()), tk.pems["SEC1"], nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "key.jwe"), jwe, 0o600); err != nil {
		t.Fatal(err)
	}
	open := func(allow bool) error {
		k, err := Open(ctx, "sealed:key.jwe", &Options{BaseDir: dir, AllowUnprotectedMemory: allow})
		if err == nil {
			k.Close()
		}
		return err
	}

	if secmem.Erasing() {
		if err := CheckMemoryProtection(false); err != nil {
			t.Fatalf("protected build: %v", err)
		}
		if err := open(false); err != nil {
			t.Fatalf("protected build refused a sealed key: %v", err)
		}
		return
	}
	err = CheckMemoryProtection(false)
	if !errors.Is(err, ErrUnprotectedMemory) {
		t.Fatalf("unprotected build: CheckMemoryProtection = %v, want ErrUnprotectedMemory", err)
	}
	if want := "GOEXPERIMENT=runtimesecret"; !secmem.Built() && !strings.Contains(err.Error(), want) {
		t.Errorf("error %q does not name %s", err, want)
	}
	if err := CheckMemoryProtection(true); err != nil {
		t.Fatalf("accepted: %v", err)
	}
	if err := open(false); !errors.Is(err, ErrUnprotectedMemory) || !strings.Contains(err.Error(), "sealed:key.jwe") {
		t.Fatalf("unprotected build opened a sealed key: %v, want ErrUnprotectedMemory naming the key", err)
	}
	if err := open(true); err != nil {
		t.Fatalf("allow_unprotected_memory: %v", err)
	}
	// Refused before any Tang server is asked: with Tang gone the error
	// is still the refusal, not an unreachable server.
	srv.Stop()
	if err := open(false); !errors.Is(err, ErrUnprotectedMemory) {
		t.Fatalf("with Tang stopped: %v, want ErrUnprotectedMemory", err)
	}
}

func TestOpenSealedBadInputs(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, data []byte) {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("garbage.jwe", []byte("not a jwe"))
	write("big.jwe", bytes.Repeat([]byte("a"), maxJWE+1))
	for _, ref := range []string{"sealed:missing.jwe", "sealed:garbage.jwe", "sealed:big.jwe"} {
		_, err := Open(context.Background(), ref, &Options{BaseDir: dir})
		if err == nil || !strings.Contains(err.Error(), ref) {
			t.Errorf("Open(%s): got %v, want an error naming it", ref, err)
		}
	}
}

func TestNewSealedKeyBadPEM(t *testing.T) {
	for _, data := range []string{"", "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
		"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"} {
		if _, err := newSealedKey("sealed:x", []byte(data), custodyBox); err == nil {
			t.Errorf("newSealedKey(%q) succeeded", data)
		}
	}
}

func TestCheckCertificateMismatch(t *testing.T) {
	keys := testKeys(t)
	k, err := newSealedKey("sealed:a.jwe", bytes.Clone(keys[0].pems["PKCS8"]), custodyBox)
	if err != nil {
		t.Fatal(err)
	}
	defer k.Close()
	other, _ := selfSigned(t, keys[1].signer)
	err = CheckCertificate(k, other.Leaf)
	if !errors.Is(err, ErrKeyMismatch) {
		t.Fatalf("got %v, want ErrKeyMismatch", err)
	}
	for _, want := range []string{"sealed:a.jwe", "CN=localhost", "P-256", "P-384"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
}

// Only RSA keys may be crypto.Decrypters: crypto/tls offers TLS 1.2 RSA key
// exchange to any key that is one.
func TestOnlyRSADecrypts(t *testing.T) {
	for _, tk := range testKeys(t) {
		k, err := newSealedKey("sealed:k", bytes.Clone(tk.pems["PKCS8"]), custodyBox)
		if err != nil {
			t.Fatal(err)
		}
		_, isRSA := tk.signer.(*rsa.PrivateKey)
		if _, ok := k.asKey().(crypto.Decrypter); ok != isRSA {
			t.Errorf("%s: crypto.Decrypter = %v, want %v", tk.name, ok, isRSA)
		}
		k.Close()
	}
}

// Many goroutines sign at once (more than there are scratch buffers) while
// the key is closed under them: each signature verifies or fails with
// ErrClosed.
func TestSealedKeyConcurrentClose(t *testing.T) {
	tk := testKeys(t)[0]
	k, err := newSealedKey("sealed:c.jwe", bytes.Clone(tk.pems["PKCS8"]), custodyBox)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	start := make(chan struct{})
	for range 32 {
		wg.Go(func() {
			<-start
			for range 20 {
				sig, err := signMsg(k, []byte("m"))
				if errors.Is(err, ErrClosed) {
					return
				}
				if err != nil {
					t.Error(err)
					return
				}
				if !verifies(tk.signer.Public(), []byte("m"), sig) {
					t.Error("signature does not verify")
					return
				}
			}
		})
	}
	close(start)
	k.Close()
	wg.Wait()
}

// file: keys follow the same rule, and are refused without AllowPlaintext.
func TestFileKeys(t *testing.T) {
	dir := t.TempDir()
	for _, tk := range testKeys(t) {
		path := filepath.Join(dir, "key.pem")
		if err := os.WriteFile(path, tk.pems["PKCS8"], 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := Open(context.Background(), "file:"+path, nil); !errors.Is(err, ErrPlaintextRefused) {
			t.Fatalf("file: without AllowPlaintext: %v", err)
		}
		k, err := Open(context.Background(), "file:"+path, &Options{AllowPlaintext: true})
		if err != nil {
			t.Fatal(err)
		}
		_, isRSA := tk.signer.(*rsa.PrivateKey)
		if _, ok := k.(crypto.Decrypter); ok != isRSA {
			t.Errorf("%s: crypto.Decrypter = %v, want %v", tk.name, ok, isRSA)
		}
		sig, err := signMsg(k, []byte("m"))
		if err != nil {
			t.Fatal(err)
		}
		verify(t, tk.signer.Public(), []byte("m"), sig)
		k.Close()
	}
}
