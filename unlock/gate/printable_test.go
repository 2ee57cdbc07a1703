package gate_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/sealproxy/sealproxy/unlock/gate"
)

// TestGateTextCannotDriveTheTerminal: text a gate sends (an error, a
// host's name) reaches the operator's screen escaped, never as control
// sequences.
func TestGateTextCannotDriveTheTerminal(t *testing.T) {
	for in, want := range map[string]string{
		"web-1.example.com": "web-1.example.com",
		"héllo wörld":       "héllo wörld",
		"a\x1b[2Jb":         `"a\x1b[2Jb"`,
		"line\nbreak":       `"line\nbreak"`,
		"bell\a":            `"bell\a"`,
	} {
		if got := gate.Printable(in); got != want {
			t.Errorf("Printable(%q) = %s, want %s", in, got, want)
		}
	}
	hostile := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusForbidden)
		w.Write([]byte(`{"error":"denied\u001b]0;owned\u0007"}`))
	}))
	defer hostile.Close()
	_, err := (&gate.Client{URL: hostile.URL, Token: "sgt_x"}).Pending(context.Background())
	if err == nil || strings.ContainsAny(err.Error(), "\x1b\a") {
		t.Fatalf("error from a hostile gate: %q, want its control characters escaped", err)
	}
}
