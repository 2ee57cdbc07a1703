package main

import (
	"errors"
	"fmt"
	"log/slog"

	"github.com/sealproxy/sealproxy/cmd/internal/cli"
	"github.com/sealproxy/sealproxy/cmd/internal/sandbox"
)

// servePolicy is what `sealgate serve` opens once serving: the key
// directory, read on every request that finds it changed (rotations,
// new keys) and holding operators.json, read on every operator call; the
// audit log, appended through the descriptor opened at start-up but
// kept writable should it be opened again; and sandbox.System (trust
// store and name resolution for --upstream and --webhook). The TLS
// files, --client-ca and --policy are read once at start-up and need no
// rule.
func servePolicy(dir string, sc *serveConfig) sandbox.Policy {
	p := sandbox.System()
	p.Read = append(p.Read, dir)
	if sc.audit != "" {
		p.Write = append(p.Write, sc.audit)
	}
	p.Clean()
	return p
}

// confine applies --landlock in the sealgate process (process set) and
// logs what it did; in-process tests only have --landlock checked.
func confine(log *slog.Logger, dir string, sc *serveConfig, process bool) error {
	mode, err := sandbox.ParseMode(sc.landlock)
	if err != nil {
		return cli.Usage("--landlock: %v", err)
	}
	if !process {
		return nil
	}
	if mode == sandbox.Off {
		log.Info("landlock sandbox off (--landlock off)")
		return nil
	}
	p := servePolicy(dir, sc)
	res, err := sandbox.Apply(p, mode)
	switch {
	case errors.Is(err, sandbox.ErrUnsupported):
		return cli.WithHint(fmt.Errorf("--landlock required: %w", err), cli.ExitFailure, "use --landlock best-effort to serve unconfined where Landlock cannot be used")
	case err != nil:
		return err
	case !res.Enforced:
		log.Warn("landlock is not available: serving without the file system sandbox", "why", res.Unavailable)
	default:
		log.Info("landlock sandbox applied", "landlock_abi", res.ABI, "rules", res.Rules, "missing", len(res.Missing))
	}
	return nil
}
