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
	"os"
	"path/filepath"
	"slices"
	"strings"
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

// run is the whole command as tests call it: in-process, never hardened
// or confined.
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	return (&command{}).run(ctx, args, stdin, stdout, stderr)
}

// command is sealgate with what it takes from the process around it.
type command struct {
	// process is set for the sealgate process itself: only it refuses core
	// dumps and ptrace and confines serve (a sandbox cannot be left, so
	// in-process tests never set it).
	process bool
}

func (c *command) run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return cli.Usage("no command given")
	}
	cmd, rest := args[0], args[1:]
	switch cmd {
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	case "keygen", "rotate", "thp":
		dir, err := dirFlag(cmd, rest, stdout)
		if err != nil {
			return err
		}
		return keyCommand(cmd, dir, stdout)
	case "serve":
		sc, err := parseServe(rest, stdout)
		if err != nil {
			return err
		}
		return c.serve(ctx, sc, stderr)
	case "operator":
		return operatorCommand(rest, stdout)
	}
	return cli.WithHint(fmt.Errorf("unknown command %q", cmd), cli.ExitUsage, "commands are keygen, rotate, thp, serve and operator; run 'sealgate help'")
}

// Each subcommand's synopsis, shown above its flags by -h.
var synopses = map[string]string{
	"keygen":   "usage: sealgate keygen --dir DIR\n\nCreate a signing and an exchange key in DIR; print the signing key's thumbprint.\n",
	"rotate":   "usage: sealgate rotate --dir DIR\n\nRetire DIR's active keys (kept as dot-files, still recovering) and create new ones.\n",
	"thp":      "usage: sealgate thp --dir DIR\n\nPrint the thumbprints of DIR's signing keys.\n",
	"serve":    "usage: sealgate serve --dir DIR --listen ADDR [FLAGS]\n\nServe /adv and /rec; with --approval required, hold each recovery until operators approve it.\n",
	"operator": "usage: sealgate operator add NAME | remove NAME | list --dir DIR [--role metrics]\n\nManage the operators of DIR/operators.json.\n",
}

// parseFlags parses a subcommand's own flags; -h prints them to stdout
// and ends the command with flag.ErrHelp (exit 0).
func parseFlags(fs *flag.FlagSet, args []string, stdout io.Writer) ([]string, error) {
	pos, err := cli.Parse(fs, args)
	name := strings.TrimPrefix(fs.Name(), "sealgate ")
	switch {
	case errors.Is(err, flag.ErrHelp):
		fmt.Fprintln(stdout, synopses[name])
		cli.PrintDefaults(stdout, fs)
	case err != nil:
		return nil, cli.WithHint(err, cli.ExitUsage, "'sealgate "+name+" -h' lists its flags")
	}
	return pos, err
}

// dirFlag parses the flags of keygen, rotate and thp: --dir only.
func dirFlag(cmd string, args []string, stdout io.Writer) (string, error) {
	fs := flag.NewFlagSet("sealgate "+cmd, flag.ContinueOnError)
	dir := fs.String("dir", "", "the key `directory`")
	pos, err := parseFlags(fs, args, stdout)
	if err != nil {
		return "", err
	}
	if len(pos) != 0 {
		return "", cli.Usage("%s takes no arguments, got %q", cmd, pos)
	}
	if *dir == "" {
		return "", cli.WithHint(errors.New(cmd+" needs --dir"), cli.ExitUsage, "sealgate "+cmd+" --dir /var/db/tang")
	}
	return *dir, nil
}

// keyCommand runs keygen, rotate or thp on dir.
func keyCommand(cmd, dir string, stdout io.Writer) error {
	var thps []string
	switch cmd {
	case "keygen":
		thp, err := tang.Keygen(dir)
		if err != nil {
			return err
		}
		thps = []string{thp}
	case "rotate":
		thp, err := tang.Rotate(dir)
		if err != nil {
			return err
		}
		thps = []string{thp}
	case "thp":
		keys, err := loadKeys(dir)
		if err != nil {
			return err
		}
		thps = keys.Thumbprints()
	}
	for _, thp := range thps {
		fmt.Fprintln(stdout, thp)
	}
	return nil
}

// operatorCommand parses `operator add|remove|list` and runs it.
func operatorCommand(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("sealgate operator", flag.ContinueOnError)
	dir := fs.String("dir", "", "the key `directory` (holds operators.json)")
	role := fs.String("role", string(gate.RoleOperator), "operator add: `operator` (decides) or metrics (reads /gate/metrics only)")
	pos, err := parseFlags(fs, args, stdout)
	if err != nil {
		return err
	}
	if *dir == "" {
		return cli.WithHint(errors.New("operator needs --dir"), cli.ExitUsage, "sealgate operator add alice --dir /var/db/tang")
	}
	return operator(pos, *dir, gate.Role(*role), stdout)
}

