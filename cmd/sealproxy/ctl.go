package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"strings"

	"github.com/sealproxy/sealproxy/cmd/internal/cli"
	"github.com/sealproxy/sealproxy/proxy/config"
	"github.com/sealproxy/sealproxy/proxy/control"
	"github.com/sealproxy/sealproxy/vault/keyring"
)

// newControl wires the control API to the key ring (a staged key opens
// as at start-up) and to the reload worker (a change applies as a reload);
// staged runs after each staging: the status line goes back to serving.
func newControl(cfg *config.Config, log *slog.Logger, keys *keyring.Ring, reload func(context.Context) error, staged func()) (*control.Server, error) {
	return control.New(control.Options{
		StateFile: cfg.Resolve(cfg.Admin.StateFile),
		Users:     cfg.Admin.CtlUsers,
		Log:       log.With("component", "ctl"),
		Reload:    reload,
		Stage: func(ctx context.Context, c *config.Config, k *config.Key) (func(), error) {
			defer staged()
			g := keys.Stage()
			if err := g.OpenKeys(ctx, c, k); err != nil {
				g.Discard()
				return nil, err
			}
			if _, err := g.Signer(ctx, c, k); err != nil {
				g.Discard()
				return nil, err
			}
			return g.Discard, nil
		},
	})
}

const ctlUsage = `usage: sealproxy ctl --admin unix:PATH [--json] VERB [ARGS]

verbs:
  keys                                   list keys: source, certificate, listeners, origin
  set-key NAME --cert FILE --source REF  stage a certificate and key (opened through Tang and the gate)
  commit NAME                            swap the staged pair in for new handshakes
  abort NAME                             drop the staged pair
  attach LISTENER KEY                    let LISTENER choose KEY by SNI
  detach LISTENER KEY                    stop LISTENER choosing KEY
  remove-key NAME                        remove a key no listener uses
`

// cmdCtl is `sealproxy ctl`: one call to the control API of a running
// sealproxy, over its unix admin socket.
func cmdCtl(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("ctl", flag.ContinueOnError)
	addr := fs.String("admin", "", "the daemon's [admin] listen, `unix:PATH`")
	asJSON := fs.Bool("json", false, "print the result as JSON")
	cert := fs.String("cert", "", "set-key: certificate chain `FILE` (PEM, leaf first)")
	source := fs.String("source", "", "set-key: key reference `REF` (sealed:, pkcs11:, winstore:, file:)")
	rest, err := cli.Parse(fs, args)
	if err != nil {
		return cli.WithHint(err, cli.ExitUsage, "run 'sealproxy ctl' for its verbs and flags")
	}
	if len(rest) == 0 {
		fmt.Fprint(stderr, ctlUsage)
		return cli.Usage("ctl: no verb given")
	}
	if *addr == "" {
		return cli.WithHint(errors.New("ctl: no admin socket given"), cli.ExitUsage,
			"pass --admin unix:/run/sealproxy/admin.sock, the [admin] listen of the configuration")
	}
	verb, rest := rest[0], rest[1:]
	want, ok := ctlArity[verb]
	if !ok {
		return cli.WithHint(fmt.Errorf("ctl: unknown verb %q", verb), cli.ExitUsage,
			"verbs are "+strings.Join(control.Verbs, ", ")+"; run 'sealproxy ctl' for their arguments")
	}
	if len(rest) != want {
		return cli.WithHint(fmt.Errorf("ctl %s: want %d argument(s), got %d", verb, want, len(rest)), cli.ExitUsage, ctlArgs[verb])
	}
	req := &control.Request{}
	switch verb {
	case "set-key":
		if *cert == "" || *source == "" {
			return cli.WithHint(errors.New("ctl set-key: --cert and --source are both needed"), cli.ExitUsage, ctlArgs[verb])
		}
		// The certificate is this command's argument: relative to its
		// working directory. The source is the daemon's, as in [[key]].
		if req.Cert, err = filepath.Abs(*cert); err != nil {
			return err
		}
		req.Key, req.Source = rest[0], *source
	case "commit", "abort", "remove-key":
		req.Key = rest[0]
	case "attach", "detach":
		req.Listener, req.Key = rest[0], rest[1]
	}
	if verb != "set-key" && (*cert != "" || *source != "") {
		return cli.WithHint(fmt.Errorf("ctl %s: --cert and --source are set-key's", verb), cli.ExitUsage, ctlArgs[verb])
	}
	result, err := control.Call(ctx, *addr, verb, req, func(line string) {
		fmt.Fprintf(stderr, "sealproxy: %s\n", line)
	})
	if err != nil {
		var ce *control.Error
		if errors.As(err, &ce) {
			return cli.WithHint(err, cli.ExitFailure, ce.Hint)
		}
		return cli.WithHint(err, cli.ExitFailure, "is sealproxy running with [admin] listen = \""+*addr+"\"?")
	}
	if *asJSON {
		fmt.Fprintf(stdout, "%s\n", result)
		return nil
	}
	return control.PrintResult(stdout, verb, result)
}

var ctlArity = map[string]int{"keys": 0, "set-key": 1, "commit": 1, "abort": 1, "remove-key": 1, "attach": 2, "detach": 2}

var ctlArgs = map[string]string{
	"commit":     "usage: sealproxy ctl --admin unix:PATH commit NAME",
	"abort":      "usage: sealproxy ctl --admin unix:PATH abort NAME",
	"remove-key": "usage: sealproxy ctl --admin unix:PATH remove-key NAME",
	"attach":     "usage: sealproxy ctl --admin unix:PATH attach LISTENER KEY",
	"detach":     "usage: sealproxy ctl --admin unix:PATH detach LISTENER KEY",
	"keys":       "usage: sealproxy ctl --admin unix:PATH keys",
	"set-key":    "usage: sealproxy ctl --admin unix:PATH set-key NAME --cert FILE --source sealed:/etc/sealproxy/NAME.jwe",
}
