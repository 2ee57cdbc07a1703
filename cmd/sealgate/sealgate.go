package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/BurntSushi/toml"

	"github.com/sealproxy/sealproxy/cmd/internal/cli"
	"github.com/sealproxy/sealproxy/internal/secmem"
	"github.com/sealproxy/sealproxy/unlock/gate"
	"github.com/sealproxy/sealproxy/unlock/tang"
)

const usage = `usage: sealgate COMMAND --dir DIR [FLAGS]

A Tang server whose key directories are compatible with tangd's, and that
can hold every recovery until an operator approves it.

  sealgate keygen --dir DIR                      create a signing and an exchange key
  sealgate rotate --dir DIR                      retire the active keys, create new ones
  sealgate thp --dir DIR                         print the signing-key thumbprints
  sealgate serve --dir DIR --listen ADDR         serve /adv and /rec
      [--approval required] [--require-code] [--audit FILE] [--hold DURATION]
      [--webhook URL [--webhook-secret-file FILE]] [--policy FILE]
      [--approvers N] [--upstream URL]
      [--tls-cert FILE --tls-key FILE [--client-ca FILE]] [--config FILE]
      [--landlock best-effort|off|required] [--max-connections N]
  sealgate operator add NAME --dir DIR           add an operator; prints its token once
      [--role metrics]                           a credential that reads /gate/metrics only
  sealgate operator remove NAME --dir DIR        remove an operator
  sealgate operator list --dir DIR               list the operators

Rotated keys are kept as dot-files: they still recover old bindings but are
no longer advertised. A running server follows rotations without a restart.

With --approval required, each recovery waits until an operator types the
code its host shows (seal approve CODE --gate URL, or the page at
URL/gate/); the gate never shows codes. A host that shows none (stock
clevis) is approved by request id (seal approve --id ID), unless
--require-code;
decisions are appended to the --audit file. Operators are kept in
DIR/operators.json as token hashes.
`

