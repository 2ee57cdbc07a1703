// Package keyring owns the lifecycle of a daemon's keys: it opens the
// keys a configuration uses (concurrently, sealed keys recovered through
// Tang and any approval gate, retried with backoff while a server is
// unreachable, bounded by [unlock] timeout, one approval request group
// per start-up or reload), keeps them open across reloads by identity,
// and closes the ones no configuration uses any more after a grace
// period.
//
// It is called a ring, not a store or a session: it holds open keys,
// never key files, and "session" already names a gate's approval of one
// recovery. A Ring holds the keys; a Generation is one configuration's
// (or one run-time change's) claim on them, made live by Commit or
// dropped by Discard.
//
// Errors and states a command maps to its hints (ErrDenied,
// ErrCodeMismatch, ErrGateFull, ErrUnreachable) are exported here, so
// that the command needs neither unlock nor unlock/tang.
package keyring

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"sync"
	"time"

	"github.com/sealproxy/sealproxy/proxy/config"
	"github.com/sealproxy/sealproxy/vault"
	"github.com/sealproxy/sealproxy/vault/keyref"
)

// Ring keeps the keys a daemon opened. A reload that names the same
// source again gets the open key back: no Tang server is contacted again
// until a reload needs a new key. Keys the running configuration no
// longer names are closed (their enclaves wiped) after a grace period
// for handshakes still signing with them.
type Ring struct {
	log *slog.Logger
	st  *status
	// open and readSealed are vault.Open and vault.ReadSealed; tests
	// replace them.
	open       func(ctx context.Context, source string, opts *vault.Options) (vault.Key, error)
	readSealed func(ref string, opts *vault.Options) ([]byte, bool, error)
	grace      time.Duration

	mu   sync.Mutex
	keys map[string]vault.Key       // by identity (keyID)
	live map[string]map[string]bool // identity → the [[key]] names the running configuration gives it
}

// Options configure a Ring.
type Options struct {
	// Log receives the progress of every key (nil discards it).
	Log *slog.Logger
	// Status receives one line describing an unlock in progress, e.g.
	// "unlocking keys: 1 of 2 open; web: waiting for approval (code
	// 4F2K-9QXD) at http://gate:7500", for a service manager (nil: none).
	Status func(string)
}

// grace outlasts any handshake that began before a reload.
const grace = time.Minute

// New returns an empty ring.
func New(o Options) *Ring {
	log := o.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Ring{log: log, st: newStatus(o.Status), open: vault.Open, readSealed: vault.ReadSealed, grace: grace,
		keys: map[string]vault.Key{}, live: map[string]map[string]bool{}}
}

// Generation is one claim on a ring's keys: the keys a configuration (or
// a run-time change) opened or found open. Commit makes it live, Discard
// drops it; exactly one of them is called.
type Generation struct {
	r       *Ring
	partial bool                       // Stage: adds to the live keys instead of replacing them
	used    map[string]map[string]bool // identity → [[key]] names
}

// Begin starts the generation of a whole configuration: its Commit
// retires every key it does not use.
func (r *Ring) Begin() *Generation {
	return &Generation{r: r, used: map[string]map[string]bool{}}
}

// Stage starts a generation that changes some keys while the others stay
// live (a run-time change of one key): its Commit retires only the keys
// its own key names replace.
func (r *Ring) Stage() *Generation {
	g := r.Begin()
	g.partial = true
	return g
}

func (g *Generation) use(id, name string) {
	if g.used[id] == nil {
		g.used[id] = map[string]bool{}
	}
	g.used[id][name] = true
}

// Signer returns the key k names, opened by Open or now, checked against
// the leaf of k's certificate file.
func (g *Generation) Signer(ctx context.Context, cfg *config.Config, k *config.Key) (vault.Key, error) {
	r := g.r
	id := keyID(cfg, k.Source)
	r.mu.Lock()
	key, ok := r.keys[id]
	r.mu.Unlock()
	if !ok {
		var err error
		opts := vaultOptions(cfg, r.log)
		opts.Cert = certOf(cfg, k)
		key, err = r.open(ctx, k.Source, opts)
		if err != nil {
			return nil, err
		}
		r.mu.Lock()
		r.keys[id] = key
		r.mu.Unlock()
	}
	g.use(id, k.Name)
	leaf, err := readLeaf(cfg.Resolve(k.Cert))
	if err != nil {
		return nil, err
	}
	if err := vault.CheckCertificate(key, leaf); err != nil {
		return nil, err
	}
	return key, nil
}

