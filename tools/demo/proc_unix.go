//go:build unix

package main

import (
	"os/exec"
	"syscall"
)

// detach puts the proxy in its own process group: Ctrl-C on the demo's
// terminal reaches the demo alone, which then stops the proxy with one
// SIGTERM (a second signal would cut its drain short).
func detach(cmd *exec.Cmd) { cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} }
