package vault

import (
	"bytes"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"testing"
	"time"

	"github.com/sealproxy/sealproxy/internal/secmem"
)

// fleetSecret returns two TicketSecrets holding the same random secret,
// as two instances that recovered one sealed file.
func fleetSecret(t testing.TB) (a, b *TicketSecret) {
	t.Helper()
	secret := make([]byte, TicketSecretSize)
	rand.Read(secret)
	a, err := NewTicketSecret("sealed:a.jwe", secret)
	if err != nil {
		t.Fatal(err)
	}
	if b, err = NewTicketSecret("sealed:b.jwe", secret); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close(); b.Close() })
	return a, b
}

// clock is a settable epoch clock.
type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

func TestTicketsAcrossInstancesAndEpochs(t *testing.T) {
	a, b := fleetSecret(t)
	const period = time.Hour
	ca := &clock{time.Unix(1_800_000_000, 0)}
	cb := &clock{ca.t}
	ta := a.Tickets(TicketPolicy{Period: period, Past: 1, Now: ca.now})
	tb := b.Tickets(TicketPolicy{Period: period, Past: 1, Now: cb.now})
	state := []byte("session state")
	ticket, err := ta.Wrap(state)
	if err != nil {
		t.Fatal(err)
	}
	if p, _ := ParseTicket(ticket); p.Epoch != ta.Epoch(ca.t) {
		t.Fatalf("ticket epoch %d, want %d", p.Epoch, ta.Epoch(ca.t))
	}
	for i, tc := range []struct {
		step time.Duration // b's clock relative to the issuing epoch
		ok   bool
	}{
		{0, true},
		{period, true},                   // the next epoch: within Past = 1
		{2 * period, false},              // expired
		{-period, true},                  // b's clock one epoch behind: a runs ahead
		{-2 * period, false},             // two behind: refused
		{10 * period, false},             // long expired
		{-(period + time.Minute), false}, // more than one epoch behind
	} {
		cb.t = ca.t.Add(tc.step)
		got, err := tb.Unwrap(ticket)
		if tc.ok && (err != nil || !bytes.Equal(got, state)) {
			t.Errorf("%d: step %v: %q, %v; want the state", i, tc.step, got, err)
		}
		if !tc.ok && !errors.Is(err, ErrTicket) {
			t.Errorf("%d: step %v: %q, %v; want ErrTicket", i, tc.step, got, err)
		}
	}
	// The issuer itself, one epoch later: still accepted; two: not.
	ca.t = ca.t.Add(period)
	if _, err := ta.Unwrap(ticket); err != nil {
		t.Fatal(err)
	}
	ca.t = ca.t.Add(period)
	if _, err := ta.Unwrap(ticket); !errors.Is(err, ErrTicket) {
		t.Fatalf("two epochs later: %v", err)
	}
}

