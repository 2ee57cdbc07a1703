package acme

import (
	"context"
	"encoding/pem"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/sealproxy/sealproxy/proxy/config"
	"github.com/sealproxy/sealproxy/testenv"
)

// TestManagerUpdate: a reload's configuration reaches the running
// manager: a changed directory is asked from then on, a name added to
// the key makes the certificate due at once (it does not cover the
// name), and a key removed and added again starts with its settings.
func TestManagerUpdate(t *testing.T) {
	var mu sync.Mutex
	hits := map[string]int{}
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		hits[r.URL.Path]++
		mu.Unlock()
		fmt.Fprint(w, `{"newOrder":"x"}`) // no ARI: two-thirds of the lifetime
	}))
	defer srv.Close()
	hit := func(path string) int { mu.Lock(); defer mu.Unlock(); return hits[path] }

	e := newPairEnv(t, false) // web.crt covers web.example for another hour
	caFile := filepath.Join(e.dir, "ca.pem")
	if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o644); err != nil {
		t.Fatal(err)
	}
	cfgWith := func(dir string, names ...string) *config.Config {
		c := &config.Config{Dir: e.dir}
		if dir != "" {
			c.Keys = []config.Key{{Name: "web", Cert: "web.crt", Source: "sealed:web.key.jwe",
				ACME: &config.ACME{Directory: srv.URL + dir, CA: caFile, Names: names}}}
		}
		return c
	}
	attempts := make(chan string, 16)
	m := New(cfgWith("/a", "web.example"), Options{Result: func(key, result string) {
		select {
		case attempts <- key:
		default:
		}
	}})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); m.Run(ctx) }()
	defer func() {
		cancel()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			t.Error("Run did not return after its context ended")
		}
	}()

	testenv.Eventually(t, 10*time.Second, "the start-up directory asked", func() bool { return hit("/a") > 0 })
	m.Update(cfgWith("/b", "web.example"))
	testenv.Eventually(t, 10*time.Second, "the reloaded directory asked", func() bool { return hit("/b") > 0 })
	m.Update(cfgWith(""))
	m.Update(cfgWith("/c", "web.example"))
	testenv.Eventually(t, 10*time.Second, "a key added again started", func() bool { return hit("/c") > 0 })
	select {
	case k := <-attempts:
		t.Fatalf("an attempt for %q with a certificate not due", k)
	default:
	}
	m.Update(cfgWith("/c", "web.example", "new.example"))
	select {
	case k := <-attempts:
		if k != "web" {
			t.Errorf("attempt for %q", k)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("a name added to [key.acme] did not make the certificate due")
	}
}

// TestSameACME: only what the manager uses restarts a key's schedule.
func TestSameACME(t *testing.T) {
	a := config.Key{Name: "web", Cert: "web.crt", Source: "sealed:web.jwe", ACME: &config.ACME{Directory: "https://ca/dir", Names: []string{"a"}}}
	b := a
	b.ACME = &config.ACME{Directory: "https://ca/dir", Names: []string{"a"}}
	b.OCSPFetch = true
	if !sameACME(&a, &b) {
		t.Error("equal [key.acme] tables (another OCSP setting) counted as a change")
	}
	for name, change := range map[string]func(k *config.Key){
		"directory": func(k *config.Key) { k.ACME.Directory = "https://other/dir" },
		"names":     func(k *config.Key) { k.ACME.Names = []string{"a", "b"} },
		"cert":      func(k *config.Key) { k.Cert = "other.crt" },
		"seal":      func(k *config.Key) { k.ACME.Seal = `{"url":"http://tang"}` },
	} {
		c := a
		acme := *a.ACME
		c.ACME = &acme
		change(&c)
		if sameACME(&a, &c) {
			t.Errorf("a changed %s not seen", name)
		}
	}
}
