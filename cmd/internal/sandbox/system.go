package sandbox

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// System is what any confined daemon of ours still reads after
// start-up, whatever its configuration:
//
//   - the trust store, loaded by crypto/x509 at the first verification
//     of a TLS peer (a bridge backend, a Tang server, an OCSP responder,
//     a webhook), which may come after start-up: the files and
//     directories it reads and what their links point to (TrustStore),
//     never all of /etc/ssl or /etc/pki, which hold private keys;
//   - name resolution: Go's resolver re-reads /etc/resolv.conf when it
//     changes; glibc's (cgo) also reads nsswitch.conf, gai.conf and
//     host.conf. When resolv.conf is a symbolic link (systemd-resolved,
//     resolvconf), its target's directory, which those tools rewrite by
//     rename; glibc's NSS modules (libnss_*.so), which it loads at the
//     first lookup that needs them, and /etc/ld.so.cache to find them;
//   - /proc, as a whole: the Prometheus process collector reads
//     /proc/PID/{stat,fd,limits,net/netstat} and /proc/stat at each
//     scrape. A rule on /proc/self or /proc/stat alone does not last:
//     procfs makes a new inode when the kernel drops the cached entry
//     (memory pressure), and Landlock rules are tied to inodes, so the
//     scrape would start failing at random. Other processes' entries stay
//     behind their usual checks (ptrace for environ and fd, and the units'
//     ProtectProc=invisible).
//
// The Go runtime reads /sys/kernel/mm/transparent_hugepage and the
// cgroup's cpu.max only at start or through descriptors it keeps open:
// they need no rule.
func System() Policy {
	p := Policy{Read: []string{
		"/etc/resolv.conf", "/etc/hosts", "/etc/nsswitch.conf", "/etc/gai.conf", "/etc/host.conf", "/etc/ld.so.cache",
		"/proc",
	}}
	files, dirs := certFiles, certDirectories
	if f := os.Getenv("SSL_CERT_FILE"); f != "" {
		files = []string{f}
	}
	if d := os.Getenv("SSL_CERT_DIR"); d != "" {
		dirs = filepath.SplitList(d)
	}
	p.Read = append(p.Read, TrustStore(files, dirs, certSources)...)
	if target, err := filepath.EvalSymlinks("/etc/resolv.conf"); err == nil && target != "/etc/resolv.conf" {
		if dir := filepath.Dir(target); dir != "/" && dir != "/etc" {
			p.Read = append(p.Read, dir)
		}
	}
	for _, pattern := range []string{"/lib*/libnss_*.so*", "/lib*/*/libnss_*.so*", "/usr/lib*/libnss_*.so*", "/usr/lib*/*/libnss_*.so*"} {
		libs, _ := filepath.Glob(pattern)
		p.Read = append(p.Read, libs...)
	}
	return p
}

// Where crypto/x509 looks for roots on Linux (crypto/x509/root_linux.go,
// Go 1.27): the first of certFiles that exists, and every file of every
// certDirectories. SSL_CERT_FILE and SSL_CERT_DIR replace them.
var (
	certFiles = []string{
		"/etc/ssl/certs/ca-certificates.crt",                // Debian, Ubuntu, Gentoo
		"/etc/pki/tls/certs/ca-bundle.crt",                  // Fedora, RHEL 6
		"/etc/ssl/ca-bundle.pem",                            // openSUSE
		"/etc/pki/tls/cacert.pem",                           // OpenELEC
		"/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem", // CentOS, RHEL 7
		"/etc/ssl/cert.pem",                                 // Alpine
	}
	certDirectories = []string{"/etc/ssl/certs", "/etc/pki/tls/certs"}
	// certSources are where the distributions' trust store links point
	// (update-ca-certificates, update-ca-trust): public certificates
	// only, allowed whole so that an update adding files keeps working.
	certSources = []string{
		"/usr/share/ca-certificates", "/usr/local/share/ca-certificates", // Debian
		"/etc/pki/ca-trust/extracted", // Fedora, RHEL
		"/var/lib/ca-certificates",    // openSUSE
	}
)

// TrustStore returns the paths crypto/x509 reads to load the system
// roots from files and dirs, sources being directories their symbolic
// links point into (allowed whole). A link pointing elsewhere adds only
// its target file: a link in /etc/ssl/certs must not open the directory
// of a private key. Landlock follows links when a rule is made, so a rule
// on a link is a rule on its target; listing the links' own directories
// (for Go's directory scan) needs the directory rules.
func TrustStore(files, dirs, sources []string) []string {
	out := slices.Clone(files)
	out = append(out, dirs...)
	out = append(out, sources...)
	var roots []string // dirs and sources, as links resolve them
	for _, c := range append(slices.Clone(dirs), sources...) {
		if r, err := filepath.EvalSymlinks(c); err == nil {
			roots = append(roots, r)
		}
	}
	covered := func(path string) bool {
		for _, c := range roots {
			if path == c || strings.HasPrefix(path, strings.TrimSuffix(c, "/")+"/") {
				return true
			}
		}
		return false
	}
	follow := func(path string) {
		if fi, err := os.Lstat(path); err != nil || fi.Mode()&os.ModeSymlink == 0 {
			return
		}
		target, err := filepath.EvalSymlinks(path)
		if err != nil || covered(target) {
			return
		}
		// Go reads files there, not directories: a link to a directory
		// adds nothing (a rule on it would open all beneath).
		if fi, err := os.Stat(target); err == nil && fi.Mode().IsRegular() {
			out = append(out, target)
		}
	}
	for _, f := range files {
		follow(f)
	}
	for _, d := range dirs {
		entries, _ := os.ReadDir(d)
		for _, e := range entries {
			follow(filepath.Join(d, e.Name()))
		}
	}
	return out
}
