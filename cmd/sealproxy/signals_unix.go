//go:build unix

package main

import (
	"os"
	"os/signal"
	"syscall"
)

// processSignals delivers SIGHUP (reload), SIGUSR2 (upgrade), SIGTERM
// and SIGINT (stop; a second one forces the exit).
func processSignals() <-chan os.Signal {
	ch := make(chan os.Signal, 4)
	signal.Notify(ch, syscall.SIGHUP, syscall.SIGUSR2, syscall.SIGTERM, syscall.SIGINT)
	return ch
}

// isUpgrade reports the signal that asks for an upgrade (nginx's).
func isUpgrade(sig os.Signal) bool { return sig == syscall.SIGUSR2 }

// isReload reports the signal that asks for a reload.
func isReload(sig os.Signal) bool { return sig == syscall.SIGHUP }

// reaped reports whether pid is gone and reaped: a zombie still answers
// signal 0.
func reaped(pid int) bool { return syscall.Kill(pid, 0) == syscall.ESRCH }
