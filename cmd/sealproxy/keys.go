package main

import (
	"context"
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/sealproxy/sealproxy/proxy"
	"github.com/sealproxy/sealproxy/proxy/config"
	"github.com/sealproxy/sealproxy/vault"
	"github.com/sealproxy/sealproxy/vault/keyref"
)

// keyStore keeps the keys the daemon opened. A reload that names the same
// source again gets the open key back: no Tang server is contacted again
// until a reload needs a new key. Keys the running configuration no
// longer names are closed (their enclaves wiped) after a grace period
// for handshakes still signing with them.
type keyStore struct {
	log     *slog.Logger
	metrics *proxy.Metrics
	open    func(ctx context.Context, source string, opts *vault.Options) (vault.Key, error)
	grace   time.Duration

	mu   sync.Mutex
	keys map[string]vault.Key // by config directory and source
	live map[string]bool      // what the running configuration uses
}

// keyGrace outlasts any handshake that began before a reload.
const keyGrace = time.Minute

func newKeyStore(log *slog.Logger, m *proxy.Metrics) *keyStore {
	return &keyStore{log: log, metrics: m, open: vault.Open, grace: keyGrace,
		keys: map[string]vault.Key{}, live: map[string]bool{}}
}

// load is one configuration's use of the store: the keys it asked for.
type load struct {
	s    *keyStore
	used map[string]bool
}

func (s *keyStore) newLoad() *load { return &load{s: s, used: map[string]bool{}} }

// opener opens keys as cfg configures them and checks each against the
// leaf of its certificate file.
func (l *load) opener(cfg *config.Config) proxy.KeyOpener {
	s := l.s
	return func(ctx context.Context, k *config.Key) (crypto.Signer, error) {
		id := keyID(cfg, k.Source)
		s.mu.Lock()
		key, ok := s.keys[id]
		s.mu.Unlock()
		if !ok {
			var err error
			key, err = s.open(ctx, k.Source, &vault.Options{
				BaseDir: cfg.Dir, AllowPlaintext: cfg.AllowPlaintextKeys,
				AllowUnprotectedMemory: cfg.AllowUnprotectedMemory, Log: s.log,
			})
			if err != nil {
				return nil, err
			}
			s.mu.Lock()
			s.keys[id] = key
			s.mu.Unlock()
		}
		l.used[id] = true
		leaf, err := readLeaf(cfg.Resolve(k.Cert))
		if err != nil {
			return nil, err
		}
		if err := vault.CheckCertificate(key, leaf); err != nil {
			return nil, err
		}
		return s.metrics.InstrumentSigner(k.Name, key), nil
	}
}

// applied makes this load's keys the live ones and retires the rest.
func (l *load) applied() {
	s := l.s
	s.mu.Lock()
	defer s.mu.Unlock()
	s.live = l.used
	for id, k := range s.keys {
		if !s.live[id] {
			delete(s.keys, id)
			s.retire(k)
		}
	}
}

// discarded closes the keys only this refused load opened.
func (l *load) discarded() {
	s := l.s
	s.mu.Lock()
	defer s.mu.Unlock()
	for id := range l.used {
		if k, ok := s.keys[id]; ok && !s.live[id] {
			delete(s.keys, id)
			s.retire(k)
		}
	}
}

// keyID names an opened key: its source, and for sealed: and file: keys
// the file's size and modification time, so that a key file replaced
// under the same name is opened again on reload.
func keyID(cfg *config.Config, source string) string {
	r, err := keyref.Parse(source)
	if err != nil {
		return cfg.Dir + "\x00" + source // Open reports the error
	}
	return cfg.Dir + "\x00" + r.Identity(cfg.Resolve)
}

func (s *keyStore) retire(k vault.Key) {
	time.AfterFunc(s.grace, func() {
		if err := k.Close(); err != nil {
			s.log.Warn("closing a retired key", "err", err)
		}
	})
}

func (s *keyStore) closeAll() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for id, k := range s.keys {
		if err := k.Close(); err != nil {
			s.log.Warn("closing key", "err", err)
		}
		delete(s.keys, id)
	}
}

func readLeaf(path string) (*x509.Certificate, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading certificate: %w", err)
	}
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			return nil, fmt.Errorf("%s: no PEM CERTIFICATE block", path)
		}
		if block.Type == "CERTIFICATE" {
			return x509.ParseCertificate(block.Bytes)
		}
	}
}
