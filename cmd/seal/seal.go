package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"github.com/awnumar/memguard"

	"github.com/sealproxy/sealproxy/cmd/internal/cli"
	"github.com/sealproxy/sealproxy/internal/atomicfile"
	"github.com/sealproxy/sealproxy/unlock"
	"github.com/sealproxy/sealproxy/unlock/tang"
)

const usage = `usage: seal COMMAND [ARGS]

Seal secrets into Clevis-compatible JWEs and open them again.

  seal encrypt tang CONFIG [-y] [-i IN] [-o OUT]   seal to a Tang server
  seal encrypt sss CONFIG [-y] [-i IN] [-o OUT]    seal to t of n pins
  seal decrypt [-i IN] [-o OUT]                    recover the secret
  seal inspect [-i IN] [--json]                    show a JWE's pins, offline
  seal ticket-secret PIN CONFIG [-y] [-o OUT]      a new [tickets] secret, sealed

Operators of a gate (sealgate serve --approval required):

  seal pending --gate URL [--json]                 list the requests waiting (no codes)
  seal approve CODE --gate URL                     approve the request whose host shows CODE
  seal approve --id ID --gate URL                  approve a request whose host shows no code
  seal deny CODE|--id ID --gate URL                deny a request

The gate never shows codes: read the code on the host's console or
journal and type it (number matching). Five wrong codes within 10 minutes
lock the operator's approvals for 10 minutes.

The operator token is read from --token-file FILE, or else from the
SEALGATE_TOKEN environment variable; at an https gate that accepts them,
--cert FILE --key FILE authenticate with a client certificate instead
(--cacert FILE trusts the gate's CA).

CONFIG is the JSON that clevis takes, for example
  '{"url":"http://tang:7500","thp":"THUMBPRINT"}'
  '{"t":2,"pins":{"tang":[{"url":...,"thp":...},{"url":...,"thp":...}]}}'

Input is read from standard input and output written to standard output
unless -i or -o name files. While a gate holds a recovery, decrypt prints
the code the operator must type to approve it. Exit codes: 0 ok, 1 failure, 2 usage or
configuration error, 3 Tang server not trusted, 4 denied by an operator.
`

// maxPlaintext bounds what encrypt reads: sealed secrets are keys, not files.
const maxPlaintext = 16 << 20

func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return cli.Usage("no command given")
	}
	switch cmd, rest := args[0], args[1:]; cmd {
	case "encrypt":
		return encrypt(ctx, rest, stdin, stdout, stderr)
	case "decrypt":
		return decrypt(ctx, rest, stdin, stdout, stderr)
	case "inspect":
		return inspect(rest, stdin, stdout)
	case "ticket-secret":
		return ticketSecret(ctx, rest, stdout)
	case "pending", "approve", "deny":
		return operate(ctx, cmd, rest, stdout)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	default:
		return cli.WithHint(fmt.Errorf("unknown command %q", cmd), cli.ExitUsage,
			"commands are encrypt, decrypt, inspect, ticket-secret, pending, approve and deny; run 'seal help'")
	}
}

type ioFlags struct {
	in, out string
	timeout time.Duration
}

func (f *ioFlags) register(fs *flag.FlagSet, withOut bool) {
	fs.StringVar(&f.in, "i", "", "read input from `FILE` instead of standard input")
	if withOut {
		fs.StringVar(&f.out, "o", "", "write output to `FILE` instead of standard output")
	}
	fs.DurationVar(&f.timeout, "timeout", 2*time.Minute, "give up after this `duration`")
}

func (f *ioFlags) input(stdin io.Reader) (io.ReadCloser, error) {
	if f.in == "" || f.in == "-" {
		return io.NopCloser(stdin), nil
	}
	file, err := os.Open(f.in)
	if err != nil {
		return nil, cli.WithHint(err, cli.ExitUsage, "")
	}
	return file, nil
}

