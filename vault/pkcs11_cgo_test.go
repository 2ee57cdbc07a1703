//go:build cgo

package vault

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sealproxy/sealproxy/testenv"
	"github.com/sealproxy/sealproxy/unlock"
	"github.com/sealproxy/sealproxy/unlock/tang"
	"github.com/sealproxy/sealproxy/vault/keyref"
)

func openToken(t testing.TB, ref string) Key {
	t.Helper()
	k, err := Open(context.Background(), ref, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { k.Close() })
	return k
}

func tokenCert(t testing.TB, h *testenv.SoftHSM, label string, k Key) tls.Certificate {
	t.Helper()
	leaf := h.Certs[label]
	if err := CheckCertificate(k, leaf); err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{leaf.Raw}, PrivateKey: k, Leaf: leaf}
}

func TestPKCS11TLS(t *testing.T) {
	h := testenv.NewSoftHSM(t)
	cli := func(v uint16, suites ...uint16) *tls.Config {
		return &tls.Config{RootCAs: h.CA, ServerName: "localhost", MinVersion: v, MaxVersion: v, CipherSuites: suites}
	}
	cases := []struct {
		name, label string
		server      func(tls.Certificate) *tls.Config
		client      *tls.Config
	}{
		{"ECDSA P-256 TLS 1.3", "ec256", nil, cli(tls.VersionTLS13)},
		{"ECDSA P-384 (imported) TLS 1.3", "ec384", nil, cli(tls.VersionTLS13)},
		{"ECDSA P-256 TLS 1.2", "ec256", nil, cli(tls.VersionTLS12)},
		{"RSA-PSS TLS 1.3", "rsa2048", nil, cli(tls.VersionTLS13)},
		{"RSA PKCS#1 v1.5 TLS 1.2", "rsa2048", func(c tls.Certificate) *tls.Config {
			c.SupportedSignatureAlgorithms = []tls.SignatureScheme{tls.PKCS1WithSHA256}
			return &tls.Config{Certificates: []tls.Certificate{c}, MaxVersion: tls.VersionTLS12}
		}, cli(tls.VersionTLS12)},
		{"RSA key exchange TLS 1.2", "rsa2048", func(c tls.Certificate) *tls.Config {
			return &tls.Config{Certificates: []tls.Certificate{c}, MaxVersion: tls.VersionTLS12,
				CipherSuites: []uint16{tls.TLS_RSA_WITH_AES_128_GCM_SHA256}}
		}, cli(tls.VersionTLS12, tls.TLS_RSA_WITH_AES_128_GCM_SHA256)},
	}
	keys := map[string]Key{}
	for _, label := range []string{"ec256", "ec384", "rsa2048"} {
		keys[label] = openToken(t, h.URI(label))
	}
	if !keys["ec384"].Public().(*ecdsa.PublicKey).Equal(h.Imported.Public()) {
		t.Error("the imported P-384 key's public half differs")
	}
	if _, ok := keys["ec256"].(crypto.Decrypter); ok {
		t.Error("an EC token key is a crypto.Decrypter (crypto/tls would offer RSA key exchange)")
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cert := tokenCert(t, h, c.label, keys[c.label])
			srv := &tls.Config{Certificates: []tls.Certificate{cert}}
			if c.server != nil {
				srv = c.server(cert)
			}
			if err := handshake(srv, c.client); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestPKCS11ByIDAndConcurrent(t *testing.T) {
	h := testenv.NewSoftHSM(t)
	k := openToken(t, "pkcs11:token="+h.Token+";id=%03?module-path="+h.Module+"&pin-source=file:"+h.PINFile)
	if !k.Public().(*ecdsa.PublicKey).Equal(h.Imported.Public()) {
		t.Fatal("id=%03 did not find the imported key")
	}
	// A second key of the same token shares its session pool.
	k2 := openToken(t, h.URI("rsa2048"))
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for i := range 64 {
		wg.Go(func() {
			s := crypto.Signer(k)
			if i%4 == 0 {
				s = k2
			}
			if _, err := signMsg(s, []byte("m")); err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// TestPKCS11BadInputs opens bad references one at a time (crypto11
// finalizes the module when a login fails, so no other key of the module
// may be open) and checks that each error names the reference, that
// neither errors nor logs ever show the PIN.
func TestPKCS11BadInputs(t *testing.T) {
	h := testenv.NewSoftHSM(t)
	const wrongPIN = "wrong-pin-7d3f9a"
	var logs bytes.Buffer
	opts := &Options{Log: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))}
	cases := []struct {
		name, ref string
		want      string // in the error
		is        error
	}{
		{"wrong PIN", h.URIWithPIN("ec256", wrongPIN), "CKR_PIN_INCORRECT", ErrPINRefused},
		{"missing token", strings.Replace(h.URI("ec256"), "token="+h.Token, "token=no-such-token", 1), "no-such-token", ErrTokenNotFound},
		{"missing object", h.URI("no-such-key"), "no private key", ErrObjectNotFound},
		{"private key without a public half", h.URI("nopub"), "a public half", ErrObjectNotFound},
		{"bad module path", strings.Replace(h.URI("ec256"), h.Module, "/nonexistent/libpkcs11.so", 1), "/nonexistent/libpkcs11.so", ErrModule},
		{"not a module", strings.Replace(h.URI("ec256"), h.Module, h.PINFile, 1), "dlopen", ErrModule},
		{"missing pin file", strings.Replace(h.URI("ec256"), h.PINFile, h.PINFile+".missing", 1), "pin-source", nil},
		{"no module path", "pkcs11:token=" + h.Token + ";object=ec256?pin-value=" + h.PIN, "module-path", ErrBadRef},
		{"malformed with PIN", "pkcs11:token=x;object=y;bogus=1?pin-value=" + h.PIN, "bogus", ErrBadRef},
	}
	var all []string
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			k, err := Open(context.Background(), c.ref, opts)
			if err == nil {
				k.Close()
				t.Fatal("Open succeeded")
			}
			all = append(all, err.Error())
			t.Log(err)
			if c.is != nil && !errors.Is(err, c.is) {
				t.Errorf("error is not %v", c.is)
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Errorf("error does not mention %q", c.want)
			}
			if !errors.Is(c.is, ErrBadRef) && !strings.Contains(err.Error(), "pkcs11:token=") {
				t.Errorf("error does not name the reference")
			}
			if r, perr := keyref.Parse(c.ref); perr == nil {
				opts.log().Error("open failed", "key", r, "err", err)
			}
		})
	}
	// A mismatched certificate names both key and certificate.
	k := openToken(t, h.URI("ec256"))
	err := CheckCertificate(k, h.Certs["ec384"])
	if !errors.Is(err, ErrKeyMismatch) || !strings.Contains(err.Error(), "object=ec256") || !strings.Contains(err.Error(), "CN=ec384") {
		t.Errorf("mismatch error %v does not name the key and the certificate", err)
	}
	all = append(all, err.Error())

	text := strings.Join(all, "\n") + logs.String()
	for _, pin := range []string{h.PIN, wrongPIN} {
		if strings.Contains(text, pin) {
			t.Errorf("a PIN appears in errors or logs:\n%s", text)
		}
	}
	if !strings.Contains(logs.String(), "pin-value=REDACTED") {
		t.Errorf("the logs do not show the redacted reference:\n%s", logs.String())
	}
}

// A key whose certificate is a file (imported with softhsm2-util
// --import, no certificate object on the token) opens against that file
// and serves TLS; the configuration's certificate wins over the token's,
// and a certificate of another key is refused.
func TestPKCS11FileCertificate(t *testing.T) {
	h := testenv.NewSoftHSM(t)
	fileCert := h.Certs["filecert"]
	k, err := Open(context.Background(), h.URI("filecert"), &Options{Cert: fileCert})
	if err != nil {
		t.Fatalf("a token key with a file certificate: %v", err)
	}
	defer k.Close()
	if got := k.(interface{ Certificate() *x509.Certificate }).Certificate(); got != fileCert {
		t.Errorf("Certificate() = %v, want the configuration's", got)
	}
	srv := &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{fileCert.Raw}, PrivateKey: k, Leaf: fileCert}}}
	if err := handshake(srv, &tls.Config{RootCAs: h.CA, ServerName: "localhost"}); err != nil {
		t.Fatalf("TLS with the token key and its file certificate: %v", err)
	}

	// No certificate anywhere: the key still opens (the daemon always has
	// its [[key]]'s cert).
	bare, err := Open(context.Background(), h.URI("nocert"), nil)
	if err != nil {
		t.Fatalf("a token key without any certificate: %v", err)
	}
	bare.Close()

	// The configuration names another key's certificate: refused, even
	// though the token holds the right one for ec256.
	for _, c := range []struct{ label, cert string }{{"filecert", "ec256"}, {"ec256", "filecert"}} {
		k, err := Open(context.Background(), h.URI(c.label), &Options{Cert: h.Certs[c.cert]})
		if err == nil {
			k.Close()
			t.Fatalf("%s opened against the certificate of %s", c.label, c.cert)
		}
		if !errors.Is(err, ErrKeyMismatch) || !strings.Contains(err.Error(), "CN="+c.cert) {
			t.Errorf("%s against %s: %v, want ErrKeyMismatch naming the certificate", c.label, c.cert, err)
		}
	}
	// The token shows another key's public half under the private key's
	// id, and the certificate file matches that public half: the test
	// signature at open refuses it.
	if k, err := Open(context.Background(), h.URI("badpub"), &Options{Cert: h.Certs["badpub"]}); err == nil {
		k.Close()
		t.Error("a key whose public-key object is another key's opened")
	} else if !errors.Is(err, ErrKeyMismatch) || !strings.Contains(err.Error(), "does not sign for the public key") {
		t.Errorf("badpub: %v, want ErrKeyMismatch from the test signature", err)
	}
	// The token's certificate is used when the configuration names none.
	tk, err := Open(context.Background(), h.URI("ec256"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tk.Close()
	if got := tk.(interface{ Certificate() *x509.Certificate }).Certificate(); got == nil || !got.Equal(h.Certs["ec256"]) {
		t.Errorf("without a configured certificate, Certificate() = %v, want the token's", got)
	}
}

// BenchmarkPKCS11Sign measures signatures per second with token keys from
// many goroutines (the session pool bounds the concurrency).
//
//	go test ./vault -run '^$' -bench '^BenchmarkPKCS11Sign$'
func BenchmarkPKCS11Sign(b *testing.B) {
	h := testenv.NewSoftHSM(b)
	for _, label := range []string{"ec256", "ec384", "rsa2048"} {
		k := openToken(b, h.URI(label))
		for _, par := range []int{1, 16} {
			b.Run(label+"/par="+strconv.Itoa(par), func(b *testing.B) {
				b.SetParallelism(par)
				digest := make([]byte, 32)
				var opts crypto.SignerOpts = crypto.SHA256
				if _, ok := k.Public().(*rsa.PublicKey); ok {
					opts = &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash, Hash: crypto.SHA256}
				}
				start := time.Now()
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						if _, err := k.Sign(rand.Reader, digest, opts); err != nil {
							b.Error(err)
							return
						}
					}
				})
				b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "sig/s")
			})
		}
	}
}