func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return cli.Usage("no command given")
	}
	cmd, rest := args[0], args[1:]
	if cmd == "help" || cmd == "-h" || cmd == "--help" {
		fmt.Fprint(stdout, usage)
		return nil
	}
	fs := flag.NewFlagSet("sealgate "+cmd, flag.ContinueOnError)
	dir := fs.String("dir", "", "the key `directory`")
	listen := fs.String("listen", "127.0.0.1:7500", "`address` to serve on (serve)")
	var sc serveConfig
	fs.StringVar(&sc.approval, "approval", "none", "`none` (a plain Tang server) or required (serve)")
	fs.StringVar(&sc.audit, "audit", "", "append decisions to this `file` as JSON lines (serve)")
	fs.DurationVar(&sc.hold, "hold", gate.DefaultHold, "hold a recovery this `long` before answering pending (serve)")
	fs.StringVar(&sc.webhook, "webhook", "", "POST each request waiting for a decision to this `URL` (serve)")
	fs.StringVar(&sc.webhookSecret, "webhook-secret-file", "", "sign webhook deliveries with HMAC-SHA256 under the secret in this `file` (serve)")
	fs.StringVar(&sc.policy, "policy", "", "auto-approve and deny rules from this TOML `file` (serve)")
	fs.IntVar(&sc.approvers, "approvers", 1, "distinct operators who must approve each request (serve)")
	fs.BoolVar(&sc.requireCode, "require-code", false, "approve only by the code the host shows: requests from hosts that show none (stock clevis) can only be denied (serve)")
	fs.StringVar(&sc.tlsCert, "tls-cert", "", "serve TLS with this PEM certificate chain `file` (serve)")
	fs.StringVar(&sc.tlsKey, "tls-key", "", "the PEM private key `file` of --tls-cert (serve)")
	fs.StringVar(&sc.clientCA, "client-ca", "", "operators may present client certificates from this PEM CA `file`, named by a listed operator (serve)")
	fs.StringVar(&sc.upstream, "upstream", "", "stand in front of the Tang server at this `URL` instead of serving DIR's keys (serve)")
	fs.IntVar(&sc.maxConns, "max-connections", DefaultMaxConnections, "refuse connections beyond this `many` open at once (serve)")
	fs.StringVar(&sc.landlock, "landlock", "best-effort", "confine serve once listening: `best-effort`, off or required (serve)")
	role := fs.String("role", string(gate.RoleOperator), "operator add: `operator` (decides) or metrics (reads /gate/metrics only)")
	config := fs.String("config", "", "read settings from this TOML `file`, keys named as the flags; flags override it (serve)")
	pos, err := cli.Parse(fs, rest)
	if err != nil {
		return err
	}
	if *config != "" {
		if err := applyConfig(fs, *config); err != nil {
			return err
		}
	}
	if cmd == "operator" {
		if *dir == "" {
			return cli.WithHint(errors.New("operator needs --dir"), cli.ExitUsage, "sealgate operator add alice --dir /var/db/tang")
		}
		return operator(pos, *dir, gate.Role(*role), stdout)
	}
	if len(pos) != 0 {
		return cli.Usage("%s takes no arguments, got %q", cmd, pos)
	}
	if *dir == "" && cmd != "" {
		switch cmd {
		case "keygen", "rotate", "thp", "serve":
			return cli.WithHint(errors.New(cmd+" needs --dir"), cli.ExitUsage, "sealgate "+cmd+" --dir /var/db/tang")
		}
	}
	switch cmd {
	case "keygen":
		thp, err := tang.Keygen(*dir)
		if err != nil {
			return err
		}
		fmt.Fprintln(stdout, thp)
		return nil
	case "rotate":
		thp, err := tang.Rotate(*dir)
		if err != nil {
			return err
		}
		fmt.Fprintln(stdout, thp)
		return nil
	case "thp":
		keys, err := loadKeys(*dir)
		if err != nil {
			return err
		}
		for _, thp := range keys.Thumbprints() {
			fmt.Fprintln(stdout, thp)
		}
		return nil
	case "serve":
		return serve(ctx, *dir, *listen, &sc, stderr)
	default:
		return cli.WithHint(fmt.Errorf("unknown command %q", cmd), cli.ExitUsage, "commands are keygen, rotate, thp, serve and operator; run 'sealgate help'")
	}
}

func loadKeys(dir string) (*tang.Keys, error) {
	keys, err := tang.LoadKeys(dir)
	if err != nil {
		return nil, keyDirError(dir, err)
	}
	return keys, nil
}

// keyDirError adds the hint that fixes a key directory that cannot be
// loaded.
func keyDirError(dir string, err error) error {
	var bad *tang.KeyFileError
	switch {
	case errors.Is(err, fs.ErrNotExist), errors.Is(err, tang.ErrNoKeys):
		return cli.WithHint(err, cli.ExitUsage, "create keys first: sealgate keygen --dir "+dir)
	case errors.As(err, &bad):
		return cli.WithHint(err, cli.ExitUsage, "move "+bad.Path+" out of the directory, or restore it from a backup")
	case errors.Is(err, secmem.ErrMemlock):
		return cli.WithHint(err, cli.ExitUsage, "the keys are held in locked memory: raise the limit as the message says")
	}
	return err
}

// applyConfig sets the flags a TOML file names (dir = "...", listen =
// "...", tls-cert = "...", hold = "25s", approvers = 2, ...), except those
// given on the command line, which win.
func applyConfig(fs *flag.FlagSet, path string) error {
	var values map[string]any
	md, err := toml.DecodeFile(path, &values)
	if err != nil {
		return cli.WithHint(fmt.Errorf("config %s: %w", path, err), cli.ExitUsage, "keys are the serve flags' names: dir = \"/var/db/tang\", approval = \"required\", ...")
	}
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	for _, key := range md.Keys() {
		name := key.String()
		f := fs.Lookup(name)
		if f == nil || name == "config" {
			return cli.WithHint(fmt.Errorf("config %s: unknown key %q", path, name), cli.ExitUsage, "keys are the serve flags' names; see sealgate help")
		}
		if given[name] {
			continue
		}
		v := values[name]
		switch v.(type) {
		case string, int64, bool:
		default:
			return cli.Usage("config %s: %s must be a string, number or boolean", path, name)
		}
		if err := fs.Set(name, fmt.Sprint(v)); err != nil {
			return cli.Usage("config %s: %s: %v", path, name, err)
		}
	}
	return nil
}

