//go:build linux

package sandbox

import (
	"errors"
	"fmt"
	"os"
	"syscall"

	"github.com/landlock-lsm/go-landlock/landlock"
	ll "github.com/landlock-lsm/go-landlock/landlock/syscall"
)

// minRequiredABI is the oldest Landlock ABI mode required accepts: ABI 3
// (Linux 6.2) is the first that also controls truncate(2), without which
// a readable file could still be emptied.
const minRequiredABI = 3

// config is the set of rights the ruleset handles: those of ABI 7. A
// newer preset would handle rights this package does not grant on
// purpose (ABI 9's connect to pathname unix sockets would cut unix:
// backends and NOTIFY_SOCKET).
var config = landlock.V7

// ABI returns the kernel's Landlock ABI version, 0 if it has none or
// the system calls are blocked.
func ABI() int {
	v, _ := abi()
	return v
}

// abi returns the Landlock ABI version, or 0 and why Landlock cannot be
// used.
func abi() (int, string) {
	v, err := ll.LandlockGetABIVersion()
	switch {
	case err == nil:
		return v, ""
	case errors.Is(err, syscall.EPERM):
		return 0, "the landlock system calls are blocked by a seccomp filter: with systemd before 254, add SystemCallFilter=landlock_create_ruleset landlock_add_rule landlock_restrict_self to the unit"
	}
	return 0, "this kernel has no Landlock (" + err.Error() + "): it needs CONFIG_SECURITY_LANDLOCK=y and landlock in the lsm= boot parameter; Linux 6.2 or later"
}

// Apply confines the calling process (every thread, and every child it
// starts later) to p. It cannot be undone.
func Apply(p Policy, mode Mode) (Result, error) {
	p.Clean()
	var why string
	res := Result{}
	res.ABI, why = abi()
	switch mode {
	case Off:
		return res, nil
	case BestEffort:
		if res.ABI == 0 {
			res.Unavailable = why
			return res, nil
		}
	case Required:
		if res.ABI == 0 {
			return res, fmt.Errorf("%w: %s; or choose landlock mode best-effort to run unconfined", ErrUnsupported, why)
		}
		if res.ABI < minRequiredABI {
			return res, fmt.Errorf("%w: the kernel's Landlock ABI %d cannot restrict truncate(2) (ABI %d, Linux 6.2, can); upgrade the kernel, or choose landlock mode best-effort", ErrUnsupported, res.ABI, minRequiredABI)
		}
	default:
		return res, fmt.Errorf("unknown landlock mode %q (want best-effort, off or required)", mode)
	}

	var rules []landlock.Rule
	add := func(paths []string, file, dir func(...string) landlock.FSRule) {
		for _, path := range paths {
			fi, err := os.Stat(path)
			if errors.Is(err, os.ErrNotExist) {
				res.Missing = append(res.Missing, path)
				continue
			}
			// Any other error is left to the kernel's open of the path,
			// which reports it naming the path.
			if err == nil && !fi.IsDir() {
				rules = append(rules, file(path))
			} else {
				rules = append(rules, dir(path))
			}
			res.Rules++
		}
	}
	add(p.Read, landlock.ROFiles, landlock.RODirs)
	add(p.Write, landlock.RWFiles, landlock.RWDirs)
	for _, dir := range p.Sockets {
		if _, err := os.Stat(dir); errors.Is(err, os.ErrNotExist) {
			res.Missing = append(res.Missing, dir)
			continue
		}
		rules = append(rules, landlock.PathAccess(ll.AccessFSMakeSock|ll.AccessFSRemoveFile, dir))
		res.Rules++
	}
	// BestEffort downgrades the handled rights to what the kernel knows;
	// mode required has checked above that this still covers reading,
	// writing and truncating.
	if err := config.BestEffort().RestrictPaths(rules...); err != nil {
		return res, fmt.Errorf("applying the landlock sandbox (ABI %d, %d rules): %w", res.ABI, res.Rules, err)
	}
	res.Enforced = true
	return res, nil
}