// output writes data to -o FILE (created 0600, never over a symlink's
// target silently) or stdout. It is called only once the result is known
// good, so a failure leaves nothing behind.
func (f *ioFlags) output(stdout io.Writer, data []byte) error {
	if f.out == "" || f.out == "-" {
		_, err := stdout.Write(data)
		return err
	}
	return atomicfile.Write(f.out, data, 0o600)
}

func encrypt(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("seal encrypt", flag.ContinueOnError)
	var f ioFlags
	f.register(fs, true)
	var tofu bool
	fs.BoolVar(&tofu, "y", false, "trust a Tang advertisement without a pinned thumbprint")
	fs.BoolVar(&tofu, "trust-on-first-use", false, "same as -y")
	pos, err := cli.Parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 2 {
		return cli.WithHint(errors.New("encrypt takes a pin and its configuration"), cli.ExitUsage,
			`seal encrypt tang '{"url":"http://tang:7500","thp":"..."}' < secret > secret.jwe`)
	}
	pin, config := pos[0], pos[1]
	in, err := f.input(stdin)
	if err != nil {
		return err
	}
	defer in.Close()
	plain, err := memguard.NewBufferFromEntireReader(io.LimitReader(in, maxPlaintext+1))
	if err != nil {
		return fmt.Errorf("reading the secret: %w", err)
	}
	defer plain.Destroy()
	if plain.Size() > maxPlaintext {
		return cli.Usage("the secret is larger than %d bytes", maxPlaintext)
	}
	ctx, cancel := context.WithTimeout(ctx, f.timeout)
	defer cancel()
	jwe, err := unlock.Encrypt(ctx, pin, []byte(config), plain.Bytes(), &unlock.Options{TrustOnFirstUse: tofu})
	if err != nil {
		return explain(err)
	}
	return f.output(stdout, jwe)
}

func decrypt(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("seal decrypt", flag.ContinueOnError)
	var f ioFlags
	f.register(fs, true)
	pos, err := cli.Parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 0 {
		return cli.WithHint(fmt.Errorf("decrypt takes no arguments, got %q", pos), cli.ExitUsage, "name the input with -i: seal decrypt -i secret.jwe > secret")
	}
	data, err := readJWE(&f, stdin)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, f.timeout)
	defer cancel()
	plain, err := unlock.Decrypt(ctx, data, decryptOptions(stderr))
	if err != nil {
		if errors.Is(err, unlock.ErrUnknownPin) && !errors.Is(err, unlock.ErrNotEnoughShares) {
			// Not a configuration mistake (exit 2) as in encrypt: the JWE
			// needs a pin this program does not have.
			return cli.WithHint(err, cli.ExitFailure, "open it with clevis decrypt on a host that has that pin")
		}
		return explain(err)
	}
	defer plain.Destroy()
	return f.output(stdout, plain.Bytes())
}

func inspect(args []string, stdin io.Reader, stdout io.Writer) error {
	fs := flag.NewFlagSet("seal inspect", flag.ContinueOnError)
	var f ioFlags
	f.register(fs, false)
	var asJSON bool
	fs.BoolVar(&asJSON, "json", false, "print JSON")
	pos, err := cli.Parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) == 1 && f.in == "" {
		f.in = pos[0]
	} else if len(pos) != 0 {
		return cli.Usage("inspect takes at most one file")
	}
	data, err := readJWE(&f, stdin)
	if err != nil {
		return err
	}
	node, err := unlock.Inspect(data)
	if err != nil {
		return explain(err)
	}
	if asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(node)
	}
	node.Format(stdout)
	return nil
}

func readJWE(f *ioFlags, stdin io.Reader) ([]byte, error) {
	in, err := f.input(stdin)
	if err != nil {
		return nil, err
	}
	defer in.Close()
	data, err := io.ReadAll(io.LimitReader(in, unlock.MaxJWE+1))
	if err != nil {
		return nil, fmt.Errorf("reading the JWE: %w", err)
	}
	return data, nil
}

