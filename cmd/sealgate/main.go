// Command sealgate is a Tang server over tangd-compatible key
// directories: `sealgate keygen`, `rotate`, `thp` and `serve`.
package main

import (
	"os"

	"github.com/sealproxy/sealproxy/cmd/internal/cli"
)

func main() { os.Exit(cli.Main("sealgate", (&command{process: true}).run)) }
