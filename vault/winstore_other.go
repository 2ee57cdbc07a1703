//go:build !windows

package vault

import (
	"context"
	"fmt"

	"github.com/sealproxy/sealproxy/vault/keyref"
)

func init() {
	register(keyref.SchemeWinstore, func(_ context.Context, r keyref.Ref, _ *Options) (Key, error) {
		return nil, fmt.Errorf("%w: key %s: winstore keys (the Windows certificate store) are only available on Windows", ErrUnavailable, r.Winstore())
	})
}
