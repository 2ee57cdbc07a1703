package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"

	"github.com/sealproxy/sealproxy/cmd/internal/cli"
	"github.com/sealproxy/sealproxy/cmd/internal/sandbox"
)

// processKey marks the context of the sealgate process itself: only it
// confines itself (a sandbox cannot be left; in-process tests call run
// without it).
type processKey struct{}

// asProcess is run for main.
func asProcess(run func(context.Context, []string, io.Reader, io.Writer, io.Writer) error) func(context.Context, []string, io.Reader, io.Writer, io.Writer) error {
	return func(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
		return run(context.WithValue(ctx, processKey{}, true), args, stdin, stdout, stderr)
	}
}

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

// confine applies --landlock in the sealgate process and logs what it
// did.
func confine(ctx context.Context, log *slog.Logger, dir string, sc *serveConfig) error {
	mode, err := sandbox.ParseMode(sc.landlock)
	if err != nil {
		return cli.Usage("--landlock: %v", err)
	}
	if process, _ := ctx.Value(processKey{}).(bool); !process {
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
