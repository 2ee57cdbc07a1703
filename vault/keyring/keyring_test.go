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

// TestStageOneKey: a run-time change of one key (Stage) keeps the other
// live keys, retires only the key it replaces when committed, and closes
// only its own key when aborted.
func TestStageOneKey(t *testing.T) {
	dir := t.TempDir()
	ca := testenv.NewCA(t, "test CA")
	cfg := &config.Config{Dir: dir, AllowPlaintextKeys: true}
	keys := map[string]*fakeKey{}
	for _, name := range []string{"a", "b", "a2", "a3"} {
		leaf := ca.Server(t, name+".test")
		leaf.WriteFiles(t, dir, name)
		keys[keyref.File(name+".key")] = &fakeKey{Signer: leaf.Key}
	}
	s := New(Options{})
	s.grace = 0
	s.open = func(_ context.Context, source string, _ *vault.Options) (vault.Key, error) { return keys[source], nil }
	k := func(name, file string) *config.Key {
		return &config.Key{Name: name, Cert: file + ".crt", Source: keyref.File(file + ".key")}
	}
	closed := func(f string) bool { return keys[keyref.File(f+".key")].closed.Load() }
	waitClosed := func(f string) {
		t.Helper()
		for deadline := time.Now().Add(10 * time.Second); !closed(f); time.Sleep(time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("key %s not closed", f)
			}
		}
	}
	sign := func(g *Generation, key *config.Key) {
		t.Helper()
		if _, err := g.Signer(context.Background(), cfg, key); err != nil {
			t.Fatal(err)
		}
	}
	g := s.Begin()
	sign(g, k("a", "a"))
	sign(g, k("b", "b"))
	g.Commit()

	// Staged and aborted: only the staged key closes.
	st := s.Stage()
	sign(st, k("a", "a3"))
	st.Discard()
	waitClosed("a3")

	// Staged and committed: "a" now signs with a2; a is retired, b stays.
	st = s.Stage()
	sign(st, k("a", "a2"))
	st.Commit()
	waitClosed("a")
	if closed("b") || closed("a2") {
		t.Fatal("a key still in use was closed")
	}

	// A key opened elsewhere (generated) is adopted under its name and
	// closed with the ring.
	gen := &fakeKey{Signer: keys[keyref.File("a3.key")].Signer}
	st = s.Stage()
	st.Adopt(cfg, k("a", "a3"), gen)
	st.Commit()
	waitClosed("a2")
	if closed("b") || gen.closed.Load() {
		t.Fatal("a live key was closed")
	}
	s.Close()
	if !gen.closed.Load() || !closed("b") {
		t.Fatal("Close left keys open")
	}
}

// TestOpenBound: keys that are not sealed open at most MaxConcurrentOpens
// at once (each may allocate locked memory), and all of them open.
func TestOpenBound(t *testing.T) {
	dir := t.TempDir()
	cfg := &config.Config{Dir: dir, AllowPlaintextKeys: true, Unlock: config.Unlock{Timeout: time.Minute, RetryBackoff: time.Second, RetryBackoffMax: time.Second}}
	for i := range 3 * MaxConcurrentOpens {
		name := string(rune('a' + i))
		cfg.Keys = append(cfg.Keys, config.Key{Name: name, Cert: name + ".crt", Source: keyref.File(name + ".key")})
		cfg.Listeners = append(cfg.Listeners, config.Listener{Name: name, Mode: config.ModeOffload, Keys: []string{name}})
	}
	var now, most, opened atomic.Int32
	s := New(Options{})
	s.open = func(context.Context, string, *vault.Options) (vault.Key, error) {
		n := now.Add(1)
		for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
		}
		time.Sleep(20 * time.Millisecond)
		now.Add(-1)
		opened.Add(1)
		return &fakeKey{}, nil
	}
	g := s.Begin()
	if err := g.Open(context.Background(), cfg); err != nil {
		t.Fatal(err)
	}
	g.Commit()
	if got := opened.Load(); got != int32(len(cfg.Keys)) {
		t.Errorf("opened %d keys, want %d", got, len(cfg.Keys))
	}
	if m := most.Load(); m > MaxConcurrentOpens || m < 2 {
		t.Errorf("at most %d keys opened at once, want 2 to %d", m, MaxConcurrentOpens)
	}
}
