// Package wine holds the workarounds that run the Windows test binaries
// under Wine (see README.md), and a check that the tree can be checked
// out on Windows at all.
package wine

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestWindowsCheckout fails on a file name Windows cannot create: a
// reserved device name (with any extension), a forbidden character, a
// trailing dot or space, or two names that differ only in case. Such a
// file breaks `git clone` on Windows for the whole tree.
func TestWindowsCheckout(t *testing.T) {
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		t.Fatalf("module root not found from %s: %v", root, err)
	}
	seen := map[string]string{} // lower-case path → path
	n := 0
	err = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if path == root {
			return nil
		}
		rel, _ := filepath.Rel(root, path)
		rel = filepath.ToSlash(rel)
		if d.IsDir() && (rel == ".git" || rel == ".tools" || rel == "bin") {
			return filepath.SkipDir
		}
		n++
		if why := badWindowsName(d.Name()); why != "" {
			t.Errorf("%s: %s", rel, why)
		}
		if other, ok := seen[strings.ToLower(rel)]; ok {
			t.Errorf("%s and %s differ only in case: one overwrites the other on Windows", rel, other)
		}
		seen[strings.ToLower(rel)] = rel
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if n < 100 {
		t.Fatalf("walked only %d files under %s: not the source tree", n, root)
	}
}

func TestBadWindowsName(t *testing.T) {
	for name, bad := range map[string]bool{
		"nul": true, "NUL": true, "nul.txt": true, "Com1": true, "lpt9.go": true, "aux": true,
		"a:b": true, "what?": true, "trailing.": true, "trailing ": true, "tab\there": true,
		"nul-byte": false, "null": false, "com10": false, "console": false, "file-windows": false, ".hidden.jwk": false,
	} {
		if got := badWindowsName(name) != ""; got != bad {
			t.Errorf("badWindowsName(%q) = %q, want bad=%v", name, badWindowsName(name), bad)
		}
	}
}

// badWindowsName says why Windows cannot create a file called name, or "".
func badWindowsName(name string) string {
	for _, r := range name {
		if r < 32 || strings.ContainsRune(`<>:"/\|?*`, r) {
			return fmt.Sprintf("the character %q is not allowed in a Windows file name", r)
		}
	}
	if strings.HasSuffix(name, ".") || strings.HasSuffix(name, " ") {
		return "Windows drops a trailing dot or space"
	}
	base, _, _ := strings.Cut(strings.ToUpper(name), ".")
	base = strings.TrimRight(base, " ")
	switch base {
	case "CON", "PRN", "AUX", "NUL":
		return base + " is a reserved device name on Windows: rename the file"
	}
	if len(base) == 4 && (strings.HasPrefix(base, "COM") || strings.HasPrefix(base, "LPT")) && base[3] >= '1' && base[3] <= '9' {
		return base + " is a reserved device name on Windows: rename the file"
	}
	return ""
}
