package unlock_test

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"sync"
	"testing"

	"github.com/sealproxy/sealproxy/testenv"
	"github.com/sealproxy/sealproxy/unlock"
)

// The targets: one recovery against a local Tang in under 5 ms, ten
// concurrent recoveries in under 50 ms. `clevis decrypt` spawns jose and
// curl and takes about 70 ms. Figures go in docs/benchmarks.md.

func sealForBench(b *testing.B, srv *testenv.Tang, pin, cfg string) []byte {
	b.Helper()
	jwe, err := unlock.Encrypt(context.Background(), pin, []byte(cfg), bytes.Repeat([]byte{0x5a}, 241), nil)
	if err != nil {
		b.Fatal(err)
	}
	return jwe
}

func benchDecrypt(b *testing.B, jwe []byte) {
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		buf, err := unlock.Decrypt(ctx, jwe, nil)
		if err != nil {
			b.Fatal(err)
		}
		buf.Destroy()
	}
}

func BenchmarkEncryptTang(b *testing.B) {
	srv := testenv.EmbeddedTang(b)
	ctx := context.Background()
	for b.Loop() {
		if _, err := unlock.Encrypt(ctx, "tang", []byte(srv.Config()), []byte("k"), nil); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDecryptTang(b *testing.B) {
	srv := testenv.EmbeddedTang(b)
	benchDecrypt(b, sealForBench(b, srv, "tang", srv.Config()))
}

func BenchmarkDecryptTangd(b *testing.B) {
	srv := testenv.RealTang(b)
	benchDecrypt(b, sealForBench(b, srv, "tang", srv.Config()))
}

func BenchmarkDecryptSSS2of3(b *testing.B) {
	s := []*testenv.Tang{testenv.EmbeddedTang(b), testenv.EmbeddedTang(b), testenv.EmbeddedTang(b)}
	cfg := fmt.Sprintf(`{"t":2,"pins":{"tang":[%s,%s,%s]}}`, s[0].Config(), s[1].Config(), s[2].Config())
	benchDecrypt(b, sealForBench(b, s[0], "sss", cfg))
}

// BenchmarkDecryptTang10Concurrent recovers ten keys at once, as a proxy
// with ten sealed keys does at start-up; one op is the whole batch.
func BenchmarkDecryptTang10Concurrent(b *testing.B) {
	srv := testenv.EmbeddedTang(b)
	var jwes [][]byte
	for range 10 {
		jwes = append(jwes, sealForBench(b, srv, "tang", srv.Config()))
	}
	ctx := context.Background()
	for b.Loop() {
		var wg sync.WaitGroup
		errs := make(chan error, len(jwes))
		for _, jwe := range jwes {
			wg.Go(func() {
				buf, err := unlock.Decrypt(ctx, jwe, nil)
				if err != nil {
					errs <- err
					return
				}
				buf.Destroy()
			})
		}
		wg.Wait()
		close(errs)
		if err := <-errs; err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkClevisDecrypt is the reference point: the real clevis against
// the same kind of server.
func BenchmarkClevisDecrypt(b *testing.B) {
	clevis := testenv.LookTool(b, "clevis", "clevis")
	srv := testenv.EmbeddedTang(b)
	jwe := sealForBench(b, srv, "tang", srv.Config())
	for b.Loop() {
		cmd := exec.Command(clevis, "decrypt")
		cmd.Stdin = bytes.NewReader(jwe)
		if out, err := cmd.CombinedOutput(); err != nil {
			b.Fatalf("clevis decrypt: %v: %s", err, out)
		}
	}
}
