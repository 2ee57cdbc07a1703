package testenv

import (
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
)

// HostileFront is a man in the middle before the Tang server or gate at
// upstream: it answers every POST (a recovery) with status and body, and
// passes everything else (advertisements) through. It returns its URL,
// which a pin configuration names instead of upstream's.
func HostileFront(t testing.TB, upstream string, status int, body string) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost {
			w.WriteHeader(status)
			w.Write([]byte(body))
			return
		}
		resp, err := http.Get(upstream + r.URL.Path)
		if err != nil {
			w.WriteHeader(http.StatusBadGateway)
			return
		}
		defer resp.Body.Close()
		w.WriteHeader(resp.StatusCode)
		io.Copy(w, resp.Body)
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}
