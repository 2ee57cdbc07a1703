//go:build !windows

package vault

import (
	"context"
	"fmt"
)

func openWinstore(_ context.Context, r Ref, _ *Options) (Key, error) {
	q, err := ParseWinstoreRef(r.Opaque)
	if err != nil {
		return nil, err
	}
	return nil, fmt.Errorf("%w: key %s: winstore keys (the Windows certificate store) are only available on Windows", ErrUnavailable, q)
}
