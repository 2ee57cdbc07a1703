package sandbox

import (
	"os"
	"path/filepath"
)

// System is what any confined daemon of ours still reads after
// start-up, whatever its configuration:
//
//   - the trust store, loaded by crypto/x509 at the first verification
//     of a TLS peer (a bridge backend, a Tang server, an OCSP responder,
//     a webhook), which may come after start-up; SSL_CERT_FILE and
//     SSL_CERT_DIR when set;
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
		"/etc/ssl", "/etc/pki", "/usr/share/ca-certificates", "/usr/local/share/ca-certificates",
		"/etc/ca-certificates", "/etc/ca-certificates.conf",
		"/etc/resolv.conf", "/etc/hosts", "/etc/nsswitch.conf", "/etc/gai.conf", "/etc/host.conf", "/etc/ld.so.cache",
		"/proc",
	}}
	for _, env := range []string{"SSL_CERT_FILE", "SSL_CERT_DIR"} {
		for _, path := range filepath.SplitList(os.Getenv(env)) {
			if path != "" {
				p.Read = append(p.Read, path)
			}
		}
	}
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
