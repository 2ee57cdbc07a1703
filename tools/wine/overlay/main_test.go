package main

import (
	"go/parser"
	"go/token"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestPatchInstalledToolchain patches the toolchain running this test: the
// result must still parse and carry the new case; a toolchain whose file
// changed fails here first, with the reason.
func TestPatchInstalledToolchain(t *testing.T) {
	goroot, err := exec.Command("go", "env", "GOROOT").Output()
	if err != nil {
		t.Skipf("no go command to ask for GOROOT: %v", err)
	}
	src, err := os.ReadFile(filepath.Join(strings.TrimSpace(string(goroot)), filepath.FromSlash(file)))
	if err != nil {
		t.Fatalf("the toolchain's source: %v", err)
	}
	got, err := patch(string(src))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(got, "NTStatus(0xC0000002):") || strings.Contains(got, anchor) {
		t.Fatal("patched file lacks the new case")
	}
	if _, err := parser.ParseFile(token.NewFileSet(), file, got, 0); err != nil {
		t.Fatalf("patched file does not parse: %v", err)
	}
}

func TestPatchRefusesChangedFile(t *testing.T) {
	for name, src := range map[string]string{
		"anchor gone":   "package windows\n",
		"anchor twice":  anchor + anchor,
		"already fixed": anchor + "\t\tSTATUS_NOT_IMPLEMENTED:\n",
	} {
		if _, err := patch(src); err == nil {
			t.Errorf("%s: patched without complaint", name)
		}
	}
}

func TestWrite(t *testing.T) {
	root := t.TempDir()
	orig := filepath.Join(root, filepath.FromSlash(file))
	if err := os.MkdirAll(filepath.Dir(orig), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(orig, []byte("package windows\n\nvar _ = []int{\n"+anchor+"}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(root, "out")
	path, err := write(root, out)
	if err != nil {
		t.Fatal(err)
	}
	js, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(js), `"Replace"`) || !strings.Contains(string(js), "at_windows.go") {
		t.Fatalf("overlay.json = %s", js)
	}
}
