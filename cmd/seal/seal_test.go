package main

import (
	"os"
	"testing"

	"github.com/rogpeppe/go-internal/testscript"

	"github.com/sealproxy/sealproxy/cmd/internal/cli"
	"github.com/sealproxy/sealproxy/testenv"
)

// TestMain lets the test binary stand in for `seal`: scripts run it as a
// command through the same cli.Main the real binary uses.
func TestMain(m *testing.M) {
	testscript.Main(m, map[string]func(){
		"seal": func() { os.Exit(cli.Main("seal", run)) },
	})
}

// TestScripts runs the golden CLI tests in testdata/*.txtar: exact stderr
// for errors and hints, exit codes, and nothing on stdout when decrypt
// fails. Tang servers are ours, started in-process by the `tang` command
// (see testenv.ScriptParams); their random URLs, thumbprints and key ids
// reach the golden files through cmpenv.
func TestScripts(t *testing.T) {
	testscript.Run(t, testenv.ScriptParams("testdata"))
}