// tls returns the TLS configuration of --tls-cert, --tls-key and
// --client-ca, or nil to serve plain HTTP.
func (sc *serveConfig) tls() (*tls.Config, error) {
	if sc.tlsCert == "" && sc.tlsKey == "" {
		if sc.clientCA != "" {
			return nil, cli.Usage("--client-ca needs --tls-cert and --tls-key")
		}
		return nil, nil
	}
	if sc.tlsCert == "" || sc.tlsKey == "" {
		return nil, cli.Usage("--tls-cert and --tls-key go together")
	}
	cert, err := tls.LoadX509KeyPair(sc.tlsCert, sc.tlsKey)
	if err != nil {
		return nil, cli.WithHint(fmt.Errorf("loading the TLS certificate: %w", err), cli.ExitUsage, "--tls-cert is a PEM chain, --tls-key its PEM key")
	}
	cfg := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	if sc.clientCA != "" {
		data, err := os.ReadFile(sc.clientCA)
		if err != nil {
			return nil, cli.WithHint(err, cli.ExitUsage, "--client-ca is a PEM file of CA certificates")
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(data) {
			return nil, cli.Usage("--client-ca %s holds no PEM certificate", sc.clientCA)
		}
		// Hosts present no certificate; operators may.
		cfg.ClientAuth, cfg.ClientCAs = tls.VerifyClientCertIfGiven, pool
	}
	return cfg, nil
}

// serveConfig holds serve's approval flags.
type serveConfig struct {
	approval string
	audit    string
	hold     time.Duration
	webhook  string
	// webhookSecret is the path of the webhook's signing secret.
	webhookSecret string
	policy        string
	approvers     int
	// requireCode refuses approvals by request id (gate.Config.RequireCode).
	requireCode bool
	upstream    string
	tlsCert     string
	tlsKey      string
	clientCA    string
	landlock    string
	maxConns    int
}

// minWebhookSecret is the shortest webhook secret accepted, in bytes.
const minWebhookSecret = 32

// readWebhookSecret reads the webhook's HMAC key: the file's bytes
// without trailing line ends. The error never quotes the file.
func readWebhookSecret(path string) ([]byte, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, cli.WithHint(fmt.Errorf("--webhook-secret-file: %w", err), cli.ExitUsage, "make one with: head -c 32 /dev/urandom | base64 > "+path)
	}
	secret := bytes.TrimRight(data, "\r\n")
	if len(secret) < minWebhookSecret {
		return nil, cli.WithHint(fmt.Errorf("--webhook-secret-file %s: the secret is %d bytes, fewer than %d", path, len(secret), minWebhookSecret), cli.ExitUsage,
			"make one with: head -c 32 /dev/urandom | base64 > "+path)
	}
	return secret, nil
}

