package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/sealproxy/sealproxy/cmd/internal/cli"
	"github.com/sealproxy/sealproxy/unlock/gate"
	"github.com/sealproxy/sealproxy/unlock/tang"
)

// maxTokenFile bounds a token file: a token is 47 characters.
const maxTokenFile = 4 << 10

// operate runs the operator commands against a gate: pending, approve and
// deny.
func operate(ctx context.Context, cmd string, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("seal "+cmd, flag.ContinueOnError)
	gateURL := fs.String("gate", "", "the gate's `URL`")
	tokenFile := fs.String("token-file", "", "read the operator token from `FILE` (default: $SEALGATE_TOKEN)")
	timeout := fs.Duration("timeout", 30*time.Second, "give up after this `duration`")
	var tf tlsFlags
	fs.StringVar(&tf.ca, "cacert", "", "trust the gate's certificate from this PEM CA `file` (https gates)")
	fs.StringVar(&tf.cert, "cert", "", "authenticate with this PEM client certificate `file` instead of a token")
	fs.StringVar(&tf.key, "key", "", "the PEM private key `file` of --cert")
	var asJSON bool
	var id string
	if cmd == "pending" {
		fs.BoolVar(&asJSON, "json", false, "print JSON")
	} else {
		fs.StringVar(&id, "id", "", "decide the request with this `ID` (seal pending lists it) instead of a code: to deny, or to approve a request whose host shows no code")
	}
	pos, err := cli.Parse(fs, args)
	if err != nil {
		return err
	}
	wantArgs, example := 1, "seal "+cmd+" ABCD-EFGH --gate http://gate:7500"
	if cmd == "pending" {
		wantArgs, example = 0, "seal pending --gate http://gate:7500"
	}
	if id != "" {
		wantArgs = 0
	}
	if len(pos) != wantArgs {
		if cmd == "pending" {
			return cli.WithHint(fmt.Errorf("pending takes no arguments, got %q", pos), cli.ExitUsage, example)
		}
		if id != "" {
			return cli.WithHint(fmt.Errorf("%s takes a code or --id, not both", cmd), cli.ExitUsage, example)
		}
		return cli.WithHint(fmt.Errorf("%s takes the code of one request, as the host shows it", cmd), cli.ExitUsage, example)
	}
	if id != "" {
		if err := gate.CheckRequestID(id); err != nil {
			return cli.WithHint(err, cli.ExitUsage, "copy the ID that seal pending lists")
		}
	}
	if *gateURL == "" {
		return cli.WithHint(fmt.Errorf("%s needs --gate", cmd), cli.ExitUsage, example)
	}
	if _, err := tang.BaseURL(*gateURL); err != nil {
		return cli.WithHint(err, cli.ExitUsage, example)
	}
	hc, err := tf.client(*timeout)
	if err != nil {
		return err
	}
	token := ""
	if tf.cert == "" || *tokenFile != "" {
		if token, err = readToken(*tokenFile); err != nil {
			return err
		}
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	c := &gate.Client{URL: *gateURL, Token: token, HTTP: hc}
	switch cmd {
	case "pending":
		reqs, err := c.Pending(ctx)
		if err != nil {
			return explainGate(err, *gateURL)
		}
		if asJSON {
			enc := json.NewEncoder(stdout)
			enc.SetIndent("", "  ")
			return enc.Encode(reqs)
		}
		if len(reqs) == 0 {
			fmt.Fprintln(stdout, "no pending requests")
			return nil
		}
		// No code: the operator reads it on the host and types it.
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "ID\tHOST\tSOURCE\tKEYS\tAGE\tEXPIRES IN\tCODE")
		for _, r := range reqs {
			host := r.Host
			if host == "" {
				host = "-"
			}
			keys := fmt.Sprint(r.Keys)
			if !r.Complete {
				keys = fmt.Sprintf("%d/%d (incomplete)", r.Arrived, r.Keys)
			}
			code := "on the host"
			switch {
			case !r.Verified:
				code = "none: the host cannot show one (approve --id)"
			case !r.Complete:
				code = "not yet"
			}
			p := gate.Printable
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", p(r.ID), p(host), p(r.Source), keys,
				time.Since(r.Created).Round(time.Second), max(0, time.Until(r.Expires)).Round(time.Second), code)
		}
		return tw.Flush()
	case "approve", "deny":
		var d *gate.Decision
		what := ""
		if id != "" {
			if cmd == "approve" {
				d, err = c.ApproveID(ctx, id)
			} else {
				d, err = c.DenyID(ctx, id)
			}
			what = "request " + id
		} else {
			code, cerr := tang.NormalizeCode(pos[0])
			if cerr != nil {
				return cli.WithHint(cerr, cli.ExitUsage, "type the code the host shows, e.g. "+example)
			}
			if cmd == "approve" {
				d, err = c.Approve(ctx, code)
			} else {
				d, err = c.Deny(ctx, code)
			}
			what = code
		}
		if err != nil {
			return explainGate(err, *gateURL)
		}
		what = gate.Printable(what)
		if d.Status == gate.StatePending {
			fmt.Fprintf(stdout, "%s: approval %d of %d by %s; %d more operators must approve\n", what, d.Approvals, d.Needed, gate.Printable(d.Operator), d.Needed-d.Approvals)
			return nil
		}
		fmt.Fprintf(stdout, "%s %s by %s\n", what, gate.Printable(string(d.Status)), gate.Printable(d.Operator))
		return nil
	}
	return nil
}

