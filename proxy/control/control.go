// Package control is the run-time control API of `sealproxy run`, served
// on the unix admin socket only: list keys, stage a certificate and key,
// commit or abort it, attach and detach keys to listeners, remove keys.
// Committed changes go to a state file (references and paths, never key
// bytes) that every start and reload applies after the configuration.
//
// The package holds the API's state and handlers; opening keys and
// applying a configuration are the daemon's, passed in as Options, so
// that the data plane still never imports unlock.
package control

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/sealproxy/sealproxy/proxy/config"
	"github.com/sealproxy/sealproxy/vault/keyref"
)

// Options wire a Server to the daemon.
type Options struct {
	// StateFile is [admin] state_file ("": changes last until exit).
	StateFile string
	// Users are [admin] ctl_users: names or numeric uids allowed besides
	// root and the service's own uid.
	Users []string
	Log   *slog.Logger
	// Stage opens the key k names as start-up would (Tang, the gate) and
	// checks it against k's certificate. discard drops it again unless a
	// configuration applied since uses it.
	Stage func(ctx context.Context, cfg *config.Config, k *config.Key) (discard func(), err error)
	// Reload applies the configuration file again with the state (as
	// SIGHUP does) and reports whether it runs.
	Reload func(ctx context.Context) error
	// PeerUID returns the uid of a unix socket's peer; nil uses
	// SO_PEERCRED. Tests replace it.
	PeerUID func(*net.UnixConn) (uint32, error)
}

// Server is the control API of one daemon.
type Server struct {
	o       Options
	log     *slog.Logger
	allowed map[uint32]bool

	op      sync.Mutex // one verb that changes something at a time
	mu      sync.Mutex
	state   *State         // as last applied
	running *config.Config // the configuration (with the state) that runs
	staged  map[string]*staged
	report  func(string) // set-key's progress, while one runs
}

type staged struct {
	key     config.Key
	discard func()
	info    KeyInfo
}

// New returns the control API. The state file is read by Apply.
func New(o Options) (*Server, error) {
	log := o.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if o.PeerUID == nil {
		o.PeerUID = peerUID
	}
	s := &Server{o: o, log: log, allowed: map[uint32]bool{0: true, uint32(os.Getuid()): true},
		state: &State{Version: stateVersion}, staged: map[string]*staged{}}
	for _, u := range o.Users {
		uid, err := lookupUID(u)
		if err != nil {
			return nil, fmt.Errorf("[admin] ctl_users: %w", err)
		}
		s.allowed[uid] = true
	}
	return s, nil
}

func lookupUID(u string) (uint32, error) {
	if n, err := strconv.ParseUint(u, 10, 32); err == nil {
		return uint32(n), nil
	}
	usr, err := user.Lookup(u)
	if err != nil {
		return 0, fmt.Errorf("user %q: %w", u, err)
	}
	n, err := strconv.ParseUint(usr.Uid, 10, 32)
	if err != nil {
		return 0, fmt.Errorf("user %q has no numeric uid (%q)", u, usr.Uid)
	}
	return uint32(n), nil
}

// Apply returns base with the state file's changes (the state in memory
// without a state file). The daemon's loader calls it at start and on
// every reload, then Applied once the result runs.
func (s *Server) Apply(base *config.Config) (*config.Config, error) {
	st := s.current()
	name := "(in memory)"
	if s.o.StateFile != "" {
		var err error
		if st, _, err = readState(s.o.StateFile); err != nil {
			return nil, err
		}
		name = s.o.StateFile
	}
	cfg, err := apply(base, st, name)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	s.state = st
	s.mu.Unlock()
	return cfg, nil
}

// Held returns the keys of cfg (Apply's result) that the state added
// or replaced and no listener uses: the daemon keeps them open, so that
// attaching one later needs no new recovery (or approval).
func (s *Server) Held(cfg *config.Config) []*config.Key {
	st := s.current()
	var out []*config.Key
	for i := range cfg.Keys {
		k := &cfg.Keys[i]
		if st.key(k.Name) != nil && len(listenersUsing(cfg, k.Name)) == 0 {
			out = append(out, k)
		}
	}
	return out
}

// Applied records the configuration that now runs (Apply's result).
func (s *Server) Applied(cfg *config.Config) {
	s.mu.Lock()
	s.running = cfg
	s.mu.Unlock()
}

// Status passes a key ring status line (an approval code to compare) to
// the set-key call waiting for it.
func (s *Server) Status(line string) {
	if s == nil {
		return
	}
	s.mu.Lock()
	report := s.report
	s.mu.Unlock()
	if report != nil {
		report(line)
	}
}

