package unlock_test

import (
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sealproxy/sealproxy/unlock"
	"github.com/sealproxy/sealproxy/unlock/tang"
)

// TestSSSBoundsConcurrentShares: an sss node with many shares recovers
// them in parallel, but never more than a bounded number at once (each is
// a connection to a Tang server).
func TestSSSBoundsConcurrentShares(t *testing.T) {
	dir := t.TempDir()
	thp, err := tang.Keygen(dir)
	if err != nil {
		t.Fatal(err)
	}
	keys, err := tang.OpenKeyDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	inner := tang.NewServer(keys, slog.New(slog.DiscardHandler))
	var now, most atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, "/rec/") {
			n := now.Add(1)
			defer now.Add(-1)
			for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
			}
			time.Sleep(20 * time.Millisecond) // let the recoveries overlap
		}
		inner.ServeHTTP(w, r)
	}))
	defer srv.Close()

	const shares = 80
	one := fmt.Sprintf(`{"url":%q,"thp":%q}`, srv.URL, thp)
	cfg := fmt.Sprintf(`{"t":%d,"pins":{"tang":[%s]}}`, shares, strings.TrimSuffix(strings.Repeat(one+",", shares), ","))
	secret := randomSecret(t, 32)
	jwe, err := unlock.Encrypt(ctx(t), "sss", []byte(cfg), secret, nil)
	if err != nil {
		t.Fatal(err)
	}
	decryptOK(t, jwe, secret)
	if m := most.Load(); m > 32 || m < 2 {
		t.Fatalf("%d share recoveries at once, want between 2 and 32", m)
	}
	t.Logf("%d shares, at most %d recovered at once", shares, most.Load())
}
