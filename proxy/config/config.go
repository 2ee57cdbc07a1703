// Package config reads sealproxy's TOML configuration strictly: unknown
// keys, type errors and inconsistent settings are refused with file:line.
//
// testdata/full.toml shows every setting once; testdata/example.toml is
// the minimal file of issue 4, which must keep working as written.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
)

var typeErrRE = regexp.MustCompile(`^toml: line (\d+) \(last key "([^"]*)"\): (.*)$`)

// ErrInvalid is matched (errors.Is) by every configuration error.
var ErrInvalid = errors.New("invalid configuration")

// Mode is what a listener does with TLS (the seeds' taxonomy): the
// configuration's mode = "..." and the proxy's listener mode alike.
type Mode string

// Modes of a listener.
const (
	ModeOffload Mode = "offload" // TLS in, plain out
	ModeBridge  Mode = "bridge"  // TLS in, TLS out
	ModeEncrypt Mode = "encrypt" // plain in, TLS out
	ModeConnect Mode = "connect" // mTLS in, then CONNECT host:port to an allowed destination
)

// String returns the mode as the configuration spells it.
func (m Mode) String() string { return string(m) }

// Defaults applied by Load where a setting is absent.
const (
	DefaultHandshakeTimeout = 10 * time.Second
	DefaultConnectTimeout   = 10 * time.Second
	DefaultIdleTimeout      = 5 * time.Minute
	DefaultCloseTimeout     = 10 * time.Second
	DefaultShutdownTimeout  = 30 * time.Second
	DefaultMinVersion       = "1.2"

	// DefaultUnlockTimeout bounds the recovery of sealed keys at start-up
	// and on reload (Tang unreachable, or a gate waiting for approval).
	DefaultUnlockTimeout = 5 * time.Minute
	// DefaultRetryBackoff is the first wait before asking an unreachable
	// Tang server again; each retry doubles it up to DefaultRetryBackoffMax.
	DefaultRetryBackoff    = time.Second
	DefaultRetryBackoffMax = 30 * time.Second

	// DefaultLandlock confines where the kernel can.
	DefaultLandlock = "best-effort"
)

// SystemdPrefix marks a listen address that names a socket systemd
// passes (socket activation): "systemd:NAME" is the socket whose
// FileDescriptorName is NAME.
const SystemdPrefix = "systemd:"

// Config is a whole configuration file.
type Config struct {
	// Path is the file it was read from; Dir resolves relative paths.
	Path string `toml:"-"`
	Dir  string `toml:"-"`

	// AllowPlaintextKeys permits file: keys (development only).
	AllowPlaintextKeys bool `toml:"allow_plaintext_keys"`
	// AllowUnprotectedMemory permits sealed: keys in a binary built
	// without GOEXPERIMENT=runtimesecret (development only): such a
	// binary leaves copies of the key in freed memory.
	AllowUnprotectedMemory bool `toml:"allow_unprotected_memory"`
	// MaxConnections bounds connections over all listeners (0: no bound).
	MaxConnections int `toml:"max_connections"`
	// ShutdownTimeout bounds the drain of open connections at stop.
	ShutdownTimeout time.Duration `toml:"shutdown_timeout"`

	Keys      []Key      `toml:"key"`
	Listeners []Listener `toml:"listener"`
	Admin     Admin      `toml:"admin"`
	Unlock    Unlock     `toml:"unlock"`
	Sandbox   Sandbox    `toml:"sandbox"`
	// Revocation holds what every listener's revocation checks share.
	Revocation Revocation `toml:"revocation"`
	// Pool is the TLS pool (docs/pool.md): applications pass sockets
	// over a unix socket and get plaintext back.
	Pool Pool `toml:"pool"`
	// Tickets shares session ticket keys across instances
	// (docs/tickets.md); empty: per-listener random keys.
	Tickets Tickets `toml:"tickets"`

	// Warnings are settings that are valid but weaker than the defaults
	// (CBC suites, TLS below 1.2), with their positions; `sealproxy
	// check` prints them.
	Warnings Errors `toml:"-"`

	loc *locator // positions: for warnings and errors made after parsing (Where)
}

