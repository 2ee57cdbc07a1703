package tang

import (
	"errors"
	"os"

	"golang.org/x/sys/windows"
)

// openKeyFile opens a key file for reading with FILE_SHARE_DELETE, which
// os.Open leaves out: without it, a rotation that renames the file while
// a server reads it fails with a sharing violation.
func openKeyFile(path string) (*os.File, error) {
	p, err := windows.UTF16PtrFromString(path)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: path, Err: err}
	}
	h, err := windows.CreateFile(p, windows.GENERIC_READ,
		windows.FILE_SHARE_READ|windows.FILE_SHARE_WRITE|windows.FILE_SHARE_DELETE,
		nil, windows.OPEN_EXISTING, windows.FILE_ATTRIBUTE_NORMAL, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: path, Err: err}
	}
	return os.NewFile(uintptr(h), path), nil
}

// sharingViolation reports a file another program holds open without
// FILE_SHARE_DELETE (a backup or a virus scanner): worth a retry.
func sharingViolation(err error) bool {
	return errors.Is(err, windows.ERROR_SHARING_VIOLATION)
}
