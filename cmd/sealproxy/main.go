// Command sealproxy is the TLS termination proxy whose private keys stay
// sealed: `sealproxy run`, `sealproxy check` and `sealproxy version`.
package main

import (
	"os"

	"github.com/sealproxy/sealproxy/cmd/internal/cli"
	"github.com/sealproxy/sealproxy/vault"
)

func main() {
	code := cli.Main("sealproxy", run)
	vault.Purge() // wipe every key the vault held before the process goes
	os.Exit(code)
}
