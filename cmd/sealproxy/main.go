// Command sealproxy is the TLS termination proxy whose private keys stay
// sealed: `sealproxy run`, `sealproxy check`, `sealproxy reload`,
// `sealproxy ctl` (run-time changes), `sealproxy version`, and
// `sealproxy service` on Windows.
package main

import (
	"context"
	"os"

	"github.com/sealproxy/sealproxy/cmd/internal/cli"
	"github.com/sealproxy/sealproxy/vault"
)

func main() {
	code := runProcess()
	vault.Purge() // wipe every key the vault held before the process goes
	os.Exit(code)
}

// runInteractive runs the command line in the foreground (not as a
// Windows service) and returns its exit code.
func runInteractive() int {
	d := &daemon{signals: processSignals(), confine: true, upgrades: true}
	err := d.run(context.Background(), os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	return cli.Report("sealproxy", err, os.Stderr)
}
