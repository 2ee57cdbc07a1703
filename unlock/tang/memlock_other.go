//go:build !linux

package tang

import "os"

// checkMemlock has no limit to read here (memguard locks with the
// platform's own call).
func checkMemlock(int) error { return nil }

func pageSize() int { return os.Getpagesize() }
