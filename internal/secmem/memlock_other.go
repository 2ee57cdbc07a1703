//go:build !linux

package secmem

// CheckMemlock has no limit to read here (memguard locks with the
// platform's own call).
func CheckMemlock(int, string) error { return nil }
