package gate

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/sealproxy/sealproxy/unlock/tang"
)

// TestRuleDenialsBounded: a deny rule answers whoever sends it requests,
// and each denial is kept to answer 403; a flood of distinct requests
// that the rule denies keeps at most maxRuleDenials of them (the oldest
// go first), instead of one entry per request for DeniedTTL.
func TestRuleDenialsBounded(t *testing.T) {
	dir := t.TempDir()
	if _, err := tang.Keygen(dir); err != nil {
		t.Fatal(err)
	}
	keys, err := tang.OpenKeyDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	g := New(Config{Keys: keys, Rules: []Rule{{Name: "nobody", Action: StateDenied}}})
	ks, err := keys.Keys()
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := ks.Advertisement("")
	adv, err := tang.ParseAdvertisement(raw)
	if err != nil {
		t.Fatal(err)
	}
	srv, _ := adv.ExchangeKey()
	epk, _, _ := tang.Bind(srv)
	b, _ := tang.NewBlind(srv, epk)
	defer b.Wipe()
	body, _ := json.Marshal(b.Request())
	send := func(i int) int {
		r := httptest.NewRequest(http.MethodPost, "/rec/"+srv.Thumbprint(), bytes.NewReader(body))
		r.RemoteAddr = fmt.Sprintf("203.0.%d.%d:4000", i/256%256, i%256)
		r.Header.Set(tang.HeaderSession, fmt.Sprint("flood-", i))
		w := httptest.NewRecorder()
		g.ServeHTTP(w, r)
		return w.Code
	}
	const n = maxRuleDenials + 300
	for i := range n {
		if status := send(i); status != http.StatusForbidden {
			t.Fatalf("request %d: %d, want 403 from the rule", i, status)
		}
	}
	g.mu.Lock()
	kept, first, last := len(g.requests), g.requests["s:flood-0"], g.requests[fmt.Sprint("s:flood-", n-1)]
	g.mu.Unlock()
	if kept > maxRuleDenials || first != nil || last == nil || last.state != StateDenied {
		t.Fatalf("after %d denials: %d kept (at most %d), the first kept: %v, the last denied: %v", n, kept, maxRuleDenials, first != nil, last != nil && last.state == StateDenied)
	}
	// A dropped denial meets the rule again.
	if status := send(0); status != http.StatusForbidden {
		t.Fatalf("the first request again: %d, want 403", status)
	}
}
