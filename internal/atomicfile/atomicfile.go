// Package atomicfile replaces a file so that a crash or a full disk
// leaves either the old file or the new one, never a part: a temporary
// file in the same directory, written, synced, given its mode, renamed
// over the target, and the directory synced. Sealed output, the state
// file, the CRL cache and the gate's operators all need exactly this;
// google/renameio does it too but does not build on Windows, where seal
// and sealgate run.
package atomicfile

import (
	"errors"
	"os"
	"path/filepath"
)

// Write replaces path with data, with mode perm (0600 for anything a
// secret could be near). A symlink at path is replaced, not followed.
func Write(path string, data []byte, perm os.FileMode) (err error) {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".*.tmp")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(tmp)
		}
	}()
	// Windows has no chmod for these bits; CreateTemp already made the
	// file readable by its owner only there.
	if err := f.Chmod(perm); err != nil && !errors.Is(err, errors.ErrUnsupported) {
		return err
	}
	if _, err := f.Write(data); err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync() // not every platform syncs a directory
		d.Close()
	}
	return nil
}
