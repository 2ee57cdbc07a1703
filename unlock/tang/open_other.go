//go:build !windows

package tang

import "os"

// openKeyFile opens a key file for reading.
func openKeyFile(path string) (*os.File, error) { return os.Open(path) }

// sharingViolation is Windows's; a rename never meets one here.
func sharingViolation(error) bool { return false }
