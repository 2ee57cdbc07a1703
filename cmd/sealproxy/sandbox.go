package main

import (
	"bufio"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"github.com/sealproxy/sealproxy/cmd/internal/cli"
	"github.com/sealproxy/sealproxy/cmd/internal/sandbox"
	"github.com/sealproxy/sealproxy/proxy/config"
	"github.com/sealproxy/sealproxy/vault"
)

// sandboxPolicy is what `sealproxy run` may still open once started with
// cfg: the directories of the configuration file and of every file it
// names (directories, so that a file replaced by rename reloads), those
// of unix sockets it listens on, the system files of sandbox.System,
// and for PKCS#11 keys the module's and its libraries' directories and
// SoftHSM's configuration and tokens.
func sandboxPolicy(cfg *config.Config) sandbox.Policy {
	p := sandbox.System()
	readDir := func(path string) {
		p.Read = append(p.Read, filepath.Dir(path))
		// A link's target is opened too (certbot's live/ links into
		// archive/, where renewals add files).
		if target, err := filepath.EvalSymlinks(path); err == nil {
			p.Read = append(p.Read, filepath.Dir(target))
		}
	}
	dirOf := func(path string) {
		if path != "" {
			readDir(cfg.Resolve(path))
		}
	}
	readDir(cfg.Path)
	for _, k := range cfg.Keys {
		dirOf(k.Cert)
		dirOf(k.OCSPStaple)
		ref, err := vault.ParseRef(k.Source)
		if err != nil {
			continue // refused by the vault at start-up already
		}
		switch ref.Scheme {
		case "sealed", "file":
			dirOf(ref.Path)
		case "pkcs11":
			p.Add(pkcs11Policy(cfg, ref.Opaque))
		}
	}
	socket := func(addr string) {
		if path, ok := strings.CutPrefix(addr, "unix:"); ok {
			p.Sockets = append(p.Sockets, filepath.Dir(cfg.Resolve(path)))
		}
	}
	socket(cfg.Admin.Listen)
	for _, l := range cfg.Listeners {
		socket(l.Listen)
		dirOf(l.TLS.ClientCA)
		for _, crl := range l.TLS.CRL {
			dirOf(crl)
		}
		dirOf(l.Upstream.CA)
	}
	for _, path := range cfg.Sandbox.Read {
		p.Read = append(p.Read, cfg.Resolve(path))
	}
	for _, path := range cfg.Sandbox.Write {
		p.Write = append(p.Write, cfg.Resolve(path))
	}
	p.Clean()
	return p
}

// libDirs hold the shared libraries a PKCS#11 module loads: a reload
// may load a module again (or another one) after its keys were closed.
var libDirs = []string{"/lib", "/lib64", "/usr/lib", "/usr/lib64", "/usr/local/lib", "/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/ld.so.conf.d"}

// pkcs11Policy is what a pkcs11: key needs to be opened again: the
// module's directory, the library directories, the pin-source file's
// directory and, for SoftHSM, its configuration file and token
// directory (read when it looks keys up; finding and signing write
// nothing, TestSandboxedPKCS11).
func pkcs11Policy(cfg *config.Config, opaque string) sandbox.Policy {
	u, err := vault.ParsePKCS11URI(opaque)
	if err != nil || u.ModulePath == "" {
		return sandbox.Policy{}
	}
	p := sandbox.Policy{Read: append([]string{filepath.Dir(cfg.Resolve(u.ModulePath))}, libDirs...)}
	if pin, ok := strings.CutPrefix(u.PinSource, "file:"); ok {
		p.Read = append(p.Read, filepath.Dir(cfg.Resolve(pin)))
	}
	if strings.Contains(strings.ToLower(filepath.Base(u.ModulePath)), "softhsm") {
		conf := os.Getenv("SOFTHSM2_CONF")
		if conf == "" {
			conf = "/etc/softhsm/softhsm2.conf"
		}
		p.Read = append(p.Read, conf)
		if dir := softhsmTokenDir(conf); dir != "" {
			p.Read = append(p.Read, dir)
		}
	}
	return p
}

// softhsmTokenDir reads directories.tokendir from a SoftHSM2
// configuration file; "" if it cannot.
func softhsmTokenDir(conf string) string {
	f, err := os.Open(conf)
	if err != nil {
		return ""
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		k, v, ok := strings.Cut(s.Text(), "=")
		if ok && strings.TrimSpace(k) == "directories.tokendir" {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// confine applies the [sandbox] of cfg and logs what it did. It returns
// the policy applied, nil if none was.
func confine(log *slog.Logger, cfg *config.Config) (*sandbox.Policy, error) {
	mode, err := sandbox.ParseMode(cfg.Sandbox.Landlock)
	if err != nil {
		return nil, err
	}
	if mode == sandbox.Off {
		log.Info("landlock sandbox off ([sandbox] landlock = \"off\")")
		return nil, nil
	}
	p := sandboxPolicy(cfg)
	res, err := sandbox.Apply(p, mode)
	if errors.Is(err, sandbox.ErrUnsupported) {
		return nil, cli.WithHint(fmt.Errorf("[sandbox] landlock = \"required\": %w", err), cli.ExitFailure,
			"set [sandbox] landlock = \"best-effort\" to run unconfined where Landlock cannot be used")
	}
	if err != nil {
		return nil, err
	}
	if !res.Enforced {
		log.Warn("landlock is not available: running without the file system sandbox", "why", res.Unavailable)
		return nil, nil
	}
	log.Info("landlock sandbox applied", "landlock_abi", res.ABI, "rules", res.Rules,
		"read", len(p.Read), "write", len(p.Write), "socket_dirs", len(p.Sockets), "missing", len(res.Missing))
	return &p, nil
}

// sandboxHint is said of a reload refused a path outside the sandbox.
const sandboxHint = "sandbox: restart sealproxy to allow new paths"

// outsideSandbox explains an error of a reload that opened a path the
// sandbox p does not allow; other errors are returned as they are.
func outsideSandbox(p *sandbox.Policy, err error) error {
	if p == nil {
		return err
	}
	if path, ok := p.DeniedPath(err); ok {
		return fmt.Errorf("%w (%s is outside the paths allowed at start-up; %s)", err, path, sandboxHint)
	}
	return err
}