func operator(pos []string, dir string, role gate.Role, stdout io.Writer) error {
	ops := gate.OpenOperators(filepath.Join(dir, gate.OperatorsFile))
	hint := "sealgate operator add NAME --dir DIR | operator remove NAME --dir DIR | operator list --dir DIR"
	if len(pos) == 0 {
		return cli.WithHint(errors.New("operator needs add, remove or list"), cli.ExitUsage, hint)
	}
	if role != gate.RoleOperator && pos[0] != "add" {
		return cli.WithHint(errors.New("--role goes with operator add"), cli.ExitUsage, "sealgate operator add prom --role metrics --dir "+dir)
	}
	switch sub, args := pos[0], pos[1:]; {
	case sub == "add" && len(args) == 1:
		if _, err := os.Stat(dir); err != nil {
			return cli.WithHint(err, cli.ExitUsage, "create keys first: sealgate keygen --dir "+dir)
		}
		token, err := ops.AddRole(args[0], role)
		switch {
		case errors.Is(err, gate.ErrBadRole):
			return cli.WithHint(fmt.Errorf("--role: %w", err), cli.ExitUsage, "operator decides; metrics only reads /gate/metrics (for Prometheus)")
		case errors.Is(err, gate.ErrBadOperatorName):
			return cli.WithHint(err, cli.ExitUsage, "for example: sealgate operator add alice --dir "+dir)
		case errors.Is(err, gate.ErrOperatorExists):
			return cli.WithHint(err, cli.ExitUsage, "to give "+args[0]+" a new token: sealgate operator remove "+args[0]+" --dir "+dir+", then add again")
		case err != nil:
			return err
		}
		fmt.Fprintln(stdout, token)
		return nil
	case sub == "remove" && len(args) == 1:
		err := ops.Remove(args[0])
		if errors.Is(err, gate.ErrNoOperator) {
			return cli.WithHint(err, cli.ExitUsage, "list them with: sealgate operator list --dir "+dir)
		}
		return err
	case sub == "list" && len(args) == 0:
		names, err := ops.Names()
		if err != nil {
			return err
		}
		roles, err := ops.Roles()
		if err != nil {
			return err
		}
		for _, n := range names {
			switch roles[n] {
			case gate.RoleOperator:
				fmt.Fprintln(stdout, n)
			case "":
				fmt.Fprintln(stdout, n, "(unknown role: may do nothing)")
			default:
				fmt.Fprintf(stdout, "%s (%s)\n", n, roles[n])
			}
		}
		return nil
	}
	return cli.WithHint(fmt.Errorf("operator: unexpected arguments %q", pos), cli.ExitUsage, hint)
}