// Sandbox confines `sealproxy run` once it has started (docs/sandboxing.md).
type Sandbox struct {
	// Landlock is best-effort (default: confine where the kernel has
	// Landlock), off, or required (refuse to run unconfined).
	Landlock string `toml:"landlock"`
	// Read and Write are more paths the sandbox allows, for what the
	// configuration does not name (a PKCS#11 module's own files).
	Read  []string `toml:"read"`
	Write []string `toml:"write"`
}

// Unlock tunes the recovery of sealed: keys.
type Unlock struct {
	// Timeout bounds how long start-up (or a reload) waits for every
	// sealed key: Tang servers unreachable, or a gate waiting for an
	// operator. Default 5m.
	Timeout time.Duration `toml:"timeout"`
	// RetryBackoff is the first wait before an unreachable Tang server is
	// asked again (default 1s); the wait doubles up to RetryBackoffMax
	// (default 30s).
	RetryBackoff    time.Duration `toml:"retry_backoff"`
	RetryBackoffMax time.Duration `toml:"retry_backoff_max"`
}

// Key is a certificate chain and the private key that goes with it.
type Key struct {
	Name   string `toml:"name"`
	Cert   string `toml:"cert"`   // PEM chain, leaf first
	Source string `toml:"source"` // vault reference: sealed:, pkcs11:, winstore:, file:
	// OCSPStaple is a DER OCSP response for the leaf, stapled to
	// handshakes; re-read on reload.
	OCSPStaple string `toml:"ocsp_staple"`
	// OCSPFetch staples responses fetched from the certificate's OCSP
	// responder (or OCSPResponder) and refreshed at half their validity.
	OCSPFetch     bool   `toml:"ocsp_fetch"`
	OCSPResponder string `toml:"ocsp_responder"`
	// ACME, when set, has the certificate issued and renewed by an ACME
	// CA, the key generated in custody and written only sealed.
	ACME *ACME `toml:"acme"`
}

// Listener is one listening socket and what it does with connections.
type Listener struct {
	Name   string   `toml:"name"`
	Listen string   `toml:"listen"` // host:port, unix:PATH or systemd:NAME (socket activation)
	Mode   Mode     `toml:"mode"`
	Keys   []string `toml:"keys"` // names of [[key]]; SNI chooses, the first is the default

	// Backend is one destination; Backends a list tried in order
	// (failover) or in turn (Balance = "round_robin"). host:port or unix:PATH.
	Backend  string   `toml:"backend"`
	Backends []string `toml:"backends"`
	Balance  string   `toml:"balance"` // failover (default) | round_robin

	// ProxyProtocol sends a PROXY header to the backend: "v1" or "v2"
	// (v2 adds TLS version, SNI, ALPN, client CN and certificate).
	ProxyProtocol string `toml:"proxy_protocol"`
	// AcceptProxyFrom lists networks (CIDR or single addresses) of load
	// balancers whose connections start with a PROXY header.
	AcceptProxyFrom []string `toml:"accept_proxy_from"`

	MaxConnections   int           `toml:"max_connections"`
	HandshakeTimeout time.Duration `toml:"handshake_timeout"`
	ConnectTimeout   time.Duration `toml:"connect_timeout"`
	IdleTimeout      time.Duration `toml:"idle_timeout"`
	CloseTimeout     time.Duration `toml:"close_timeout"`
	MaxLifetime      time.Duration `toml:"max_lifetime"`

	TLS      TLS      `toml:"tls"`
	Upstream Upstream `toml:"upstream"`
	Connect  Connect  `toml:"connect"`
}

// TLS is the policy of the listener's TLS side (offload, bridge, connect).
type TLS struct {
	MinVersion   string   `toml:"min_version"` // 1.0 .. 1.3; default 1.2
	MaxVersion   string   `toml:"max_version"`
	ALPN         []string `toml:"alpn"`
	CipherSuites []string `toml:"cipher_suites"` // TLS 1.2 only; Go names
	Curves       []string `toml:"curves"`
	// SessionTickets enables TLS session resumption (default true); the
	// ticket keys rotate every TicketRotation (default 1h), three kept.
	SessionTickets *bool         `toml:"session_tickets"`
	TicketRotation time.Duration `toml:"ticket_rotation"`
	ClientAuth     string        `toml:"client_auth"` // none (default) | request | require
	ClientCA       string        `toml:"client_ca"`   // PEM bundle
	// CRL lists revocation lists (PEM or DER) signed by client_ca's CAs;
	// re-read on reload.
	CRL   []string `toml:"crl"`
	Allow Allow    `toml:"allow"`

	// Revocation settings (issue 14), see revocation.go.
	ListenerRevocation
}