func (s *Server) current() *State {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.state
}

// Running returns the configuration (with the state) that runs, nil
// before start-up applied one.
func (s *Server) Running() *config.Config { return s.runningConfig() }

func (s *Server) runningConfig() *config.Config {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.running
}

// Request is a verb's arguments.
type Request struct {
	Key      string `json:"key,omitempty"`
	Listener string `json:"listener,omitempty"`
	Cert     string `json:"cert,omitempty"`
	Source   string `json:"source,omitempty"`
}

// KeyInfo describes a key for `ctl keys` and the answers of set-key.
type KeyInfo struct {
	Name      string    `json:"name"`
	Source    string    `json:"source"` // PINs redacted
	Cert      string    `json:"cert"`
	Subject   string    `json:"subject"`
	SANs      []string  `json:"sans"`
	Serial    string    `json:"serial"`
	NotAfter  time.Time `json:"not_after"`
	Listeners []string  `json:"listeners"`
	// Origin: "config", "state" (the state file), "api" (a change kept
	// in memory: no state file), or "staged" (not committed).
	Origin string `json:"origin"`
}

// Verbs are the API's calls, each POST /ctl/VERB.
var Verbs = []string{"keys", "set-key", "commit", "abort", "attach", "detach", "remove-key"}

// Handler serves POST /ctl/{verb}. Each answer is newline-delimited JSON:
// progress lines ({"progress": ...}) then one {"result": ...} or
// {"error": ..., "hint": ...}.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /ctl/{verb}", s.serve)
	return mux
}

type connKey struct{}

// ConnContext is for http.Server.ConnContext: it keeps the connection,
// whose peer credentials the handler checks.
func ConnContext(ctx context.Context, c net.Conn) context.Context {
	return context.WithValue(ctx, connKey{}, c)
}

// errRefused is a call the API does not take from this caller or here.
var errRefused = errors.New("refused")

func (s *Server) caller(r *http.Request) (uint32, error) {
	c, _ := r.Context().Value(connKey{}).(net.Conn)
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return 0, fmt.Errorf("%w: the control API is served only on a unix admin socket ([admin] listen = \"unix:PATH\"), where the caller's uid is checked; this admin listener is %s", errRefused, network(c))
	}
	uid, err := s.o.PeerUID(uc)
	if err != nil {
		return 0, fmt.Errorf("%w: reading the caller's uid: %v", errRefused, err)
	}
	if !s.allowed[uid] {
		return uid, fmt.Errorf("%w: uid %d may not use the control API (root, the service's uid %d and [admin] ctl_users may)", errRefused, uid, os.Getuid())
	}
	return uid, nil
}

func network(c net.Conn) string {
	if c == nil {
		return "unknown"
	}
	return c.LocalAddr().Network()
}

// answer writes one NDJSON line and flushes it.
type answer struct {
	mu sync.Mutex
	w  http.ResponseWriter
}

func (a *answer) line(v any) {
	a.mu.Lock()
	defer a.mu.Unlock()
	data, _ := json.Marshal(v)
	_, _ = a.w.Write(append(data, '\n'))
	if f, ok := a.w.(http.Flusher); ok {
		f.Flush()
	}
}

type reply struct {
	Progress string          `json:"progress,omitempty"`
	Result   json.RawMessage `json:"result,omitempty"`
	Error    string          `json:"error,omitempty"`
	Hint     string          `json:"hint,omitempty"`
}

// maxRequest bounds a request body.
const maxRequest = 64 << 10

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	verb := r.PathValue("verb")
	w.Header().Set("Content-Type", "application/x-ndjson")
	a := &answer{w: w}
	audit := s.log.With("verb", printable(verb))
	uid, err := s.caller(r)
	if err != nil {
		audit.Warn("control API call refused", "uid", uid, "err", err)
		w.WriteHeader(http.StatusForbidden)
		a.line(reply{Error: err.Error()})
		return
	}
	audit = audit.With("uid", uid)
	var req Request
	dec := json.NewDecoder(io.LimitReader(r.Body, maxRequest))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil && !errors.Is(err, io.EOF) {
		audit.Warn("control API call refused", "err", err)
		w.WriteHeader(http.StatusBadRequest)
		a.line(reply{Error: "decoding the request: " + err.Error()})
		return
	}
	audit = audit.With("key", printable(req.Key), "listener", printable(req.Listener))
	if req.Cert != "" {
		audit = audit.With("cert", printable(req.Cert))
	}
	if req.Source != "" {
		audit = audit.With("source", redacted(req.Source))
	}
	audit.Info("control API call")
	result, err := s.do(r.Context(), verb, &req, func(p string) { a.line(reply{Progress: p}) })
	if err != nil {
		audit.Warn("control API call failed", "err", err)
		a.line(reply{Error: err.Error(), Hint: hintFor(err)})
		return
	}
	audit.Info("control API call done")
	data, _ := json.Marshal(result)
	a.line(reply{Result: data})
}