func TestPKCS11ContextCancelled(t *testing.T) {
	h := testenv.NewSoftHSM(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := Open(ctx, h.URI("ec256"), nil)
	if !errors.Is(err, context.Canceled) || !strings.Contains(err.Error(), "object=ec256") {
		t.Fatalf("got %v, want context.Canceled naming the key", err)
	}
}

// A reference that fails to open (here, a missing token, as a bad reload
// might bring) must not break keys of the same module that are in use:
// crypto11 finalizes the module when its Configure fails.
func TestPKCS11FailedOpenKeepsOthers(t *testing.T) {
	h := testenv.NewSoftHSM(t)
	k := openToken(t, h.URI("ec256"))
	bad := []string{
		strings.Replace(h.URI("ec256"), "token="+h.Token, "token=no-such-token", 1),
		"pkcs11:serial=0000;object=ec256?module-path=" + h.Module + "&pin-value=x",
	}
	for _, ref := range bad {
		if _, err := Open(context.Background(), ref, nil); err == nil {
			t.Fatalf("Open(%s) succeeded", ref)
		}
	}
	if _, err := signMsg(k, []byte("m")); err != nil {
		t.Fatalf("the open key broke after a failed open: %v", err)
	}
}

// A token already logged in accepts any PIN at C_Login; a second reference
// to the same token (through another selector) with a wrong PIN must
// still be refused.
func TestPKCS11WrongPINWhileLoggedIn(t *testing.T) {
	h := testenv.NewSoftHSM(t)
	openToken(t, h.URI("ec256"))
	ref := "pkcs11:slot-id=" + strconv.Itoa(h.Slot) + ";object=rsa2048?module-path=" + h.Module + "&pin-value=wrong-pin-1"
	k, err := Open(context.Background(), ref, nil)
	if err == nil {
		k.Close()
		t.Fatal("a wrong PIN was accepted because the token was logged in")
	}
	if strings.Contains(err.Error(), "wrong-pin-1") {
		t.Errorf("error shows the PIN: %v", err)
	}
	t.Log(err)
}

// sealPIN writes pin (with a newline, as `echo PIN | seal encrypt` makes
// it) sealed to tangSrv into dir/name and returns the file's path.
func sealPIN(t *testing.T, tangSrv *testenv.Tang, dir, name, pin string) string {
	t.Helper()
	jwe, err := unlock.Encrypt(context.Background(), "tang", []byte(tangSrv.Config()), []byte(pin+"\n"), nil)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, jwe, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// A PIN sealed to Tang opens the token; a wrong sealed PIN is the token's
// refusal (ErrPINRefused), an unreachable Tang is ErrUnreachable; neither
// errors nor logs ever show a PIN.
func TestPKCS11SealedPIN(t *testing.T) {
	h := testenv.NewSoftHSM(t)
	tangSrv := testenv.EmbeddedTang(t)
	dir := t.TempDir()
	const wrongPIN = "wrong-sealed-pin-5e1c"
	sealPIN(t, tangSrv, dir, "pin.jwe", h.PIN)
	sealPIN(t, tangSrv, dir, "wrong.jwe", wrongPIN)
	ref := func(label, pinFile string) string {
		return "pkcs11:token=" + h.Token + ";object=" + label + "?module-path=" + h.Module + "&pin-source=sealed:" + pinFile
	}
	var logs bytes.Buffer
	opts := &Options{BaseDir: dir, Cert: h.Certs["filecert"], Log: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))}

	// ReadSealed hands the PIN's JWE to the key ring (for its approval
	// request group), and Open recovers from those bytes.
	jwe, ok, err := ReadSealed(ref("filecert", "pin.jwe"), opts)
	if err != nil || !ok {
		t.Fatalf("ReadSealed of a sealed PIN: %v, %v", ok, err)
	}
	withJWE := *opts
	withJWE.Sealed = jwe
	k, err := Open(context.Background(), ref("filecert", "pin.jwe"), &withJWE)
	if err != nil {
		t.Fatalf("a key whose PIN is sealed: %v", err)
	}
	fileCert := h.Certs["filecert"]
	srv := &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{fileCert.Raw}, PrivateKey: k, Leaf: fileCert}}}
	if err := handshake(srv, &tls.Config{RootCAs: h.CA, ServerName: "localhost"}); err != nil {
		t.Fatalf("TLS with the key opened by a sealed PIN: %v", err)
	}
	k.Close()

	var all []string
	_, err = Open(context.Background(), ref("filecert", "wrong.jwe"), opts)
	if !errors.Is(err, ErrPINRefused) {
		t.Errorf("a wrong sealed PIN: %v, want ErrPINRefused", err)
	}
	all = append(all, fmt.Sprint(err))
	tangSrv.Stop()
	_, err = Open(context.Background(), ref("filecert", "pin.jwe"), opts)
	if !errors.Is(err, tang.ErrUnreachable) || errors.Is(err, ErrPINRefused) || !strings.Contains(err.Error(), "sealed PIN") {
		t.Errorf("a sealed PIN with Tang down: %v, want ErrUnreachable naming the sealed PIN", err)
	}
	all = append(all, fmt.Sprint(err))
	opts.log().Error("open failed", "err", err)
	text := strings.Join(all, "\n") + logs.String()
	for _, pin := range []string{h.PIN, wrongPIN} {
		if strings.Contains(text, pin) {
			t.Errorf("a PIN appears in errors or logs:\n%s", text)
		}
	}
}