func serve(ctx context.Context, dir, listen string, sc *serveConfig, stderr io.Writer) error {
	if sc.approval != "none" && sc.approval != "required" {
		return cli.Usage("--approval is none or required, not %q", sc.approval)
	}
	if sc.maxConns <= 0 {
		return cli.Usage("--max-connections must be positive")
	}
	if sc.hold <= 0 {
		return cli.Usage("--hold must be positive")
	}
	if sc.upstream != "" {
		if sc.approval != "required" {
			return cli.Usage("--upstream needs --approval required")
		}
		if _, err := tang.BaseURL(sc.upstream); err != nil {
			return cli.Usage("--upstream: %v", err)
		}
		if _, err := os.Stat(dir); err != nil {
			return cli.WithHint(err, cli.ExitUsage, "--dir holds operators.json, even in front of an upstream")
		}
	}
	// Before any key is read: no core dumps, and no ptrace or
	// /proc/PID/mem for other processes of this user (in-process tests
	// stay dumpable).
	if process, _ := ctx.Value(processKey{}).(bool); process {
		if err := secmem.NoDumps(true); err != nil {
			return err
		}
	}
	var keys *tang.KeyDir
	if sc.upstream == "" {
		var err error
		if keys, err = tang.OpenKeyDir(dir); err != nil {
			return keyDirError(dir, err)
		}
	}
	tlsConfig, err := sc.tls()
	if err != nil {
		return err
	}
	certOperators := tlsConfig != nil && tlsConfig.ClientCAs != nil
	if certOperators && sc.approval != "required" {
		return cli.Usage("--client-ca needs --approval required")
	}
	log := slog.New(slog.NewTextHandler(stderr, nil))
	var handler http.Handler
	if keys != nil {
		handler = tang.NewServer(keys, log)
	}
	writeTimeout := 30 * time.Second
	if sc.approval == "required" {
		if sc.approvers < 1 {
			return cli.Usage("--approvers must be at least 1")
		}
		cfg := gate.Config{
			Upstream: sc.upstream, Log: log, Hold: sc.hold, Approvers: sc.approvers, CertOperators: certOperators, RequireCode: sc.requireCode,
			Operators: gate.OpenOperators(filepath.Join(dir, gate.OperatorsFile)),
		}
		if roles, err := cfg.Operators.Roles(); err != nil {
			return cli.WithHint(err, cli.ExitUsage, "fix or remove "+cfg.Operators.Path())
		} else if !slices.Contains(slices.Collect(maps.Values(roles)), gate.RoleOperator) {
			log.Warn("no operators: nobody can approve; add one with sealgate operator add NAME --dir " + dir)
		}
		if sc.audit != "" {
			audit, err := gate.OpenAudit(sc.audit)
			if err != nil {
				return cli.WithHint(err, cli.ExitUsage, "choose a writable file with --audit")
			}
			defer audit.Close()
			cfg.Audit = audit
		}
		if sc.policy != "" {
			data, err := os.ReadFile(sc.policy)
			if err != nil {
				return cli.WithHint(err, cli.ExitUsage, "name a policy file with --policy")
			}
			policy, err := gate.ParsePolicyFile(data)
			if errors.Is(err, gate.ErrApproveAnySource) {
				return cli.WithHint(fmt.Errorf("%s: %w", sc.policy, err), cli.ExitUsage,
					"name the hosts' networks (sources = [\"10.1.0.0/16\"]), or add any_source = true to the rule if anyone with a sealed key may be approved")
			} else if err != nil {
				return cli.WithHint(fmt.Errorf("%s: %w", sc.policy, err), cli.ExitUsage, "see docs/approval.md, \"Policies\"")
			}
			cfg.Rules, cfg.Reserved = policy.Rules, policy.Reserved
		}
		if sc.webhook != "" {
			if u, err := url.Parse(sc.webhook); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
				return cli.Usage("--webhook must be an http:// or https:// URL")
			}
			cfg.Webhook = &gate.Webhook{URL: sc.webhook}
			if sc.webhookSecret == "" {
				log.Warn("webhook deliveries are unsigned: a receiver cannot tell them from forgeries; add --webhook-secret-file")
			} else if cfg.Webhook.Secret, err = readWebhookSecret(sc.webhookSecret); err != nil {
				return err
			}
		} else if sc.webhookSecret != "" {
			return cli.Usage("--webhook-secret-file needs --webhook")
		}
		if keys != nil {
			cfg.Keys = keys
		}
		handler = gate.New(cfg)
		writeTimeout = sc.hold + 10*time.Second
	} else if sc.audit != "" || sc.webhook != "" || sc.webhookSecret != "" || sc.policy != "" || sc.requireCode {
		return cli.Usage("--audit, --webhook, --webhook-secret-file, --policy and --require-code need --approval required")
	}
	tcp, err := net.Listen("tcp", listen)
	if err != nil {
		return cli.WithHint(err, cli.ExitUsage, "choose a free address with --listen")
	}
	limited := &limitListener{Listener: tcp, max: int64(sc.maxConns)}
	var ln net.Listener = limited
	srv := &http.Server{
		Handler:           handler,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      writeTimeout,
		IdleTimeout:       60 * time.Second,
		MaxHeaderBytes:    16 << 10,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	if sc.approval == "required" {
		log.Info("serving tang", "listen", ln.Addr().String(), "dir", dir, "approval", sc.approval, "require_code", sc.requireCode)
	} else {
		log.Info("serving tang", "listen", ln.Addr().String(), "dir", dir)
	}
	if err := confine(ctx, log, dir, sc); err != nil {
		ln.Close()
		return err
	}
	done := make(chan error, 1)
	if tlsConfig != nil {
		srv.TLSConfig = tlsConfig
		ln = tls.NewListener(ln, tlsConfig)
	}
	go func() { done <- srv.Serve(ln) }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
	}
	shutdown, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	log.Info("stopping tang", "refused_over_max_connections", limited.refused.Load())
	err = srv.Shutdown(shutdown)
	if g, ok := handler.(*gate.Gate); ok {
		g.Close() // cancel webhook deliveries in flight
	}
	return err
}
