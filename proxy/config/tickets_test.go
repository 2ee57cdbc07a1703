package config

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestTickets(t *testing.T) {
	cfg, err := Parse("c.toml", []byte(base+"[tickets]\nsource = \"sealed:tickets.jwe\"\n"))
	if err != nil {
		t.Fatal(err)
	}
	if tk := cfg.Tickets; !tk.Shared() || tk.Rotation != DefaultTicketEpoch || tk.Past() != DefaultTicketAcceptPast {
		t.Fatalf("defaults not applied: %+v", tk)
	}
	cfg, err = Parse("c.toml", []byte(base+"[tickets]\nsource = \"sealed:t.jwe\"\nrotation = \"10m\"\naccept_past = 0\n"))
	if err != nil {
		t.Fatal(err)
	}
	if tk := cfg.Tickets; tk.Rotation != 10*time.Minute || tk.Past() != 0 {
		t.Fatalf("%+v", tk)
	}
	// Without [tickets], nothing is shared.
	if cfg, err = Parse("c.toml", []byte(base)); err != nil || cfg.Tickets.Shared() {
		t.Fatalf("%+v, %v", cfg.Tickets, err)
	}
}

func TestTicketsErrors(t *testing.T) {
	withTLS := strings.Replace(base, "backend = \"127.0.0.1:9000\"\n", "backend = \"127.0.0.1:9000\"\n[listener.tls]\nticket_rotation = \"30m\"\n", 1)
	for _, tt := range []struct{ name, toml, want string }{
		{"plaintext source", base + "[tickets]\nsource = \"file:t.key\"\n",
			"c.toml:13: tickets.source: want sealed:FILE: the ticket secret is on disk only sealed (make it with 'seal ticket-secret tang CONFIG -o tickets.jwe')"},
		{"pkcs11 source", base + "[tickets]\nsource = \"pkcs11:token=t;object=k?module-path=/m.so\"\n", "c.toml:13: tickets.source: want sealed:FILE"},
		{"bad reference", base + "[tickets]\nsource = \"tickets.jwe\"\n", "c.toml:13: tickets.source: bad key reference"},
		{"settings without source", base + "[tickets]\nrotation = \"1h\"\n", "tickets.source: missing: rotation and accept_past need the shared secret"},
		{"short epoch", base + "[tickets]\nsource = \"sealed:t.jwe\"\nrotation = \"10s\"\n", "c.toml:14: tickets.rotation: 10s is shorter than 1m0s"},
		{"negative past", base + "[tickets]\nsource = \"sealed:t.jwe\"\naccept_past = -1\n", "c.toml:14: tickets.accept_past: must not be negative"},
		{"window past 7 days", base + "[tickets]\nsource = \"sealed:t.jwe\"\nrotation = \"24h\"\naccept_past = 7\n", "c.toml:15: tickets.accept_past: tickets would resume for up to 192h0m0s"},
		{"unknown setting", base + "[tickets]\nsource = \"sealed:t.jwe\"\nepoch = \"1h\"\n", "c.toml:14: tickets.epoch: unknown setting"},
		{"reserved key name", strings.Replace(base, `name = "web"`, `name = "[tickets]"`, 1) + "[tickets]\nsource = \"sealed:t.jwe\"\n", `key[0].name: "[tickets]" is the ticket secret's name`},
		{"a key's file", base + "[tickets]\nsource = \"sealed:web.key.jwe\"\n", `c.toml:13: tickets.source: key[0] ("web") has the same source`},
		{"listener rotation", withTLS + "[tickets]\nsource = \"sealed:t.jwe\"\n", "c.toml:13: listener[0].tls.ticket_rotation: the shared ticket keys rotate every [tickets] rotation"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse("c.toml", []byte(tt.toml))
			if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error\n%v\nwant %q", err, tt.want)
			}
		})
	}
}
