//go:build !cgo

package vault

import (
	"context"
	"fmt"
)

func openPKCS11(_ context.Context, r Ref, _ *Options) (Key, error) {
	return nil, fmt.Errorf("%w: key %s: pkcs11 keys need a cgo build (CGO_ENABLED=1 and a C compiler)", ErrUnavailable, r)
}
