// Package gobuild compiles this module's commands for the tools that run
// them as real processes (the demo, the soak suite).
package gobuild

import (
	"cmp"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
)

// Command compiles github.com/sealproxy/sealproxy/cmd/NAME into dir, as
// `make build` does: with runtime/secret, since only then are the
// standard library's copies of a key erased after each signature. It
// returns the binary's path.
func Command(ctx context.Context, name, dir string) (string, error) {
	goTool, err := exec.LookPath("go")
	if err != nil {
		// Not on PATH: `go run` may have been called by its full path.
		goTool = filepath.Join(cmp.Or(os.Getenv("GOROOT"), "/usr/local/go"), "bin", "go")
	}
	bin := filepath.Join(dir, name)
	cmd := exec.CommandContext(ctx, goTool, "build", "-o", bin, "github.com/sealproxy/sealproxy/cmd/"+name)
	cmd.Env = append(os.Environ(), "GOEXPERIMENT=runtimesecret")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build ./cmd/%s: %w\n%s", name, err, out)
	}
	return bin, nil
}