// A recovered PIN's locked buffer is destroyed once the login is done,
// whether the token accepted the PIN or not.
func TestPKCS11SealedPINWiped(t *testing.T) {
	h := testenv.NewSoftHSM(t)
	tangSrv := testenv.EmbeddedTang(t)
	dir := t.TempDir()
	sealPIN(t, tangSrv, dir, "pin.jwe", h.PIN)
	sealPIN(t, tangSrv, dir, "wrong.jwe", "wrong-pin-0b7a")
	for _, c := range []struct {
		file string
		ok   bool
	}{{"pin.jwe", true}, {"wrong.jwe", false}} {
		r, err := keyref.Parse("pkcs11:token=" + h.Token + ";object=ec256?module-path=" + h.Module + "&pin-source=sealed:" + c.file)
		if err != nil {
			t.Fatal(err)
		}
		opts := &Options{BaseDir: dir}
		pin, err := recoverPIN(context.Background(), r.PKCS11(), opts)
		if err != nil {
			t.Fatal(err)
		}
		buf := pin.(trimmedPIN).LockedBuffer
		if !buf.IsAlive() || len(pin.Bytes()) == 0 {
			t.Fatal("the recovered PIN is not in a live locked buffer")
		}
		k, err := loginAndFind(context.Background(), r.PKCS11(), h.Module, pin, opts)
		if (err == nil) != c.ok {
			t.Fatalf("%s: login error %v", c.file, err)
		}
		if k != nil {
			k.Close()
		}
		if buf.IsAlive() {
			t.Errorf("%s: the PIN's locked buffer is still alive after the login", c.file)
		}
	}
}