// decryptOptions makes one decrypt one approval session at each gate,
// and prints the code of each gate that holds it. The client confirmed
// the code (a gate showing another one stops the recovery); the URL comes
// from the JWE: escaped.
func decryptOptions(stderr io.Writer) *unlock.Options {
	host, err := os.Hostname()
	if err != nil || len(host) > tang.MaxHostLabel {
		host = ""
	}
	var mu sync.Mutex
	return &unlock.Options{
		Startup: unlock.NewStartup(host),
		OnPending: func(p tang.Pending) {
			mu.Lock()
			defer mu.Unlock()
			fmt.Fprintf(stderr, "seal: waiting for approval of code %s at %s\n", tang.Printable(p.Code), tang.Printable(p.URL))
		},
	}
}

// explain attaches the hint and exit code that fit an unlock error.
func explain(err error) error {
	var untrusted *unlock.UntrustedError
	switch {
	case errors.As(err, &untrusted):
		thp := "THUMBPRINT"
		if len(untrusted.Thumbprints) > 0 {
			thp = untrusted.Thumbprints[0]
		}
		return cli.WithHint(err, cli.ExitTrust, fmt.Sprintf(
			"compare with the server's own list (sealgate thp --dir DIR, or tang-show-keys PORT on it), then add \"thp\":%q to the config;\nor pass -y to trust on first use", thp))
	case errors.Is(err, tang.ErrUntrusted):
		return cli.WithHint(err, cli.ExitTrust,
			"the server's signing keys are not the ones you pinned: it was re-keyed, or something is in the middle;\ncheck the thumbprint on the server itself before pinning a new one")
	case errors.Is(err, tang.ErrBadSignature):
		return cli.WithHint(err, cli.ExitTrust, "the advertisement was altered on its way, or the server is not a Tang server")
	case errors.Is(err, unlock.ErrJSONSerialization):
		return cli.WithHint(err, cli.ExitFailure, "convert it to the compact form with: jose jwe fmt -i FILE -c")
	case errors.Is(err, tang.ErrDenied):
		return cli.WithHint(err, cli.ExitDenied, "ask the operator why; a new attempt shows a new code to approve")
	case errors.Is(err, tang.ErrCodeMismatch):
		return cli.WithHint(err, cli.ExitFailure, "something between this host and the gate changed the request: tell the operator not to approve it;\nreach the gate over a path you trust (https), then try again")
	case errors.Is(err, tang.ErrGateFull):
		return cli.WithHint(err, cli.ExitFailure, "the gate is refusing new requests because too many are pending (flooded, or many hosts at once);\nask its operator to clear them (seal pending), then try again")
	case errors.Is(err, tang.ErrSessionLost):
		return cli.WithHint(err, cli.ExitFailure, "the gate restarted, or the request expired before a decision; run seal decrypt again (it shows a new code)")
	case errors.Is(err, tang.ErrNotApproved):
		return cli.WithHint(err, cli.ExitFailure, "an operator approves it with: seal approve CODE --gate URL; wait longer with --timeout")
	case errors.Is(err, unlock.ErrNotEnoughShares):
		return cli.WithHint(err, cli.ExitFailure, "bring enough of the servers named above back, then try again")
	case errors.Is(err, tang.ErrUnknownKey):
		return cli.WithHint(err, cli.ExitFailure, "restore the server's key (rotated keys are kept as .NAME.jwk files), or seal the secret again")
	case errors.Is(err, tang.ErrUnreachable):
		return cli.WithHint(err, cli.ExitFailure, "check that the Tang server is running and reachable from this host")
	case errors.Is(err, unlock.ErrTampered):
		return cli.WithHint(err, cli.ExitFailure, "restore the JWE from a good copy; it cannot be opened as it is")
	case errors.Is(err, unlock.ErrMalformed):
		return cli.WithHint(err, cli.ExitFailure, "the input must be a whole compact JWE as written by seal or clevis encrypt")
	case errors.Is(err, unlock.ErrUnknownPin), errors.Is(err, unlock.ErrBadConfig):
		return cli.WithHint(err, cli.ExitUsage, `pins are tang ('{"url":...,"thp":...}') and sss ('{"t":N,"pins":{"tang":[...]}}')`)
	}
	return err
}
