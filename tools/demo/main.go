// Command demo shows sealproxy's key path on embedded defaults, with nothing
// installed beyond Go: it starts Tang servers on 127.0.0.1, seals a freshly
// generated private key to one of them (and 2-of-3 to three), recovers it
// into locked memory, and shows that the recovered key is the original.
package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"time"

	"github.com/sealproxy/sealproxy/unlock"
	"github.com/sealproxy/sealproxy/unlock/tang"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, os.Stdout); err != nil {
		fmt.Fprintf(os.Stderr, "demo: error: %v\n", err)
		os.Exit(1)
	}
}

type tangServer struct {
	url, thp string
	srv      *http.Server
}

func startTang(dir string) (*tangServer, error) {
	thp, err := tang.Keygen(dir)
	if err != nil {
		return nil, err
	}
	keys, err := tang.OpenKeyDir(dir)
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	srv := &http.Server{Handler: tang.NewServer(keys, nil), ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(ln)
	return &tangServer{url: "http://" + ln.Addr().String(), thp: thp, srv: srv}, nil
}

func (t *tangServer) config() string { return fmt.Sprintf(`{"url":%q,"thp":%q}`, t.url, t.thp) }

func run(ctx context.Context, out io.Writer) error {
	tmp, err := os.MkdirTemp("", "sealproxy-demo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)

	var servers []*tangServer
	for i := range 3 {
		s, err := startTang(fmt.Sprintf("%s/tang%d", tmp, i))
		if err != nil {
			return fmt.Errorf("starting Tang: %w", err)
		}
		defer s.srv.Close()
		servers = append(servers, s)
	}
	fmt.Fprintf(out, "1. Tang servers on %s, %s, %s\n", servers[0].url, servers[1].url, servers[2].url)

	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return err
	}
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
	pubDER, _ := x509.MarshalPKIXPublicKey(&key.PublicKey)
	fingerprint := sha256.Sum256(pubDER)
	fmt.Fprintf(out, "2. generated an ECDSA P-256 key, public key SHA-256 %x\n", fingerprint[:8])

	start := time.Now()
	jwe, err := unlock.Encrypt(ctx, "tang", []byte(servers[0].config()), keyPEM, nil)
	if err != nil {
		return err
	}
	path := tmp + "/web.key.jwe"
	if err := os.WriteFile(path, jwe, 0o600); err != nil {
		return err
	}
	fmt.Fprintf(out, "3. sealed it to %s (thp %s) in %v: %d-byte JWE, no plaintext on disk\n",
		servers[0].url, servers[0].thp, time.Since(start).Round(time.Microsecond), len(jwe))
	if bytes.Contains(jwe, keyPEM) || bytes.Contains(jwe, der) {
		return errors.New("the JWE contains the key in the clear")
	}

	if err := recoverAndCheck(ctx, out, "4.", jwe, &key.PublicKey); err != nil {
		return err
	}

	sssConfig := fmt.Sprintf(`{"t":2,"pins":{"tang":[%s,%s,%s]}}`, servers[0].config(), servers[1].config(), servers[2].config())
	jwe, err = unlock.Encrypt(ctx, "sss", []byte(sssConfig), keyPEM, nil)
	if err != nil {
		return err
	}
	servers[1].srv.Close()
	fmt.Fprintf(out, "5. sealed it again 2-of-3 across the three servers, then stopped %s\n", servers[1].url)
	if err := recoverAndCheck(ctx, out, "6.", jwe, &key.PublicKey); err != nil {
		return err
	}
	fmt.Fprintln(out, "demo: ok")
	return nil
}

// recoverAndCheck opens jwe into locked memory, parses the key inside and
// checks it is the original by signing with it.
func recoverAndCheck(ctx context.Context, out io.Writer, step string, jwe []byte, want *ecdsa.PublicKey) error {
	start := time.Now()
	buf, err := unlock.Decrypt(ctx, jwe, nil)
	if err != nil {
		return err
	}
	elapsed := time.Since(start)
	defer buf.Destroy()
	block, _ := pem.Decode(buf.Bytes())
	if block == nil {
		return errors.New("recovered data is not PEM")
	}
	parsed, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	clear(block.Bytes)
	if err != nil {
		return err
	}
	got, ok := parsed.(*ecdsa.PrivateKey)
	if !ok || !got.PublicKey.Equal(want) {
		return errors.New("recovered key does not match the original")
	}
	digest := sha256.Sum256([]byte("sealproxy demo"))
	sig, err := ecdsa.SignASN1(rand.Reader, got, digest[:])
	if err != nil {
		return err
	}
	if !ecdsa.VerifyASN1(want, digest[:], sig) {
		return errors.New("signature of the recovered key does not verify")
	}
	fmt.Fprintf(out, "%s recovered it in %v into locked memory; it matches the original and signs\n", step, elapsed.Round(time.Microsecond))
	return nil
}
