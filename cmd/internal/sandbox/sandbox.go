// Package sandbox confines a started daemon's file system access with
// Landlock: from Apply on, it may open only the paths its Policy names.
//
// Only the file system is restricted. Landlock's TCP rules could pin
// bind and connect to ports, but a reload may add a listener on a new
// port or a backend, Tang server or OCSP responder anywhere, and a
// Landlock domain can only narrow: pinning ports would turn every such
// reload into a restart. Scoped restrictions (abstract unix sockets,
// signals) are left out too: NOTIFY_SOCKET may be an abstract socket.
// The systemd units restrict address families and system calls instead
// (docs/sandboxing.md).
package sandbox

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"path/filepath"
	"slices"
	"strings"
)

// Mode says how much Apply insists.
type Mode string

// Modes of [sandbox] landlock.
const (
	Off        Mode = "off"         // apply nothing
	BestEffort Mode = "best-effort" // apply what the kernel supports, nothing if it has no Landlock
	Required   Mode = "required"    // fail unless the kernel enforces every rule
)

// ParseMode checks a mode's spelling.
func ParseMode(s string) (Mode, error) {
	switch m := Mode(s); m {
	case Off, BestEffort, Required:
		return m, nil
	}
	return "", fmt.Errorf("unknown landlock mode %q (want best-effort, off or required)", s)
}

// Policy is what the process may still open once confined. Paths are
// absolute; a directory covers everything beneath it, including files
// created in it later. Paths that do not exist when Apply runs are
// skipped.
type Policy struct {
	Read    []string // files and directories to read
	Write   []string // files and directories to read and write (create, remove, truncate beneath directories)
	Sockets []string // directories where unix sockets may be made and removed
}

// Add appends another policy's paths.
func (p *Policy) Add(o Policy) {
	p.Read = append(p.Read, o.Read...)
	p.Write = append(p.Write, o.Write...)
	p.Sockets = append(p.Sockets, o.Sockets...)
}

// Clean makes the paths absolute and clean, sorted and without
// duplicates.
func (p *Policy) Clean() {
	for _, list := range []*[]string{&p.Read, &p.Write, &p.Sockets} {
		for i, path := range *list {
			if abs, err := filepath.Abs(path); err == nil {
				(*list)[i] = abs
			}
		}
		slices.Sort(*list)
		*list = slices.Compact(*list)
	}
}

// Readable reports whether the policy lets path be opened for reading:
// path is, or is beneath, a Read or Write entry. It looks at names only
// (symbolic links are not followed); a relative path is taken from the
// working directory.
func (p *Policy) Readable(path string) bool {
	const sep = string(filepath.Separator)
	if abs, err := filepath.Abs(path); err == nil {
		path = abs
	}
	for _, list := range [][]string{p.Read, p.Write} {
		for _, allowed := range list {
			if path == allowed || strings.HasPrefix(path, strings.TrimSuffix(allowed, sep)+sep) {
				return true
			}
		}
	}
	return false
}

// Result says what Apply did.
type Result struct {
	// ABI is the kernel's Landlock ABI version, 0 without Landlock.
	ABI int
	// Rules is the number of paths the ruleset allows; Missing the
	// policy's paths skipped because they did not exist.
	Rules   int
	Missing []string
	// Enforced is false when nothing was applied (mode off, or
	// best-effort without Landlock); Unavailable then says why Landlock
	// could not be used, and how to fix it.
	Enforced    bool
	Unavailable string
}

// ErrUnsupported is matched (errors.Is) by the error of mode required on
// a kernel or platform that cannot enforce the policy.
var ErrUnsupported = errors.New("landlock is not available")

// DeniedPath returns the path of a permission error err wraps that the
// policy does not cover: an open, or a unix socket's bind, that the
// sandbox refused.
func (p *Policy) DeniedPath(err error) (string, bool) {
	if !errors.Is(err, fs.ErrPermission) {
		return "", false
	}
	var (
		pe *fs.PathError
		oe *net.OpError
	)
	if errors.As(err, &oe) {
		if ua, ok := oe.Addr.(*net.UnixAddr); ok && oe.Op == "listen" && !p.socketDir(filepath.Dir(ua.Name)) {
			return ua.Name, true
		}
	}
	if errors.As(err, &pe) && !p.Readable(pe.Path) {
		return pe.Path, true
	}
	return "", false
}

func (p *Policy) socketDir(dir string) bool {
	if abs, err := filepath.Abs(dir); err == nil {
		dir = abs
	}
	return slices.Contains(p.Sockets, dir)
}
