package main

import "os/exec"

// detach does nothing on Windows, where the demo cannot signal the proxy
// the Unix way: it shows the systemd-style lifecycle and needs Linux or
// macOS to run to the end.
func detach(*exec.Cmd) {}
