// Command overlay writes a `go test -overlay` file that lets Go's
// os.RemoveAll work under Wine 8 (see tools/wine/README.md): Wine answers
// the FileDispositionInformationEx call of internal/syscall/windows with
// STATUS_NOT_IMPLEMENTED, which Go does not take as a reason to fall back
// to the older call, so every t.TempDir cleanup fails.
//
// It patches the installed toolchain's own file at run time, and fails if
// that file no longer has the line it patches: then look whether Go falls
// back on STATUS_NOT_IMPLEMENTED itself (delete the overlay) or move the
// anchor. Test binaries only: nothing built for release uses it.
//
//	go run ./tools/wine/overlay -goroot DIR -out DIR
//
// prints the overlay file's path. -goroot is the GOROOT the go command
// will see: the go command refuses to replace files beneath GOMODCACHE,
// where GOTOOLCHAIN puts the toolchain, so tools/wine/run.sh passes a
// symbolic link to it.
package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// file is the toolchain file patched, relative to GOROOT.
const file = "src/internal/syscall/windows/at_windows.go"

// anchor is the last status of deleteat's fallback list in Go 1.27; the
// patch adds STATUS_NOT_IMPLEMENTED after it.
const (
	anchor  = "\t\tSTATUS_NOT_SUPPORTED:     // the file system doesn't support FILE_DISPOSITION_INFORMATION_EX or one of the flags\n"
	patched = "\t\tSTATUS_NOT_SUPPORTED, // the file system doesn't support FILE_DISPOSITION_INFORMATION_EX or one of the flags\n" +
		"\t\tNTStatus(0xC0000002): // STATUS_NOT_IMPLEMENTED: Wine 8 (sealproxy tools/wine/overlay, tests only)\n"
)

func main() {
	goroot := flag.String("goroot", "", "the GOROOT `DIR` the go command runs with")
	out := flag.String("out", "", "`DIR` to write the patched file and overlay.json into")
	flag.Parse()
	path, err := write(*goroot, *out)
	if err != nil {
		fmt.Fprintf(os.Stderr, "overlay: error: %v\n", err)
		os.Exit(1)
	}
	fmt.Println(path)
}

func write(goroot, out string) (string, error) {
	if goroot == "" || out == "" {
		return "", errors.New("both -goroot and -out are required")
	}
	orig := filepath.Join(goroot, filepath.FromSlash(file))
	src, err := os.ReadFile(orig)
	if err != nil {
		return "", err
	}
	dst, err := patch(string(src))
	if err != nil {
		return "", fmt.Errorf("%s: %w", orig, err)
	}
	if err := os.MkdirAll(out, 0o755); err != nil {
		return "", err
	}
	repl := filepath.Join(out, "at_windows.go")
	if err := os.WriteFile(repl, []byte(dst), 0o644); err != nil {
		return "", err
	}
	js, err := json.Marshal(map[string]map[string]string{"Replace": {orig: repl}})
	if err != nil {
		return "", err
	}
	overlay := filepath.Join(out, "overlay.json")
	return overlay, os.WriteFile(overlay, js, 0o644)
}

// patch adds STATUS_NOT_IMPLEMENTED to deleteat's fallback list.
func patch(src string) (string, error) {
	switch strings.Count(src, anchor) {
	case 1:
	case 0:
		return "", errors.New("the line this overlay patches is gone: if Go now falls back on STATUS_NOT_IMPLEMENTED (0xC0000002), delete the overlay (tools/wine/README.md); otherwise update the anchor in tools/wine/overlay")
	default:
		return "", errors.New("the line this overlay patches appears more than once: update the anchor in tools/wine/overlay")
	}
	if strings.Contains(src, "0xC0000002") || strings.Contains(src, "STATUS_NOT_IMPLEMENTED") {
		return "", errors.New("the file already mentions STATUS_NOT_IMPLEMENTED: check whether Go now falls back on it and the overlay can go (tools/wine/README.md)")
	}
	return strings.Replace(src, anchor, patched, 1), nil
}
