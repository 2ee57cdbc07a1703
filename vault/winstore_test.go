package vault

import (
	"errors"
	"runtime"
	"strings"
	"testing"
)

func TestWinstoreUnavailableHere(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("on Windows the store is real")
	}
	_, err := Open(t.Context(), "winstore:cn=proxy.example.com", nil)
	if !errors.Is(err, ErrUnavailable) || !strings.Contains(err.Error(), "only available on Windows") {
		t.Fatalf("got %v", err)
	}
}