// tlsFlags are the operator commands' TLS choices.
type tlsFlags struct{ ca, cert, key string }

// client returns an HTTP client for them; nil for the default.
func (f *tlsFlags) client(timeout time.Duration) (*http.Client, error) {
	if f.ca == "" && f.cert == "" && f.key == "" {
		return nil, nil
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if f.ca != "" {
		data, err := os.ReadFile(f.ca)
		if err != nil {
			return nil, cli.WithHint(err, cli.ExitUsage, "--cacert is a PEM file of CA certificates")
		}
		cfg.RootCAs = x509.NewCertPool()
		if !cfg.RootCAs.AppendCertsFromPEM(data) {
			return nil, cli.Usage("--cacert %s holds no PEM certificate", f.ca)
		}
	}
	if f.cert != "" || f.key != "" {
		if f.cert == "" || f.key == "" {
			return nil, cli.Usage("--cert and --key go together")
		}
		cert, err := tls.LoadX509KeyPair(f.cert, f.key)
		if err != nil {
			return nil, cli.WithHint(fmt.Errorf("loading the client certificate: %w", err), cli.ExitUsage, "--cert is a PEM chain, --key its PEM key")
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return &http.Client{Timeout: timeout, Transport: &http.Transport{TLSClientConfig: cfg, Proxy: http.ProxyFromEnvironment}}, nil
}

// readToken reads the operator token from file, or $SEALGATE_TOKEN.
func readToken(file string) (string, error) {
	hint := "pass the token that sealgate operator add printed with --token-file FILE or SEALGATE_TOKEN"
	if file == "" {
		if t := strings.TrimSpace(os.Getenv("SEALGATE_TOKEN")); t != "" {
			return t, nil
		}
		return "", cli.WithHint(errors.New("no operator token"), cli.ExitUsage, hint)
	}
	f, err := os.Open(file)
	if err != nil {
		return "", cli.WithHint(fmt.Errorf("reading the token: %w", err), cli.ExitUsage, hint)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxTokenFile))
	if err != nil {
		return "", fmt.Errorf("reading the token: %w", err)
	}
	t := strings.TrimSpace(string(data))
	if t == "" {
		return "", cli.WithHint(fmt.Errorf("token file %s is empty", file), cli.ExitUsage, hint)
	}
	return t, nil
}

// explainGate attaches the hint and exit code that fit an operator API
// error.
func explainGate(err error, url string) error {
	switch {
	case errors.Is(err, gate.ErrUnauthorized):
		return cli.WithHint(err, cli.ExitUsage, "check the token: sealgate operator add prints it once; a removed operator's token no longer works")
	case errors.Is(err, gate.ErrUnknownCode):
		return cli.WithHint(err, cli.ExitFailure, "seal pending --gate "+url+" lists what waits, without codes: the code is only on the host that asks")
	case errors.Is(err, gate.ErrUnknownRequest):
		return cli.WithHint(err, cli.ExitFailure, "list what waits with: seal pending --gate "+url)
	case errors.Is(err, gate.ErrCodeRequired):
		return cli.WithHint(err, cli.ExitFailure, "approve with the code the host shows (seal approve CODE), or deny with seal deny --id ID")
	case errors.Is(err, gate.ErrLocked):
		return cli.WithHint(err, cli.ExitFailure, "the gate locked this operator's approvals after five wrong codes; if they were not yours, the token is in other hands: check the audit log and replace it")
	case errors.Is(err, gate.ErrNotPending):
		return cli.WithHint(err, cli.ExitFailure, "list what waits with: seal pending --gate "+url)
	case errors.Is(err, gate.ErrGateUnreachable):
		return cli.WithHint(err, cli.ExitFailure, "check that the gate is running and reachable from this host")
	}
	return err
}
