package keyring

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sealproxy/sealproxy/proxy/config"
	"github.com/sealproxy/sealproxy/testenv"
	"github.com/sealproxy/sealproxy/unlock"
	"github.com/sealproxy/sealproxy/vault"
	"github.com/sealproxy/sealproxy/vault/keyref"
)

// sealTickets writes a sealed ticket secret and names it in [tickets].
func (e *ringEnv) sealTickets(pin string, secret []byte) {
	e.t.Helper()
	jwe, err := unlock.Encrypt(context.Background(), "tang", []byte(pin), secret, nil)
	if err != nil {
		e.t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(e.dir, "tickets.jwe"), jwe, 0o600); err != nil {
		e.t.Fatal(err)
	}
	e.cfg.Tickets = config.Tickets{Source: keyref.Sealed("tickets.jwe"), Rotation: time.Hour}
}

// TestTicketSecretInTheRequestGroup: the [tickets] secret is recovered
// with the keys, under the one approval a gate shows for the start-up,
// and two rings that recovered it make tickets for each other.
func TestTicketSecretInTheRequestGroup(t *testing.T) {
	g := startGate(t)
	secret := make([]byte, vault.TicketSecretSize)
	rand.Read(secret)
	open := func() *vault.Tickets {
		e := newRingEnv(t)
		e.seal("web", g.PinConfig())
		e.sealTickets(g.PinConfig(), secret)
		gen := e.ring.Begin()
		done := make(chan error, 1)
		go func() { done <- gen.Open(context.Background(), e.cfg) }()
		req := g.Next(t, time.Minute)
		if !req.Session || req.Keys != 2 || !req.Complete {
			t.Fatalf("request %+v, want one group of the key and the ticket secret", req)
		}
		if _, err := g.Approve(req.Code, "alice", "test"); err != nil {
			t.Fatal(err)
		}
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		tk, err := gen.Tickets(e.cfg, nil)
		if err != nil || tk == nil {
			t.Fatalf("tickets: %v, %v", tk, err)
		}
		gen.Commit()
		if !strings.Contains(e.logs.String(), `msg="key unlocked" key=[tickets]`) {
			t.Errorf("no unlock line for the ticket secret:\n%s", e.logs.String())
		}
		return tk
	}
	a, b := open(), open()
	ticket, err := a.Wrap([]byte("state"))
	if err != nil {
		t.Fatal(err)
	}
	if got, err := b.Unwrap(ticket); err != nil || !bytes.Equal(got, []byte("state")) {
		t.Fatalf("b: %q, %v", got, err)
	}
	select {
	case extra := <-g.Ready:
		t.Errorf("a further request at the gate: %+v", extra)
	default:
	}
}

// TestTicketSecretWrongFile: a sealed private key named as the ticket
// secret fails with a message that says what a ticket secret is; without
// [tickets] there is nothing to open.
func TestTicketSecretWrongFile(t *testing.T) {
	g := startGate(t)
	e := newRingEnv(t)
	keyPEM := e.seal("web", g.PinConfig())
	e.sealTickets(g.PinConfig(), keyPEM) // a private key sealed as the ticket secret
	gen := e.ring.Begin()
	done := make(chan error, 1)
	go func() { done <- gen.Open(context.Background(), e.cfg) }()
	req := g.Next(t, time.Minute)
	if _, err := g.Approve(req.Code, "alice", "test"); err != nil {
		t.Fatal(err)
	}
	err := <-done
	// The secret fails for good; "web" may have opened before that, or
	// been abandoned by it (the order is the scheduler's: under Wine the
	// secret fails first), but it must not fail on its own account.
	var ue *UnlockError
	if !errors.As(err, &ue) || !strings.Contains(err.Error(), "want 32 (make it with 'seal ticket-secret')") {
		t.Fatalf("err = %v", err)
	}
	var tickets bool
	for _, f := range ue.Locked {
		switch {
		case f.Key == config.TicketsName:
			tickets = true
		case !errors.Is(f.Err, errAbandoned):
			t.Errorf("key %q failed on its own: %v", f.Key, f.Err)
		}
	}
	if !tickets {
		t.Fatalf("the ticket secret is not among the locked keys: %v", err)
	}
	gen.Discard()
	e.cfg.Tickets = config.Tickets{}
	if tk, err := e.ring.Begin().Tickets(e.cfg, nil); tk != nil || err != nil {
		t.Fatalf("without [tickets]: %v, %v", tk, err)
	}
}

// TestTicketSecretAcrossReloads: a reload keeps the open secret (no
// recovery, tickets still open); a replaced file is recovered again, its
// tickets are new, and the old secret is closed after the grace period.
func TestTicketSecretAcrossReloads(t *testing.T) {
	tg := testenv.EmbeddedTang(t)
	e := newRingEnv(t)
	e.ring.grace = 10 * time.Millisecond
	e.seal("web", tg.Config())
	first := make([]byte, vault.TicketSecretSize)
	rand.Read(first)
	e.sealTickets(tg.Config(), first)
	var opens int
	open := e.ring.open
	e.ring.open = func(ctx context.Context, source string, opts *vault.Options) (vault.Key, error) {
		if opts.TicketSecret {
			opens++
		}
		return open(ctx, source, opts)
	}
	load := func() *vault.Tickets {
		gen := e.ring.Begin()
		if err := gen.Open(context.Background(), e.cfg); err != nil {
			t.Fatal(err)
		}
		tk, err := gen.Tickets(e.cfg, nil)
		if err != nil {
			t.Fatal(err)
		}
		gen.Commit()
		return tk
	}
	tk1 := load()
	ticket, err := tk1.Wrap([]byte("state"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := load().Unwrap(ticket); err != nil || opens != 1 {
		t.Fatalf("after a reload: %v, %d recoveries of the secret (want 1)", err, opens)
	}
	// A new secret in the same file.
	second := make([]byte, vault.TicketSecretSize)
	rand.Read(second)
	e.sealTickets(tg.Config(), second)
	later := time.Now().Add(time.Second)
	os.Chtimes(filepath.Join(e.dir, "tickets.jwe"), later, later)
	tk3 := load()
	if opens != 2 {
		t.Fatalf("%d recoveries of the secret, want 2", opens)
	}
	if _, err := tk3.Unwrap(ticket); !errors.Is(err, vault.ErrTicket) {
		t.Fatalf("the old secret's ticket under the new one: %v", err)
	}
	testenv.Eventually(t, 5*time.Second, "the old secret closed", func() bool {
		_, err := tk1.Wrap([]byte("state"))
		return errors.Is(err, vault.ErrClosed)
	})
}
