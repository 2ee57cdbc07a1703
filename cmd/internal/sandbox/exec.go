package sandbox

import (
	"bufio"
	"os"
	"path/filepath"
	"strings"
)

// Reexec is what a confined daemon needs to start its own executable
// again (an upgrade's successor, which inherits the sandbox): the
// directories of the executable and of every file the process has
// mapped (its ELF interpreter and shared libraries), read from
// /proc/self/maps. Directories, not files: a package upgrade replaces
// the binary and its libraries by rename, and a Landlock rule is tied to
// the inode it was made for. Landlock's read access includes execute.
func Reexec() []string {
	var dirs []string
	if exe, err := os.Executable(); err == nil {
		dirs = append(dirs, filepath.Dir(exe))
	}
	f, err := os.Open("/proc/self/maps")
	if err != nil {
		return dirs // not Linux: nothing to confine anyway
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		// address perms offset dev inode path
		fields := strings.Fields(s.Text())
		if len(fields) < 6 || !strings.HasPrefix(fields[5], "/") || strings.HasPrefix(fields[5], "/memfd:") {
			continue
		}
		path := strings.TrimSuffix(strings.Join(fields[5:], " "), " (deleted)")
		dirs = append(dirs, filepath.Dir(path))
		if target, err := filepath.EvalSymlinks(path); err == nil {
			dirs = append(dirs, filepath.Dir(target))
		}
	}
	return dirs
}
