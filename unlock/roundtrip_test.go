package unlock_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"testing"
	"time"

	"github.com/sealproxy/sealproxy/testenv"
	"github.com/sealproxy/sealproxy/unlock"
)

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return c
}

func randomSecret(t *testing.T, n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

func decryptOK(t *testing.T, jwe []byte, want []byte) {
	t.Helper()
	buf, err := unlock.Decrypt(ctx(t), jwe, nil)
	if err != nil {
		t.Fatalf("Decrypt: %v", err)
	}
	defer buf.Destroy()
	if !bytes.Equal(buf.Bytes(), want) {
		t.Fatalf("Decrypt returned %x, want %x", buf.Bytes(), want)
	}
}

func TestTangRoundTrip(t *testing.T) {
	srv := testenv.EmbeddedTang(t)
	secret := randomSecret(t, 300)
	jwe, err := unlock.Encrypt(ctx(t), "tang", []byte(srv.Config()), secret, nil)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.HasSuffix(jwe, []byte("\n")) || bytes.Count(jwe, []byte(".")) != 4 {
		t.Fatalf("not a compact JWE without newline: %q", jwe)
	}
	decryptOK(t, jwe, secret)
}

func TestSSSRoundTripWithServerDown(t *testing.T) {
	a, b, c := testenv.EmbeddedTang(t), testenv.EmbeddedTang(t), testenv.EmbeddedTang(t)
	cfg := fmt.Sprintf(`{"t":2,"pins":{"tang":[%s,%s,%s]}}`, a.Config(), b.Config(), c.Config())
	secret := randomSecret(t, 64)
	jwe, err := unlock.Encrypt(ctx(t), "sss", []byte(cfg), secret, nil)
	if err != nil {
		t.Fatal(err)
	}
	b.Stop()
	decryptOK(t, jwe, secret)
}
