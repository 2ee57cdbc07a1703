package keyring

import (
	"context"
	"crypto"
	"log/slog"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sealproxy/sealproxy/proxy/config"
	"github.com/sealproxy/sealproxy/testenv"
	"github.com/sealproxy/sealproxy/vault"
	"github.com/sealproxy/sealproxy/vault/keyref"
)

type fakeKey struct {
	crypto.Signer
	closed atomic.Bool
}

func (k *fakeKey) Close() error { k.closed.Store(true); return nil }

// TestRingLifecycle: reloads reuse open keys, retire the ones the new
// configuration drops, and close what a refused configuration opened.
func TestRingLifecycle(t *testing.T) {
	dir := t.TempDir()
	ca := testenv.NewCA(t, "test CA")
	cfg := &config.Config{Dir: dir, AllowPlaintextKeys: true}
	keys := map[string]*fakeKey{}
	var opens atomic.Int32
	for _, name := range []string{"a", "b", "c"} {
		leaf := ca.Server(t, name+".test")
		leaf.WriteFiles(t, dir, name)
		keys[keyref.File(name+".key")] = &fakeKey{Signer: leaf.Key}
	}
	s := New(Options{Log: slog.New(slog.DiscardHandler)})
	s.grace = 0
	s.open = func(_ context.Context, source string, _ *vault.Options) (vault.Key, error) {
		opens.Add(1)
		return keys[source], nil
	}
	use := func(names ...string) *Generation {
		g := s.Begin()
		for _, n := range names {
			if _, err := g.Signer(context.Background(), cfg, &config.Key{Name: n, Cert: n + ".crt", Source: keyref.File(n + ".key")}); err != nil {
				t.Fatal(err)
			}
		}
		return g
	}
	closed := func(n string) bool { return keys[keyref.File(n+".key")].closed.Load() }
	waitClosed := func(n string) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for !closed(n) {
			if time.Now().After(deadline) {
				t.Fatalf("key %s not closed", n)
			}
			time.Sleep(time.Millisecond)
		}
	}

	use("a", "b").Commit()
	use("a").Commit()
	waitClosed("b")
	use("a", "c").Discard()
	waitClosed("c")
	use("a").Commit()
	if closed("a") {
		t.Fatal("the live key was closed")
	}
	if got := opens.Load(); got != 3 {
		t.Errorf("opened %d times, want 3 (a once, b, c)", got)
	}
	// A key file replaced under the same name is opened again.
	path := filepath.Join(dir, "a.key")
	later := time.Now().Add(time.Hour)
	if err := os.Chtimes(path, later, later); err != nil {
		t.Fatal(err)
	}
	use("a").Commit()
	if got := opens.Load(); got != 4 {
		t.Errorf("opened %d times, want 4 (a again after its file changed)", got)
	}
	waitClosed("a") // the old a is retired...
	s.Close()       // ...and the ring closes the new one (the same fake here)
}
