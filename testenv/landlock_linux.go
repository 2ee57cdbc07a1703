package testenv

import ll "github.com/landlock-lsm/go-landlock/landlock/syscall"

func landlockABI() int {
	v, err := ll.LandlockGetABIVersion()
	if err != nil {
		return 0
	}
	return v
}
