// Command seal seals secrets into Clevis-compatible JWEs and opens them:
// `seal encrypt tang CFG`, `seal encrypt sss CFG`, `seal decrypt`, and
// `seal inspect`.
package main

import (
	"os"

	"github.com/sealproxy/sealproxy/cmd/internal/cli"
)

func main() { os.Exit(cli.Main("seal", run)) }
