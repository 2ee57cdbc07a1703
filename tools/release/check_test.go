package main

import (
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"

	"github.com/sealproxy/sealproxy/testenv"
)

// The check refuses a binary built the plain way (this test binary: no
// -trimpath, no version stamp, no runtimesecret unless the Makefile's
// second run set it) and accepts one built as the release builds it.
func TestCheckBinary(t *testing.T) {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	host := target{runtime.GOOS, runtime.GOARCH}
	if err := checkBinary(self, host, "1.0.0"); err == nil {
		t.Fatal("a test binary passed the release check")
	}

	if _, err := exec.LookPath("go"); err != nil && runtime.GOOS == "windows" {
		// Under Wine (make test-windows) there is no Windows Go toolchain.
		t.Skip("builds the commands with the go command, and there is none on PATH")
	}
	testenv.SkipIfShort(t, "builds every command as a release")
	dir := t.TempDir()
	if err := goBuild(t.Context(), dir, host, "1.2.3~test"); err != nil {
		t.Fatal(err)
	}
	for _, c := range commands {
		if err := checkBinary(dir+"/"+host.exe(c), host, "1.2.3~test"); err != nil {
			t.Errorf("release build: %v", err)
		}
	}
	err = checkBinary(dir+"/"+host.exe("sealproxy"), host, "9.9.9")
	if err == nil || !strings.Contains(err.Error(), "does not hold its version") {
		t.Errorf("another version's stamp: %v, want a version mismatch", err)
	}
}

func TestCheckVersion(t *testing.T) {
	for _, v := range []string{"1.2.3", "0.0.0~git20261203110000.c21c39b", "2.0+b1"} {
		if err := checkVersion(v); err != nil {
			t.Errorf("%s: %v", v, err)
		}
	}
	for _, v := range []string{"", "v1.2.3", "1.2-3", "1.2 3", "1:2.3", "1.2\n"} {
		if err := checkVersion(v); err == nil {
			t.Errorf("%q accepted", v)
		}
	}
}