// Allow rules on client certificates: a certificate passes if any rule
// of any kind matches; no rules at all allow every verified certificate.
type Allow struct {
	CN   []string `toml:"cn"`
	DNS  []string `toml:"dns"` // wildcards *.example.com
	URI  []string `toml:"uri"` // a trailing * matches any suffix
	OU   []string `toml:"ou"`
	SPKI []string `toml:"spki"` // base64 SHA-256 of SubjectPublicKeyInfo
}

// Upstream is the TLS client side of bridge and encrypt listeners.
type Upstream struct {
	CA         string   `toml:"ca"`          // PEM bundle; empty: system roots
	ServerName string   `toml:"server_name"` // default: the backend's host
	ClientKey  string   `toml:"client_key"`  // name of a [[key]] to present
	ALPN       []string `toml:"alpn"`
	MinVersion string   `toml:"min_version"`
	MaxVersion string   `toml:"max_version"`
}

// Connect is the routing map of a connect listener.
type Connect struct {
	// Allow lists permitted destinations as host:port; the host may be
	// a wildcard *.example.com and the port may be *.
	Allow []string `toml:"allow"`
}

// Admin is the listener of /metrics, /healthz and /readyz.
type Admin struct {
	Listen string `toml:"listen"` // host:port, unix:PATH or systemd:NAME
	// Reload serves POST /reload (as SIGHUP). Anyone who reaches the
	// admin listener could use it, so it needs a loopback address or a
	// unix socket.
	Reload bool `toml:"reload"`
	// Upgrade serves POST /upgrade (as SIGUSR2): start the binary at the
	// running one's path as a successor that takes over the sockets.
	// Like Reload, it needs a loopback address or a unix socket.
	Upgrade bool `toml:"upgrade"`
	// StateFile keeps the changes made with `sealproxy ctl` (key
	// references and certificate paths, never key bytes); run and every
	// reload apply it after the configuration. Needs a unix: listen.
	StateFile string `toml:"state_file"`
	// CtlUsers may call the control API besides root and the service's
	// own user: user names or numeric uids. Needs a unix: listen.
	CtlUsers []string `toml:"ctl_users"`
}

// Load reads, decodes and validates a configuration file.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading configuration: %w", err)
	}
	return Parse(path, data)
}

// Parse decodes and validates configuration data; path names it in
// errors and its directory resolves relative paths.
func Parse(path string, data []byte) (*Config, error) {
	cfg := &Config{Path: path, Dir: filepath.Dir(path)}
	loc := locate(data)
	md, err := toml.NewDecoder(bytes.NewReader(data)).Decode(cfg)
	if err != nil {
		var pe toml.ParseError
		if errors.As(err, &pe) {
			e := &Error{File: path, Line: pe.Position.Line, Path: pe.LastKey, Msg: pe.Message}
			if strings.HasPrefix(pe.Message, "invalid duration") {
				e.Msg += ` (want a number with a unit: "10s", "5m", "1h")`
			}
			if e.Path != "" {
				e.Path = loc.indexed(e.Path, e.Line)
			}
			return nil, e
		}
		// Type errors are not ParseErrors; the decoder puts their line and
		// key only in the message.
		if m := typeErrRE.FindStringSubmatch(err.Error()); m != nil {
			line, _ := strconv.Atoi(m[1])
			return nil, &Error{File: path, Line: line, Path: loc.indexed(m[2], line), Msg: m[3]}
		}
		return nil, &Error{File: path, Msg: strings.TrimPrefix(err.Error(), "toml: ")}
	}
	var errs Errors
	undecoded := map[string]bool{}
	for _, k := range md.Undecoded() {
		key := k.String()
		undecoded[key] = true
		if len(k) > 1 && undecoded[k[:len(k)-1].String()] {
			continue // reported with its unknown table
		}
		p, line := loc.find(key)
		errs = append(errs, &Error{File: path, Line: line, Path: p, Msg: "unknown setting"})
	}
	if len(errs) > 0 {
		return nil, errs.err()
	}
	v := validator{file: path, loc: loc}
	v.validate(cfg)
	if len(v.errs) > 0 {
		return nil, v.errs.err()
	}
	cfg.Warnings = v.warns
	cfg.loc = loc
	return cfg, nil
}

