package main

import (
	"github.com/sealproxy/sealproxy/proxy"
	"github.com/sealproxy/sealproxy/proxy/config"
	"github.com/sealproxy/sealproxy/vault/keyref"
	"github.com/sealproxy/sealproxy/vault/keyring"
)

// shareTickets gives the listeners and the pool the session tickets of
// the [tickets] secret generation g recovered; without [tickets] they
// keep their own random keys.
func shareTickets(g *keyring.Generation, c *config.Config, listeners []*proxy.ListenerConfig, pool *proxy.PoolConfig) error {
	tk, err := g.Tickets(c, nil)
	if err != nil || tk == nil {
		return err
	}
	proxy.ShareTickets(tk, listeners, pool)
	return nil
}

// ticketFiles are the files the [tickets] secret is read from (the
// sandbox allows their directories, so a reload reads a new secret).
func ticketFiles(c *config.Config) []string {
	if !c.Tickets.Shared() {
		return nil
	}
	r, err := keyref.Parse(c.Tickets.Source)
	if err != nil {
		return nil
	}
	files, _ := r.Needs(c.Resolve)
	return files
}

// ticketSecretHint answers a [tickets] source that holds something else.
const ticketSecretHint = "[tickets] source must be a secret made by 'seal ticket-secret PIN CONFIG -o tickets.jwe' (the same file on every instance), not a sealed key"
