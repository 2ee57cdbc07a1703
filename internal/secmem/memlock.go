package secmem

import "errors"

// ErrMemlock reports a locked-memory limit too small for the secrets a
// process holds: memguard can hang when mlock fails, so callers refuse to
// start instead.
var ErrMemlock = errors.New("locked memory limit too low")
