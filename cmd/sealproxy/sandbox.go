package main

import (
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"

	"github.com/sealproxy/sealproxy/cmd/internal/cli"
	"github.com/sealproxy/sealproxy/cmd/internal/sandbox"
	"github.com/sealproxy/sealproxy/proxy/config"
	"github.com/sealproxy/sealproxy/vault/keyref"
)

// sandboxPolicy is what `sealproxy run` may still open once started with
// cfg: the directories of the configuration file and of every file it
// names (directories, so that a file replaced by rename reloads), those
// of unix sockets it listens on, the system files of sandbox.System,
// and what each key's reference needs to be opened again (keyref's
// Needs: for PKCS#11 keys the module's and its libraries' directories
// and SoftHSM's configuration and tokens).
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
		ref, err := keyref.Parse(k.Source)
		if err != nil {
			continue // refused by the vault at start-up already
		}
		files, trees := ref.Needs(cfg.Resolve)
		for _, f := range files {
			readDir(f)
		}
		p.Read = append(p.Read, trees...)
	}
	for _, f := range ticketFiles(cfg) {
		readDir(f)
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
			if !config.IsURL(crl) {
				dirOf(crl)
			}
		}
		dirOf(l.Upstream.CA)
	}
	socket(cfg.Pool.Listen)
	for _, s := range cfg.Pool.Services {
		dirOf(s.TLS.ClientCA)
		for _, crl := range s.TLS.CRL {
			dirOf(crl)
		}
		dirOf(s.CA)
	}
	if cfg.Pool.Listen != "" {
		// A reload resolves the services' user and group names again.
		p.Read = append(p.Read, "/etc/passwd", "/etc/group")
	}
	for _, path := range cfg.Sandbox.Read {
		p.Read = append(p.Read, cfg.Resolve(path))
	}
	for _, path := range cfg.Sandbox.Write {
		p.Write = append(p.Write, cfg.Resolve(path))
	}
	if cfg.Revocation.CacheDir != "" { // CRLs fetched from URLs are kept there
		p.Write = append(p.Write, cfg.Resolve(cfg.Revocation.CacheDir))
	}
	if cfg.Admin.StateFile != "" {
		// sealproxy ctl replaces it: a temporary file renamed over it.
		p.Write = append(p.Write, filepath.Dir(cfg.Resolve(cfg.Admin.StateFile)))
	}
	acmeSandbox(cfg, &p)
	p.Clean()
	return p
}

// confine applies the [sandbox] of cfg and logs what it did; reexec
// keeps the executable and its libraries readable (and so executable),
// for an upgrade's successor, and pidFile's directory writable (an
// upgrade rewrites it). It returns the policy applied, nil if none was.
func confine(log *slog.Logger, cfg *config.Config, reexec bool, pidFile string) (*sandbox.Policy, error) {
	mode, err := sandbox.ParseMode(cfg.Sandbox.Landlock)
	if err != nil {
		return nil, err
	}
	if mode == sandbox.Off {
		log.Info("landlock sandbox off ([sandbox] landlock = \"off\")")
		return nil, nil
	}
	p := sandboxPolicy(cfg)
	if reexec {
		p.Read = append(p.Read, sandbox.Reexec()...)
		if pidFile != "" {
			p.Write = append(p.Write, filepath.Dir(pidFile))
		}
		p.Clean()
	}
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
