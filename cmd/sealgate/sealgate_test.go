package main

import (
	"os"
	"testing"

	"github.com/rogpeppe/go-internal/testscript"

	"github.com/sealproxy/sealproxy/cmd/internal/cli"
	"github.com/sealproxy/sealproxy/testenv"
)

// TestMain lets the test binary stand in for `sealgate`: scripts run it as
// a command through the same cli.Main the real binary uses.
func TestMain(m *testing.M) {
	if dir := os.Getenv(plainHolderEnv); dir != "" {
		plainHolder(dir) // custody_scan_linux_test.go
	}
	testscript.Main(m, map[string]func(){
		"sealgate": func() { os.Exit(cli.Main("sealgate", run)) },
	})
}

// TestScripts runs the golden CLI tests in testdata/*.txtar: key
// generation, thumbprints, rotation, errors with hints, and a served
// directory followed across a rotation (checked with our Tang client by
// the `advertises` command, see testenv.ScriptParams).
func TestScripts(t *testing.T) {
	testscript.Run(t, testenv.ScriptParams("testdata"))
}
