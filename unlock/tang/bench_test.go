package tang_test

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/sealproxy/sealproxy/unlock/tang"
)

// BenchmarkServerRecover is the server-side cost of one POST /rec/{kid}
// through a Server over a KeyDir, as sealgate serves it: reading the
// request, the exchange with the sealed scalar, and the answer.
func BenchmarkServerRecover(b *testing.B) {
	dir := b.TempDir()
	if _, err := tang.Keygen(dir); err != nil {
		b.Fatal(err)
	}
	kd, err := tang.OpenKeyDir(dir)
	if err != nil {
		b.Fatal(err)
	}
	srv := tang.NewServer(kd, nil)
	keys, err := kd.Keys()
	if err != nil {
		b.Fatal(err)
	}
	adv, err := tang.ParseAdvertisement(mustAdv(b, keys))
	if err != nil {
		b.Fatal(err)
	}
	exc, err := adv.ExchangeKey()
	if err != nil {
		b.Fatal(err)
	}
	epk, z, err := tang.Bind(exc)
	if err != nil {
		b.Fatal(err)
	}
	clear(z)
	blind, err := tang.NewBlind(exc, epk)
	if err != nil {
		b.Fatal(err)
	}
	body, err := json.Marshal(blind.Request())
	if err != nil {
		b.Fatal(err)
	}
	path := "/rec/" + exc.Thumbprint()
	b.ReportAllocs()
	cpu0 := cpuTime()
	for b.Loop() {
		w := httptest.NewRecorder()
		srv.ServeHTTP(w, httptest.NewRequest(http.MethodPost, path, bytes.NewReader(body)))
		if w.Code != http.StatusOK {
			b.Fatalf("POST %s: %d %s", path, w.Code, w.Body)
		}
	}
	if cpu := cpuTime() - cpu0; cpu > 0 {
		// Wall time is noisy on a shared machine; CPU time is the cost.
		b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N), "cpu-ns/op")
	}
}

func mustAdv(b *testing.B, keys *tang.Keys) []byte {
	b.Helper()
	adv, err := keys.Advertisement("")
	if err != nil {
		b.Fatal(err)
	}
	return adv
}