// Errors the verbs return; the CLI hints by them.
var (
	ErrUnknownVerb = errors.New("unknown verb")
	ErrNotFound    = errors.New("not found")
	ErrInUse       = errors.New("in use")
	ErrNotStaged   = errors.New("nothing staged")
	ErrBadRequest  = errors.New("bad request")
)

func hintFor(err error) string {
	switch {
	case errors.Is(err, ErrConflict):
		return "make the configuration and the state file agree: undo the change with sealproxy ctl, or edit the configuration, then reload"
	case errors.Is(err, ErrNotStaged):
		return "stage one first: sealproxy ctl set-key NAME --cert FILE --source REF"
	case errors.Is(err, ErrInUse):
		return "detach it first: sealproxy ctl detach LISTENER KEY"
	case errors.Is(err, ErrUnknownVerb):
		return "verbs are " + strings.Join(Verbs, ", ")
	}
	return ""
}

func (s *Server) do(ctx context.Context, verb string, req *Request, progress func(string)) (any, error) {
	if verb == "keys" {
		return s.keys(), nil
	}
	if !slices.Contains(Verbs, verb) {
		return nil, fmt.Errorf("%w %q", ErrUnknownVerb, verb)
	}
	s.op.Lock()
	defer s.op.Unlock()
	if s.runningConfig() == nil {
		return nil, errors.New("not serving yet")
	}
	switch verb {
	case "set-key":
		return s.setKey(ctx, req, progress)
	case "commit":
		return s.commit(ctx, req.Key)
	case "abort":
		return s.abort(req.Key)
	case "attach":
		return s.attach(ctx, req.Listener, req.Key, true)
	case "detach":
		return s.attach(ctx, req.Listener, req.Key, false)
	default: // remove-key
		return s.removeKey(ctx, req.Key)
	}
}

// checkName accepts key names a terminal and a log show as they are.
func checkName(n string) error {
	if n == "" || len(n) > 64 {
		return fmt.Errorf("%w: key name %q: want 1 to 64 characters", ErrBadRequest, n)
	}
	for _, r := range n {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.') {
			return fmt.Errorf("%w: key name %q: want letters, digits, '-', '_' and '.'", ErrBadRequest, n)
		}
	}
	return nil
}

