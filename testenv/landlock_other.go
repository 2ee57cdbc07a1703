//go:build !linux

package testenv

func landlockABI() int { return 0 }
