package config

import (
	"fmt"
	"time"

	"github.com/sealproxy/sealproxy/vault/keyref"
)

// Tickets is [tickets]: a sealed secret from which every instance
// derives the same session ticket key per time epoch, so that a session
// resumes on any instance behind a load balancer (docs/tickets.md).
type Tickets struct {
	// Source is the sealed secret (sealed:FILE, made by 'seal
	// ticket-secret'). Empty: each listener has its own random keys.
	Source string `toml:"source"`
	// Rotation is the length of an epoch (default 1h); every instance
	// of a fleet must use the same.
	Rotation time.Duration `toml:"rotation"`
	// AcceptPast is how many epochs before the current one still resume
	// (default 2); the next epoch always does (clock skew).
	AcceptPast *int `toml:"accept_past"`
}

// Ticket defaults and bounds.
const (
	DefaultTicketEpoch      = time.Hour
	DefaultTicketAcceptPast = 2
	MinTicketEpoch          = time.Minute
	// maxTicketWindow is TLS 1.3's longest ticket lifetime (RFC 8446
	// 4.6.1); crypto/tls refuses older tickets anyway.
	maxTicketWindow = 7 * 24 * time.Hour
)

// TicketsName is the name the shared ticket secret goes by in logs and
// status lines; no [[key]] may take it.
const TicketsName = "[tickets]"

// Shared reports whether [tickets] names a secret.
func (t *Tickets) Shared() bool { return t.Source != "" }

// Past is AcceptPast with its default.
func (t *Tickets) Past() int {
	if t.AcceptPast == nil {
		return DefaultTicketAcceptPast
	}
	return *t.AcceptPast
}

func (v *validator) tickets(c *Config) {
	t := &c.Tickets
	if !t.Shared() {
		if t.Rotation != 0 || t.AcceptPast != nil {
			v.errorf("tickets.source", "missing: rotation and accept_past need the shared secret (source = \"sealed:tickets.jwe\", made by 'seal ticket-secret')")
		}
		return
	}
	switch r, err := keyref.Parse(t.Source); {
	case err != nil:
		v.errorf("tickets.source", "%v", err)
	case !r.IsSealed():
		v.errorf("tickets.source", "want sealed:FILE: the ticket secret is on disk only sealed (make it with 'seal ticket-secret tang CONFIG -o tickets.jwe')")
	}
	if t.Rotation == 0 {
		t.Rotation = DefaultTicketEpoch
	}
	if t.Rotation < MinTicketEpoch {
		v.errorf("tickets.rotation", "%v is shorter than %v: every epoch derives a new key, and clients would resume rarely", t.Rotation, MinTicketEpoch)
	}
	past := t.Past()
	switch {
	case past < 0:
		v.errorf("tickets.accept_past", "must not be negative")
	case time.Duration(past+1)*t.Rotation > maxTicketWindow:
		v.errorf("tickets.accept_past", "tickets would resume for up to %v, longer than TLS 1.3's 7 days: lower accept_past or rotation", time.Duration(past+1)*t.Rotation)
	}
	for i := range c.Keys {
		if c.Keys[i].Source == t.Source {
			v.errorf("tickets.source", "key[%d] (%q) has the same source: the ticket secret is a file of its own, made by 'seal ticket-secret'", i, c.Keys[i].Name)
		}
		if c.Keys[i].Name == TicketsName {
			v.errorf(fmt.Sprintf("key[%d].name", i), "%q is the ticket secret's name in logs: choose another", TicketsName)
		}
	}
	for i := range c.Listeners {
		if c.Listeners[i].TLS.TicketRotation != 0 {
			v.errorf(fmt.Sprintf("listener[%d].tls.ticket_rotation", i), "the shared ticket keys rotate every [tickets] rotation: remove ticket_rotation")
		}
	}
}