func TestTicketsRefuseOtherSecretsAndTampering(t *testing.T) {
	a, _ := fleetSecret(t)
	other, _ := fleetSecret(t)
	ta := a.Tickets(TicketPolicy{Period: time.Hour, Past: 2})
	ticket, err := ta.Wrap([]byte("state"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := other.Tickets(TicketPolicy{Period: time.Hour, Past: 2}).Unwrap(ticket); !errors.Is(err, ErrTicket) {
		t.Fatalf("another fleet's secret opened the ticket: %v", err)
	}
	// A different period is a different epoch numbering: refused.
	if _, err := a.Tickets(TicketPolicy{Period: time.Minute, Past: 2}).Unwrap(ticket); !errors.Is(err, ErrTicket) {
		t.Fatalf("another period opened the ticket: %v", err)
	}
	for i := range ticket {
		bad := bytes.Clone(ticket)
		bad[i] ^= 0x01
		if _, err := ta.Unwrap(bad); !errors.Is(err, ErrTicket) {
			t.Fatalf("byte %d flipped: %v", i, err)
		}
	}
	for _, bad := range [][]byte{nil, ticket[:ticketHeader], ticket[:len(ticket)-1], append(bytes.Clone(ticket), 0)} {
		if _, err := ta.Unwrap(bad); !errors.Is(err, ErrTicket) {
			t.Fatalf("%d bytes: %v", len(bad), err)
		}
	}
	// Two tickets of the same state differ (random nonces).
	again, _ := ta.Wrap([]byte("state"))
	if bytes.Equal(again, ticket) {
		t.Fatal("two tickets are equal")
	}
	a.Close()
	if _, err := ta.Wrap([]byte("state")); !errors.Is(err, ErrClosed) {
		t.Fatalf("wrap after Close: %v", err)
	}
	if _, err := ta.Unwrap(ticket); !errors.Is(err, ErrClosed) {
		t.Fatalf("unwrap after Close: %v", err)
	}
}

func TestTicketSecretIsNotAKey(t *testing.T) {
	a, _ := fleetSecret(t)
	if _, err := a.Sign(nil, nil, nil); !errors.Is(err, ErrNotSigner) {
		t.Fatal(err)
	}
	for _, n := range []int{0, 16, 31, 33, 64} {
		if _, err := NewTicketSecret("x", make([]byte, n)); !errors.Is(err, ErrNotTicketSecret) {
			t.Errorf("%d bytes accepted", n)
		}
	}
}

// FuzzTicket: no input panics ParseTicket or Unwrap, only a ticket Wrap
// made unwraps, and what it gives back is the state wrapped.
func FuzzTicket(f *testing.F) {
	a, _ := fleetSecret(f)
	ta := a.Tickets(TicketPolicy{Period: time.Hour, Past: 2})
	good, _ := ta.Wrap([]byte("state"))
	f.Add(good, []byte("state"))
	f.Add([]byte{1}, []byte{})
	f.Add(bytes.Repeat([]byte{1}, ticketHeader+16), []byte("x"))
	f.Fuzz(func(t *testing.T, ticket, state []byte) {
		p, err := ParseTicket(ticket)
		if err == nil && (len(p.Nonce) != 24 || len(p.Sealed) < 16) {
			t.Fatalf("parsed %d-byte nonce, %d sealed", len(p.Nonce), len(p.Sealed))
		}
		if got, err := ta.Unwrap(ticket); err == nil && !bytes.Equal(ticket, good) {
			t.Fatalf("a ticket Wrap did not make unwrapped: %q", got)
		}
		w, err := ta.Wrap(state)
		if err != nil {
			t.Fatal(err)
		}
		if got, err := ta.Unwrap(w); err != nil || !bytes.Equal(got, state) {
			t.Fatalf("round trip: %q, %v", got, err)
		}
	})
}

// TestEpochKeyIsHKDF: the stack-only derivation is RFC 5869 HKDF-SHA256,
// byte for byte as crypto/hkdf computes it.
func TestEpochKeyIsHKDF(t *testing.T) {
	for i := range 200 {
		secret := make([]byte, TicketSecretSize)
		rand.Read(secret)
		epoch := uint64(i) * 0x0123456789abcd
		info := binary.BigEndian.AppendUint64([]byte(ticketLabel), epoch)
		want, err := hkdf.Key(sha256.New, secret, nil, string(info), 32)
		if err != nil {
			t.Fatal(err)
		}
		var got [32]byte
		epochKey(&got, secret, epoch)
		if !bytes.Equal(got[:], want) {
			t.Fatalf("epoch %d: derivation differs from crypto/hkdf", epoch)
		}
	}
}

// BenchmarkEpochKey derives one epoch key inside secmem.Do, as a ticket
// does: on the stack (what vault uses) and with crypto/hkdf (its
// allocations are each registered for erasure under runtime/secret).
func BenchmarkEpochKey(b *testing.B) {
	secret := make([]byte, TicketSecretSize)
	b.Run("stack", func(b *testing.B) {
		var key [32]byte
		cpu0 := cpuTime()
		for b.Loop() {
			secmem.Do(func() { epochKey(&key, secret, 42) })
		}
		b.ReportMetric(float64((cpuTime()-cpu0).Nanoseconds())/float64(b.N), "cpu-ns/op")
	})
	b.Run("crypto-hkdf", func(b *testing.B) {
		info := string(binary.BigEndian.AppendUint64([]byte(ticketLabel), 42))
		cpu0 := cpuTime()
		for b.Loop() {
			secmem.Do(func() {
				k, _ := hkdf.Key(sha256.New, secret, nil, info, 32)
				secmem.Bytes(k)
			})
		}
		b.ReportMetric(float64((cpuTime()-cpu0).Nanoseconds())/float64(b.N), "cpu-ns/op")
	})
}
