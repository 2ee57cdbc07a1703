//go:build unix

package main

import (
	"os"
	"os/signal"
	"syscall"
)

// processSignals delivers SIGHUP (reload), SIGTERM and SIGINT (stop; a
// second one forces the exit).
func processSignals() <-chan os.Signal {
	ch := make(chan os.Signal, 4)
	signal.Notify(ch, syscall.SIGHUP, syscall.SIGTERM, syscall.SIGINT)
	return ch
}

// isReload reports the signal that asks for a reload.
func isReload(sig os.Signal) bool { return sig == syscall.SIGHUP }
