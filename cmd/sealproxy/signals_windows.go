package main

import (
	"os"
	"os/signal"
)

// processSignals delivers Ctrl-C (stop; a second one forces the exit).
// Windows has no SIGHUP: reload through the admin listener's POST
// /reload, or restart the service.
func processSignals() <-chan os.Signal {
	ch := make(chan os.Signal, 4)
	signal.Notify(ch, os.Interrupt)
	return ch
}

// isReload is false: no signal asks for a reload on Windows.
func isReload(os.Signal) bool { return false }

// isUpgrade is false: Windows has no SIGUSR2, and no upgrade (POST
// /upgrade answers why).
func isUpgrade(os.Signal) bool { return false }

// reaped is true: there is no upgrade, so no predecessor, on Windows.
func reaped(int) bool { return true }