// parseServe parses serve's flags, and the --config file under them.
func parseServe(args []string, stdout io.Writer) (*serveConfig, error) {
	sc := &serveConfig{}
	fs := flag.NewFlagSet("sealgate serve", flag.ContinueOnError)
	fs.StringVar(&sc.dir, "dir", "", "the key `directory`")
	fs.StringVar(&sc.listen, "listen", "127.0.0.1:7500", "`address` to serve on")
	fs.StringVar(&sc.approval, "approval", "none", "`none` (a plain Tang server) or required")
	fs.StringVar(&sc.audit, "audit", "", "append decisions to this `file` as JSON lines")
	fs.DurationVar(&sc.hold, "hold", gate.DefaultHold, "hold a recovery this `long` before answering pending")
	fs.StringVar(&sc.webhook, "webhook", "", "POST each request waiting for a decision to this `URL`")
	fs.StringVar(&sc.webhookSecret, "webhook-secret-file", "", "sign webhook deliveries with HMAC-SHA256 under the secret in this `file`")
	fs.StringVar(&sc.policy, "policy", "", "auto-approve and deny rules from this TOML `file`")
	fs.IntVar(&sc.approvers, "approvers", 1, "distinct operators who must approve each request")
	fs.BoolVar(&sc.requireCode, "require-code", false, "approve only by the code the host shows: requests from hosts that show none (stock clevis) can only be denied")
	fs.StringVar(&sc.tlsCert, "tls-cert", "", "serve TLS with this PEM certificate chain `file`")
	fs.StringVar(&sc.tlsKey, "tls-key", "", "the PEM private key `file` of --tls-cert")
	fs.StringVar(&sc.clientCA, "client-ca", "", "operators may present client certificates from this PEM CA `file`, named by a listed operator")
	fs.StringVar(&sc.upstream, "upstream", "", "stand in front of the Tang server at this `URL` instead of serving DIR's keys")
	fs.IntVar(&sc.maxConns, "max-connections", DefaultMaxConnections, "refuse connections beyond this `many` open at once")
	fs.StringVar(&sc.landlock, "landlock", "best-effort", "confine serve once listening: `best-effort`, off or required")
	config := fs.String("config", "", "read settings from this TOML `file`, keys named as the flags; flags override it")
	pos, err := parseFlags(fs, args, stdout)
	if err != nil {
		return nil, err
	}
	if *config != "" {
		if err := applyConfig(fs, *config); err != nil {
			return nil, err
		}
	}
	if len(pos) != 0 {
		return nil, cli.Usage("serve takes no arguments, got %q", pos)
	}
	if sc.dir == "" {
		return nil, cli.WithHint(errors.New("serve needs --dir"), cli.ExitUsage, "sealgate serve --dir /var/db/tang")
	}
	return sc, nil
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

// serveConfig is what serve's flags (and --config) set.
type serveConfig struct {
	dir      string
	listen   string
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

// check refuses settings that do not go together with --approval; the
// gate's own settings are gate.Config.Validate's.
func (sc *serveConfig) check() error {
	if sc.approval != "none" && sc.approval != "required" {
		return cli.Usage("--approval is none or required, not %q", sc.approval)
	}
	if sc.maxConns <= 0 {
		return cli.Usage("--max-connections must be positive")
	}
	if sc.approval == "required" {
		if sc.webhookSecret != "" && sc.webhook == "" {
			return cli.Usage("--webhook-secret-file needs --webhook")
		}
		return nil
	}
	if sc.upstream != "" {
		return cli.Usage("--upstream needs --approval required")
	}
	if sc.audit != "" || sc.webhook != "" || sc.webhookSecret != "" || sc.policy != "" || sc.requireCode {
		return cli.Usage("--audit, --webhook, --webhook-secret-file, --policy and --require-code need --approval required")
	}
	return nil
}

// gateConfig is the gate's part of the flags, before any file is read.
func (sc *serveConfig) gateConfig() gate.Config {
	cfg := gate.Config{Upstream: sc.upstream, Hold: sc.hold, Approvers: sc.approvers, RequireCode: sc.requireCode}
	if sc.webhook != "" {
		cfg.Webhook = &gate.Webhook{URL: sc.webhook}
	}
	return cfg
}

// validate checks the gate's settings with gate.Config.Validate and
// gives its error the command's exit code and hint.
func validate(cfg *gate.Config) error {
	err := cfg.Validate()
	var ce *gate.ConfigError
	if errors.As(err, &ce) {
		return cli.WithHint(err, cli.ExitUsage, ce.Hint)
	}
	return err
}

// readWebhookSecret reads the webhook's HMAC key: the file's bytes
// without trailing line ends. The error never quotes the file.
func readWebhookSecret(path string) ([]byte, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, cli.WithHint(fmt.Errorf("--webhook-secret-file: %w", err), cli.ExitUsage, "make one with: head -c 32 /dev/urandom | base64 > "+path)
	}
	secret := bytes.TrimRight(data, "\r\n")
	if len(secret) < gate.MinWebhookSecret {
		return nil, cli.WithHint(fmt.Errorf("--webhook-secret-file %s: the secret is %d bytes, fewer than %d", path, len(secret), gate.MinWebhookSecret), cli.ExitUsage,
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

// serve runs `sealgate serve` until ctx ends.
func (c *command) serve(ctx context.Context, sc *serveConfig, stderr io.Writer) error {
	if err := sc.check(); err != nil {
		return err
	}
	cfg := sc.gateConfig()
	if err := validate(&cfg); err != nil {
		return err
	}
	dir := sc.dir
	if sc.upstream != "" {
		if _, err := os.Stat(dir); err != nil {
			return cli.WithHint(err, cli.ExitUsage, "--dir holds operators.json, even in front of an upstream")
		}
	}
	// Before any key is read: no core dumps, and no ptrace or
	// /proc/PID/mem for other processes of this user (in-process tests
	// stay dumpable).
	if c.process {
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
		g, closeGate, err := openGate(cfg, sc, keys, certOperators, log)
		if err != nil {
			return err
		}
		defer closeGate()
		handler = g
		writeTimeout = sc.hold + 10*time.Second
	}
	return c.listenAndServe(ctx, log, sc, handler, tlsConfig, writeTimeout)
}

// listenAndServe serves handler on --listen (over TLS with tlsConfig)
// with at most --max-connections open, confined by --landlock, until ctx
// ends; then it lets requests finish for up to 10 s.
func (c *command) listenAndServe(ctx context.Context, log *slog.Logger, sc *serveConfig, handler http.Handler, tlsConfig *tls.Config, writeTimeout time.Duration) error {
	dir := sc.dir
	tcp, err := net.Listen("tcp", sc.listen)
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
	if err := confine(log, dir, sc, c.process); err != nil {
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

// openGate completes cfg with the files the flags name (operators,
// audit log, policy, webhook secret) and makes the gate; closeGate
// closes the audit log.
func openGate(cfg gate.Config, sc *serveConfig, keys *tang.KeyDir, certOperators bool, log *slog.Logger) (g *gate.Gate, closeGate func(), err error) {
	cfg.Log, cfg.CertOperators = log, certOperators
	cfg.Operators = gate.OpenOperators(filepath.Join(sc.dir, gate.OperatorsFile))
	if roles, err := cfg.Operators.Roles(); err != nil {
		return nil, nil, cli.WithHint(err, cli.ExitUsage, "fix or remove "+cfg.Operators.Path())
	} else if !slices.Contains(slices.Collect(maps.Values(roles)), gate.RoleOperator) {
		log.Warn("no operators: nobody can approve; add one with sealgate operator add NAME --dir " + sc.dir)
	}
	closeGate = func() {}
	if sc.audit != "" {
		audit, err := gate.OpenAudit(sc.audit)
		if err != nil {
			return nil, nil, cli.WithHint(err, cli.ExitUsage, "choose a writable file with --audit")
		}
		closeGate = func() { audit.Close() }
		cfg.Audit = audit
	}
	fail := func(err error) (*gate.Gate, func(), error) {
		closeGate()
		return nil, nil, err
	}
	if sc.policy != "" {
		data, err := os.ReadFile(sc.policy)
		if err != nil {
			return fail(cli.WithHint(err, cli.ExitUsage, "name a policy file with --policy"))
		}
		policy, err := gate.ParsePolicyFile(data)
		if errors.Is(err, gate.ErrApproveAnySource) {
			return fail(cli.WithHint(fmt.Errorf("%s: %w", sc.policy, err), cli.ExitUsage,
				"name the hosts' networks (sources = [\"10.1.0.0/16\"]), or add any_source = true to the rule if anyone with a sealed key may be approved"))
		} else if err != nil {
			return fail(cli.WithHint(fmt.Errorf("%s: %w", sc.policy, err), cli.ExitUsage, "see docs/approval.md, \"Policies\""))
		}
		cfg.Rules, cfg.Reserved = policy.Rules, policy.Reserved
	}
	if cfg.Webhook != nil {
		if sc.webhookSecret == "" {
			log.Warn("webhook deliveries are unsigned: a receiver cannot tell them from forgeries; add --webhook-secret-file")
		} else if cfg.Webhook.Secret, err = readWebhookSecret(sc.webhookSecret); err != nil {
			return fail(err)
		}
	}
	if keys != nil {
		cfg.Keys = keys
	}
	if err := validate(&cfg); err != nil {
		return fail(err)
	}
	return gate.New(cfg), closeGate, nil
}
