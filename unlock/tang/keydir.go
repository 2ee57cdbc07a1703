package tang

import (
	"fmt"
	"os"
	"strings"
	"sync"
	"time"
)

// KeySource gives the server the keys to use for one request.
type KeySource interface {
	Keys() (*Keys, error)
}

// Keys makes a fixed *Keys a KeySource.
func (ks *Keys) Keys() (*Keys, error) { return ks, nil }

// KeyDir is a key directory that is re-read when it changes, so a running
// server picks up `sealgate rotate` or tangd-rotate-keys without a restart
// (tangd re-reads its directory on every request). Keygen and rotation
// create and rename files, which changes the directory's modification time
// and its list of names; both are compared, because a file system with
// coarse timestamps can leave the time unchanged by a quick rotation.
type KeyDir struct {
	dir string

	mu      sync.Mutex
	keys    *Keys
	modTime time.Time
	names   string
}

// OpenKeyDir loads dir and returns a KeySource that follows its changes.
func OpenKeyDir(dir string) (*KeyDir, error) {
	d := &KeyDir{dir: dir}
	if _, err := d.Keys(); err != nil {
		return nil, err
	}
	return d, nil
}

// Keys returns the current keys, re-reading the directory if it changed.
// If a re-read fails the previous keys keep serving and the error is
// returned alongside them.
func (d *KeyDir) Keys() (*Keys, error) {
	entries, err := os.ReadDir(d.dir)
	if err != nil {
		return d.current(), fmt.Errorf("reading Tang key directory: %w", err)
	}
	st, err := os.Stat(d.dir)
	if err != nil {
		return d.current(), fmt.Errorf("reading Tang key directory: %w", err)
	}
	var names strings.Builder
	for _, e := range entries {
		names.WriteString(e.Name())
		names.WriteByte('/')
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.keys != nil && st.ModTime().Equal(d.modTime) && names.String() == d.names {
		return d.keys, nil
	}
	keys, err := LoadKeys(d.dir)
	if err != nil {
		return d.keys, err
	}
	d.keys, d.modTime, d.names = keys, st.ModTime(), names.String()
	return keys, nil
}

func (d *KeyDir) current() *Keys {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.keys
}