// Where places an indexed setting path ("key[1]", "listener[0].keys")
// as FILE:LINE (FILE alone when the line is unknown), for errors found
// after parsing.
func (c *Config) Where(path string) string {
	if c.loc != nil {
		if line := c.loc.line(path); line > 0 {
			return fmt.Sprintf("%s:%d", c.Path, line)
		}
	}
	return c.Path
}

// Resolve makes p absolute relative to the configuration file's directory.
func (c *Config) Resolve(p string) string {
	if p == "" || filepath.IsAbs(p) {
		return p
	}
	return filepath.Join(c.Dir, p)
}

// Key returns the key with the given name, or nil.
func (c *Config) Key(name string) *Key {
	for i := range c.Keys {
		if c.Keys[i].Name == name {
			return &c.Keys[i]
		}
	}
	return nil
}

// BackendList returns the listener's backends in order.
func (l *Listener) BackendList() []string {
	if l.Backend != "" {
		return []string{l.Backend}
	}
	return l.Backends
}

// Error is one configuration problem with its position.
type Error struct {
	File string
	Line int    // 0 when unknown
	Path string // key path such as listener[0].mode
	Msg  string
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString(e.File)
	if e.Line > 0 {
		fmt.Fprintf(&b, ":%d", e.Line)
	}
	b.WriteString(": ")
	if e.Path != "" {
		b.WriteString(e.Path)
		b.WriteString(": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

// Is makes every configuration error match ErrInvalid.
func (e *Error) Is(target error) bool { return target == ErrInvalid }

// Errors is several configuration problems, in file order.
type Errors []*Error

func (es Errors) err() error {
	if len(es) == 1 {
		return es[0]
	}
	return es
}

func (es Errors) Error() string {
	parts := make([]string, len(es))
	for i, e := range es {
		parts[i] = e.Error()
	}
	return fmt.Sprintf("%d problems:\n  %s", len(es), strings.Join(parts, "\n  "))
}

// Unwrap returns the individual errors.
func (es Errors) Unwrap() []error {
	out := make([]error, len(es))
	for i, e := range es {
		out[i] = e
	}
	return out
}

// Pool is the TLS pool's unix socket and its services (docs/pool.md).
type Pool struct {
	Listen string `toml:"listen"` // unix:PATH
	// Mode is the socket file's permissions, octal ("0660"; default
	// "0666": the services' users and groups decide who may use them).
	Mode string `toml:"mode"`
	// Group owns the socket file (a name or a numeric id).
	Group string `toml:"group"`
	// MaxConnections bounds the pool's requests and relayed connections
	// together; beyond it requests are refused with "busy". Default 1024.
	MaxConnections   int           `toml:"max_connections"`
	HandshakeTimeout time.Duration `toml:"handshake_timeout"`
	IdleTimeout      time.Duration `toml:"idle_timeout"`
	CloseTimeout     time.Duration `toml:"close_timeout"`
	MaxLifetime      time.Duration `toml:"max_lifetime"`

	Services []PoolService `toml:"service"`

	// FileMode and GID are Mode and Group resolved by validation (GID -1:
	// unchanged).
	FileMode os.FileMode `toml:"-"`
	GID      int         `toml:"-"`
}

// PoolService is one named TLS policy applications may ask the pool for.
type PoolService struct {
	Name string `toml:"name"`
	Role string `toml:"role"` // server | client
	// Users and Groups may use the service: names or numeric ids, matched
	// against the peer credentials of the pool connection (the primary
	// group). Nobody is allowed by default.
	Users  []string `toml:"users"`
	Groups []string `toml:"groups"`

	Keys []string `toml:"keys"` // server role: as a listener's keys
	TLS  TLS      `toml:"tls"`  // as a listener's tls (server role: the client side's policy)

	// Client role: the CA bundle that verifies servers (empty: system
	// roots), the default name to verify, and an optional [[key]] to
	// present as a client certificate.
	CA         string `toml:"ca"`
	ServerName string `toml:"server_name"`
	Key        string `toml:"key"`

	// UIDs and GIDs are Users and Groups resolved by validation.
	UIDs []uint32 `toml:"-"`
	GIDs []uint32 `toml:"-"`
}

// DefaultPoolMaxConnections bounds a pool without max_connections.
const DefaultPoolMaxConnections = 1024
