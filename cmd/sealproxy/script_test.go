package main

import (
	"context"
	"os"
	"testing"

	"github.com/rogpeppe/go-internal/testscript"

	"github.com/sealproxy/sealproxy/cmd/internal/cli"
	"github.com/sealproxy/sealproxy/testenv"
)

// TestMain lets the test binary stand in for `sealproxy` in the golden
// CLI scripts (testdata/*.txtar).
func TestMain(m *testing.M) {
	for _, env := range confinedChildEnvs {
		if os.Getenv(env) != "" {
			// A confined child (testenv.RunConfinedChild) may not remove
			// the directory testscript.Main makes for its commands.
			os.Exit(m.Run())
		}
	}
	testscript.Main(m, map[string]func(){
		"sealproxy": func() {
			err := run(context.Background(), os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
			os.Exit(cli.Report("sealproxy", err, os.Stderr))
		},
	})
}

// confinedChildEnvs mark a test binary re-run under a sandbox; the tests
// that re-run one add their variable.
var confinedChildEnvs []string

// TestScripts runs the golden CLI tests: exact stderr for usage errors
// and their hints, and exit codes.
func TestScripts(t *testing.T) {
	testscript.Run(t, testenv.ScriptParams("testdata"))
}
