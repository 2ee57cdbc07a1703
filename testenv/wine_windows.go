package testenv

import "golang.org/x/sys/windows"

// UnderWine reports whether the test runs under Wine rather than Windows
// itself: Wine's ntdll exports wine_get_version.
func UnderWine() bool {
	return windows.NewLazySystemDLL("ntdll.dll").NewProc("wine_get_version").Find() == nil
}
