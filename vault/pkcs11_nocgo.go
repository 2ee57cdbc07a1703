//go:build !cgo

package vault

import (
	"context"
	"fmt"

	"github.com/sealproxy/sealproxy/vault/keyref"
)

func init() {
	register(keyref.SchemePKCS11, func(_ context.Context, r keyref.Ref, _ *Options) (Key, error) {
		return nil, fmt.Errorf("%w: key %s: pkcs11 keys need a cgo build (CGO_ENABLED=1 and a C compiler)", ErrUnavailable, r)
	})
}
