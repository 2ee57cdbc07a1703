package main

import (
	"context"
	"crypto"

	"github.com/sealproxy/sealproxy/proxy"
	"github.com/sealproxy/sealproxy/proxy/config"
	"github.com/sealproxy/sealproxy/vault/keyring"
)

// signers hands proxy.Build the keys of generation g, each checked
// against its certificate and counted in the metrics.
func signers(g *keyring.Generation, cfg *config.Config, m *proxy.Metrics) proxy.KeyOpener {
	return func(ctx context.Context, k *config.Key) (crypto.Signer, error) {
		key, err := g.Signer(ctx, cfg, k)
		if err != nil {
			return nil, err
		}
		return m.InstrumentSigner(k.Name, key), nil
	}
}

// usedKeys returns the keys cfg's listeners use: the ones run opens.
func usedKeys(cfg *config.Config) []*config.Key { return keyring.Used(cfg) }