func (s *Server) keys() []KeyInfo {
	cfg := s.runningConfig()
	st := s.current()
	var out []KeyInfo
	if cfg != nil {
		for _, k := range cfg.Keys {
			origin := "config"
			if st.key(k.Name) != nil {
				origin = "api"
				if s.o.StateFile != "" {
					origin = "state"
				}
			}
			out = append(out, describe(cfg, &k, origin))
		}
	}
	s.mu.Lock()
	for _, sk := range s.staged {
		out = append(out, sk.info)
	}
	s.mu.Unlock()
	slices.SortStableFunc(out, func(a, b KeyInfo) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// describe reads k's certificate for the listing; a certificate that
// cannot be read is shown as such, not as an error of the whole list.
func describe(cfg *config.Config, k *config.Key, origin string) KeyInfo {
	info := KeyInfo{Name: k.Name, Source: redacted(k.Source), Cert: cfg.Resolve(k.Cert), Origin: origin, SANs: []string{}, Listeners: []string{}}
	if leaf, err := config.ReadLeaf(cfg.Resolve(k.Cert)); err == nil {
		fill(&info, leaf)
	} else {
		info.Subject = "(unreadable: " + err.Error() + ")"
	}
	info.Listeners = listenersUsing(cfg, k.Name)
	return info
}

// listenersUsing names the listeners that serve key name or present it
// to their backends.
func listenersUsing(cfg *config.Config, name string) []string {
	out := []string{}
	for _, l := range cfg.Listeners {
		if (l.Mode != config.ModeEncrypt && slices.Contains(l.Keys, name)) || l.Upstream.ClientKey == name {
			out = append(out, l.Name)
		}
	}
	return out
}

func fill(info *KeyInfo, leaf *x509.Certificate) {
	info.Subject = leaf.Subject.String()
	info.SANs = append([]string{}, leaf.DNSNames...)
	for _, ip := range leaf.IPAddresses {
		info.SANs = append(info.SANs, ip.String())
	}
	for _, u := range leaf.URIs {
		info.SANs = append(info.SANs, u.String())
	}
	info.Serial = leaf.SerialNumber.Text(16)
	info.NotAfter = leaf.NotAfter.UTC()
}

func redacted(source string) string {
	r, err := keyref.Parse(source)
	if err != nil {
		return "(unparsable reference)" // it may hold a PIN: never echo it
	}
	return r.String()
}

func (s *Server) setKey(ctx context.Context, req *Request, progress func(string)) (any, error) {
	if err := checkName(req.Key); err != nil {
		return nil, err
	}
	cfg := s.runningConfig()
	if req.Cert == "" || req.Source == "" {
		return nil, fmt.Errorf("%w: set-key needs --cert FILE and --source REF", ErrBadRequest)
	}
	ref, err := keyref.Parse(req.Source)
	if err != nil {
		return nil, fmt.Errorf("%w: --source: %w", ErrBadRequest, err)
	}
	if u := ref.PKCS11(); u != nil && strings.Contains(ref.String(), "REDACTED") {
		// The state file would keep it in the clear.
		return nil, fmt.Errorf("%w: --source: a pin-value would be written to the state file; name the PIN's file with pin-source=file:PATH", ErrBadRequest)
	}
	k := config.Key{Name: req.Key, Cert: req.Cert, Source: req.Source}
	if !filepath.IsAbs(k.Cert) {
		k.Cert = cfg.Resolve(k.Cert)
	}
	leaf, err := config.ReadLeaf(k.Cert)
	if err != nil {
		return nil, fmt.Errorf("%w: --cert: %w", ErrBadRequest, err)
	}
	s.mu.Lock()
	old := s.staged[k.Name]
	delete(s.staged, k.Name)
	s.report = progress
	s.mu.Unlock()
	if old != nil {
		old.discard()
	}
	discard, err := s.o.Stage(ctx, cfg, &k)
	s.mu.Lock()
	s.report = nil
	s.mu.Unlock()
	if err != nil {
		return nil, fmt.Errorf("staging key %q: %w", k.Name, err)
	}
	info := describe(cfg, &k, "staged")
	fill(&info, leaf)
	info.Listeners = []string{}
	if cur := cfg.Key(k.Name); cur != nil {
		info.Listeners = listenersUsing(cfg, cur.Name)
	}
	s.mu.Lock()
	s.staged[k.Name] = &staged{key: k, discard: discard, info: info}
	s.mu.Unlock()
	return info, nil
}

func (s *Server) abort(name string) (any, error) {
	s.mu.Lock()
	sk := s.staged[name]
	delete(s.staged, name)
	s.mu.Unlock()
	if sk == nil {
		return nil, fmt.Errorf("%w for key %q", ErrNotStaged, name)
	}
	sk.discard()
	return map[string]string{"aborted": name}, nil
}

// change writes next as the state and applies it with a reload; if the
// reload is refused, the previous state comes back (file and memory).
func (s *Server) change(ctx context.Context, next *State) error {
	prev := s.current()
	var prevData []byte
	existed := false
	if s.o.StateFile != "" {
		var err error
		prevData, err = os.ReadFile(s.o.StateFile)
		existed = err == nil
		if err := writeFile(s.o.StateFile, next.encode()); err != nil {
			return err
		}
	}
	s.mu.Lock()
	s.state = next
	s.mu.Unlock()
	if err := s.o.Reload(ctx); err != nil {
		s.mu.Lock()
		s.state = prev
		s.mu.Unlock()
		if s.o.StateFile != "" {
			var rerr error
			if existed {
				rerr = writeFile(s.o.StateFile, prevData)
			} else {
				rerr = os.Remove(s.o.StateFile)
			}
			if rerr != nil {
				s.log.Error("restoring the state file after a refused change", "err", rerr)
			}
		}
		return err
	}
	return nil
}

func (s *Server) commit(ctx context.Context, name string) (any, error) {
	s.mu.Lock()
	sk := s.staged[name]
	s.mu.Unlock()
	if sk == nil {
		return nil, fmt.Errorf("%w for key %q", ErrNotStaged, name)
	}
	cfg := s.runningConfig()
	next := s.current().clone()
	e := next.key(name)
	if e == nil {
		next.Keys = append(next.Keys, KeyEntry{Name: name})
		e = &next.Keys[len(next.Keys)-1]
		if cur := cfg.Key(name); cur != nil { // the configuration's: remember it
			e.Replaces = &KeyRef{Cert: cur.Cert, Source: cur.Source}
		}
	}
	e.Cert, e.Source = sk.key.Cert, sk.key.Source
	err := s.change(ctx, next)
	s.mu.Lock()
	delete(s.staged, name)
	s.mu.Unlock()
	sk.discard() // a no-op for a key the new configuration uses
	if err != nil {
		return nil, fmt.Errorf("committing key %q: %w", name, err)
	}
	info := sk.info
	info.Origin = "api"
	if s.o.StateFile != "" {
		info.Origin = "state"
	}
	if now := s.runningConfig(); now != nil {
		if k := now.Key(name); k != nil {
			info.Listeners = listenersUsing(now, k.Name)
		}
	}
	return info, nil
}

func (s *Server) attach(ctx context.Context, listener, key string, on bool) (any, error) {
	cfg := s.runningConfig()
	i := slices.IndexFunc(cfg.Listeners, func(l config.Listener) bool { return l.Name == listener })
	if i < 0 {
		return nil, fmt.Errorf("%w: no listener %q", ErrNotFound, listener)
	}
	l := &cfg.Listeners[i]
	if l.Mode == config.ModeEncrypt {
		return nil, fmt.Errorf("%w: listener %q is mode encrypt: it serves no certificate", ErrBadRequest, listener)
	}
	if cfg.Key(key) == nil {
		s.mu.Lock()
		_, isStaged := s.staged[key]
		s.mu.Unlock()
		if isStaged {
			return nil, fmt.Errorf("%w: key %q is staged, not committed: run sealproxy ctl commit %s first", ErrNotFound, key, key)
		}
		return nil, fmt.Errorf("%w: no key %q", ErrNotFound, key)
	}
	keys := slices.Clone(l.Keys)
	has := slices.Contains(keys, key)
	switch {
	case on && has:
		return nil, fmt.Errorf("%w: listener %q already uses key %q", ErrBadRequest, listener, key)
	case !on && !has:
		return nil, fmt.Errorf("%w: listener %q does not use key %q", ErrNotFound, listener, key)
	case on:
		keys = append(keys, key)
	default:
		keys = slices.DeleteFunc(keys, func(n string) bool { return n == key })
		if len(keys) == 0 {
			return nil, fmt.Errorf("%w: key %q is listener %q's only key; attach another first", ErrInUse, key, listener)
		}
	}
	next := s.current().clone()
	e := next.listener(listener)
	if e == nil {
		next.Listeners = append(next.Listeners, ListenerEntry{Name: listener, Was: slices.Clone(l.Keys)})
		e = &next.Listeners[len(next.Listeners)-1]
	}
	e.Keys = keys
	if err := s.change(ctx, next); err != nil {
		return nil, err
	}
	return map[string]any{"listener": listener, "keys": keys}, nil
}

func (s *Server) removeKey(ctx context.Context, name string) (any, error) {
	cfg := s.runningConfig()
	k := cfg.Key(name)
	if k == nil {
		return nil, fmt.Errorf("%w: no key %q", ErrNotFound, name)
	}
	if users := listenersUsing(cfg, name); len(users) > 0 {
		return nil, fmt.Errorf("%w: key %q is used by listener(s) %s", ErrInUse, name, strings.Join(users, ", "))
	}
	next := s.current().clone()
	e := next.key(name)
	if e == nil {
		i := slices.IndexFunc(cfg.Keys, func(c config.Key) bool { return c.Name == name })
		return nil, fmt.Errorf("%w: key %q is defined in the configuration (%s): remove it there", ErrBadRequest, name, cfg.Where(fmt.Sprintf("key[%d]", i)))
	}
	next.Keys = slices.DeleteFunc(next.Keys, func(e KeyEntry) bool { return e.Name == name })
	if err := s.change(ctx, next); err != nil {
		return nil, err
	}
	return map[string]string{"removed": name}, nil
}

// printable returns s, quoted with escapes when a rune would not print:
// names come from the request and go to the log.
func printable(s string) string {
	for _, r := range s {
		if r < 0x20 || r == 0x7f || r == '"' || r == '\\' || r > 0x7e {
			return strconv.Quote(s)
		}
	}
	return s
}
