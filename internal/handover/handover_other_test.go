//go:build !unix

package handover

import (
	"context"
	"errors"
	"strings"
	"testing"
)

// TestUpgradeUnsupported: Windows refuses an upgrade, saying why and
// what to do instead.
func TestUpgradeUnsupported(t *testing.T) {
	_, err := New().Upgrade(context.Background(), Options{})
	if !errors.Is(err, ErrUnsupported) || !strings.Contains(err.Error(), "cannot pass listening sockets") ||
		!strings.Contains(err.Error(), "restart the service") {
		t.Fatalf("%v", err)
	}
}

func TestUnsupportedSaysWhy(t *testing.T) {
	if err := Unsupported(); !errors.Is(err, ErrUnsupported) || !strings.Contains(err.Error(), "sealproxy service stop") {
		t.Fatalf("%v", err)
	}
}
