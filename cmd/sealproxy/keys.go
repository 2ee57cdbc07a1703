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

	"github.com/sealproxy/sealproxy/proxy"
	"github.com/sealproxy/sealproxy/proxy/config"
	"github.com/sealproxy/sealproxy/vault"
)

// keyStore keeps the keys the daemon opened. A reload that names the same
// source again gets the open key back: no Tang server is contacted again
// until a reload needs a new key.
type keyStore struct {
	log     *slog.Logger
	metrics *proxy.Metrics
	mu      sync.Mutex
	keys    map[string]vault.Key // by config directory and source
}

func newKeyStore(log *slog.Logger, m *proxy.Metrics) *keyStore {
	return &keyStore{log: log, metrics: m, keys: map[string]vault.Key{}}
}

// opener opens keys as cfg configures them and checks each against the
// leaf of its certificate file.
func (s *keyStore) opener(cfg *config.Config) proxy.KeyOpener {
	return func(ctx context.Context, k *config.Key) (crypto.Signer, error) {
		id := cfg.Dir + "\x00" + k.Source
		s.mu.Lock()
		key, ok := s.keys[id]
		s.mu.Unlock()
		if !ok {
			var err error
			key, err = vault.Open(ctx, k.Source, &vault.Options{
				BaseDir: cfg.Dir, AllowPlaintext: cfg.AllowPlaintextKeys, Log: s.log,
			})
			if err != nil {
				return nil, err
			}
			s.mu.Lock()
			s.keys[id] = key
			s.mu.Unlock()
		}
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