// Adopt adds a key opened elsewhere (generated in custody, say) as the
// key k names: the ring closes it like the keys it opened. Call it once
// k's source names the key's file as it now is (a sealed file written),
// so that a reload finds the key open by its identity.
func (g *Generation) Adopt(cfg *config.Config, k *config.Key, key vault.Key) {
	r := g.r
	id := keyID(cfg, k.Source)
	r.mu.Lock()
	if old, ok := r.keys[id]; ok && old != key {
		r.retire(old) // after the grace, as any replaced key
	}
	r.keys[id] = key
	r.mu.Unlock()
	g.use(id, k.Name)
}

func vaultOptions(cfg *config.Config, log *slog.Logger) *vault.Options {
	return &vault.Options{
		BaseDir: cfg.Dir, AllowPlaintext: cfg.AllowPlaintextKeys,
		AllowUnprotectedMemory: cfg.AllowUnprotectedMemory, Log: log,
	}
}

// Commit makes this generation's keys the live ones and retires the keys
// no longer used: for Begin every other key, for Stage the keys its
// names used before.
func (g *Generation) Commit() {
	r := g.r
	r.mu.Lock()
	defer r.mu.Unlock()
	if !g.partial {
		r.live = g.used
	} else {
		for id, names := range g.used {
			for old, oldNames := range r.live {
				if old == id {
					continue
				}
				for n := range names {
					delete(oldNames, n)
				}
				if len(oldNames) == 0 {
					delete(r.live, old)
				}
			}
			if r.live[id] == nil {
				r.live[id] = map[string]bool{}
			}
			for n := range names {
				r.live[id][n] = true
			}
		}
	}
	for id, k := range r.keys {
		if len(r.live[id]) == 0 {
			delete(r.keys, id)
			r.retire(k)
		}
	}
}

// Discard closes the keys only this refused generation opened.
func (g *Generation) Discard() {
	r := g.r
	r.mu.Lock()
	defer r.mu.Unlock()
	for id := range g.used {
		if k, ok := r.keys[id]; ok && len(r.live[id]) == 0 {
			delete(r.keys, id)
			r.retire(k)
		}
	}
}

// keyID names an opened key: the configuration's directory and the
// reference's identity (for a key file, its size and modification time,
// so that a file replaced under the same name is opened again on reload).
func keyID(cfg *config.Config, source string) string {
	r, err := keyref.Parse(source)
	if err != nil {
		return cfg.Dir + "\x00" + source // Open reports the error
	}
	return cfg.Dir + "\x00" + r.Identity(cfg.Resolve)
}

func (r *Ring) retire(k vault.Key) {
	time.AfterFunc(r.grace, func() {
		if err := k.Close(); err != nil {
			r.log.Warn("closing a retired key", "err", err)
		}
	})
}

// Close closes every key now (at exit).
func (r *Ring) Close() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for id, k := range r.keys {
		if err := k.Close(); err != nil {
			r.log.Warn("closing key", "err", err)
		}
		delete(r.keys, id)
	}
}

// certOf is the leaf of k's cert file, handed to backends that check the
// key against it as they open it (a PKCS#11 key uses it rather than a
// certificate on the token); nil when it cannot be read, which Signer
// reports.
func certOf(cfg *config.Config, k *config.Key) *x509.Certificate {
	leaf, err := readLeaf(cfg.Resolve(k.Cert))
	if err != nil {
		return nil
	}
	return leaf
}

// readLeaf is the leaf of a [[key]]'s cert file, for errors that say
// what was being read.
func readLeaf(path string) (*x509.Certificate, error) {
	leaf, err := config.ReadLeaf(path)
	if pe := (*fs.PathError)(nil); errors.As(err, &pe) {
		return nil, fmt.Errorf("reading certificate: %w", err)
	}
	return leaf, err
}
