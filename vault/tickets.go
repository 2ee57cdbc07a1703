package vault

import (
	"crypto"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"golang.org/x/crypto/chacha20poly1305"

	"github.com/sealproxy/sealproxy/internal/secmem"
)

// Shared session tickets ([tickets], docs/tickets.md): every instance
// holds the same sealed 32-byte secret and derives the key of each time
// epoch from it, so a ticket one instance issues opens on any other, and
// all rotate in step without talking to each other.
//
// A ticket is
//
//	version (1) ‖ epoch (8, big-endian) ‖ nonce (24) ‖ XChaCha20-Poly1305(state)
//
// with the first 33 bytes as additional data. The epoch is in the clear
// so that the right key is derived; the key of epoch e is
// HKDF-SHA256(secret, salt = none, info = ticketLabel ‖ e, 32 bytes).
// XChaCha20-Poly1305's 24-byte random nonces put no bound on how many
// tickets a fleet issues in one epoch (AES-GCM's 12-byte ones would, at
// 2^32 per key).

// TicketSecretSize is the length of a ticket secret.
const TicketSecretSize = 32

const (
	ticketVersion = 1
	ticketHeader  = 1 + 8 + chacha20poly1305.NonceSizeX
	ticketLabel   = "sealproxy session ticket key v1 epoch "
	// maxTicket bounds what Unwrap looks at: crypto/tls's session state
	// with a client certificate chain is a few KiB.
	maxTicket = 64 << 10
)

// ErrTicket reports a ticket that does not open: not in this format,
// from an epoch outside the accepted window, or altered. The server
// answers it with a full handshake, never an alert.
var ErrTicket = errors.New("session ticket refused")

// ErrNotTicketSecret reports a [tickets] source whose sealed content is
// not a ticket secret (a sealed private key, say).
var ErrNotTicketSecret = errors.New("not a session ticket secret")

// ErrNotSigner reports a ticket secret used as a signing key.
var ErrNotSigner = errors.New("a session ticket secret is not a signing key")

// A TicketSecret is a shared session-ticket secret in custody: sealed in
// a secmem.Box, in the clear only inside secmem.Do while one ticket's key
// is derived. It is a Key only so that the key ring keeps it with the
// keys (recovered in the same approval request group, closed with them);
// it does not sign.
type TicketSecret struct {
	name string

	mu  sync.RWMutex
	box *secmem.Box // nil once closed
}

// NewTicketSecret moves a 32-byte secret into custody; the caller still
// wipes secret.
func NewTicketSecret(name string, secret []byte) (*TicketSecret, error) {
	if len(secret) != TicketSecretSize {
		return nil, fmt.Errorf("ticket secret %s: %w: %d bytes, want %d (make it with 'seal ticket-secret')", name, ErrNotTicketSecret, len(secret), TicketSecretSize)
	}
	b, err := secmem.Seal(secret)
	if err != nil {
		return nil, err
	}
	return &TicketSecret{name: name, box: b}, nil
}

func (s *TicketSecret) String() string { return s.name }

// Public is nil: a ticket secret has no public half.
func (s *TicketSecret) Public() crypto.PublicKey { return nil }

// Sign refuses: see ErrNotSigner.
func (s *TicketSecret) Sign(io.Reader, []byte, crypto.SignerOpts) ([]byte, error) {
	return nil, fmt.Errorf("%s: %w", s.name, ErrNotSigner)
}

// Close wipes the secret; tickets neither wrap nor unwrap from then on.
func (s *TicketSecret) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.box != nil {
		s.box.Destroy()
		s.box = nil
	}
	return nil
}

// withEpochKey opens the secret, derives epoch's key and runs f with its
// AEAD, all inside secmem.Do; the derived key is wiped when f returns
// (the cipher's own copy is heap that runtime/secret erases when freed).
func (s *TicketSecret) withEpochKey(epoch uint64, f func(aead cipher.AEAD) error) error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.box == nil {
		return ErrClosed
	}
	return s.box.Open(func(secret []byte) error {
		var key [chacha20poly1305.KeySize]byte
		defer secmem.Bytes(key[:])
		epochKey(&key, secret, epoch)
		aead, err := chacha20poly1305.NewX(key[:])
		if err != nil {
			return err
		}
		return f(aead)
	})
}

// epochKey sets key to HKDF-SHA256(secret, no salt, ticketLabel ‖ epoch)
// (RFC 5869; crypto/hkdf gives the same bytes, TestEpochKeyIsHKDF). It is
// written over sha256.Sum256 with the state on the stack because inside
// secmem.Do every heap allocation is registered for erasure, and
// crypto/hkdf's dozen (HMAC and digest objects) made a key 17–20× dearer
// (BenchmarkEpochKey, docs/benchmarks.md).
func epochKey(key *[32]byte, secret []byte, epoch uint64) {
	// Extract: PRK = HMAC(salt = 32 zero bytes, secret).
	var prk [sha256.Size]byte
	var salt [sha256.Size]byte
	hmacSHA256(&prk, salt[:], secret)
	// Expand, one block: OKM = HMAC(PRK, info ‖ 0x01).
	var msg [len(ticketLabel) + 8 + 1]byte
	copy(msg[:], ticketLabel)
	binary.BigEndian.PutUint64(msg[len(ticketLabel):], epoch)
	msg[len(msg)-1] = 1
	hmacSHA256(key, prk[:], msg[:])
	secmem.Bytes(prk[:])
}

// hmacSHA256 is HMAC-SHA256 for a key of at most one block and a message
// of at most one block, on the stack.
func hmacSHA256(out *[sha256.Size]byte, key, msg []byte) {
	if len(key) > sha256.BlockSize || len(msg) > sha256.BlockSize {
		panic("vault: hmacSHA256 takes at most one block of key and of message")
	}
	var inner [sha256.BlockSize + sha256.BlockSize]byte
	var outer [sha256.BlockSize + sha256.Size]byte
	for i := range sha256.BlockSize {
		var k byte
		if i < len(key) {
			k = key[i]
		}
		inner[i] = k ^ 0x36
		outer[i] = k ^ 0x5c
	}
	n := copy(inner[sha256.BlockSize:], msg)
	h := sha256.Sum256(inner[:sha256.BlockSize+n])
	copy(outer[sha256.BlockSize:], h[:])
	*out = sha256.Sum256(outer[:])
	secmem.All(inner[:], outer[:], h[:])
}

// TicketPolicy is how a fleet's ticket keys rotate. Every instance must
// use the same Period.
type TicketPolicy struct {
	// Period is the length of an epoch (epoch = Unix time / Period).
	Period time.Duration
	// Past is how many epochs before the current one still unwrap.
	Past int
	// Now is the clock (nil: time.Now); tests step it.
	Now func() time.Time
}

// Tickets wraps and unwraps session tickets under a TicketSecret's epoch
// keys: new tickets under the current epoch's key; tickets of the Past
// epochs before it and of the next one (an instance whose clock runs up
// to one Period ahead) unwrap.
type Tickets struct {
	secret *TicketSecret
	period time.Duration
	past   uint64
	now    func() time.Time
}

// Tickets returns the wrapper for policy p.
func (s *TicketSecret) Tickets(p TicketPolicy) *Tickets {
	t := &Tickets{secret: s, period: p.Period, past: uint64(max(p.Past, 0)), now: p.Now}
	if t.period <= 0 {
		t.period = time.Hour
	}
	if t.now == nil {
		t.now = time.Now
	}
	return t
}

// Epoch is the epoch at time now.
func (t *Tickets) Epoch(now time.Time) uint64 {
	u := now.UnixNano()
	if u < 0 {
		return 0
	}
	return uint64(u / int64(t.period))
}

// Wrap encrypts a session state into a ticket under the current epoch's
// key. The caller still owns state.
func (t *Tickets) Wrap(state []byte) ([]byte, error) {
	epoch := t.Epoch(t.now())
	out := make([]byte, ticketHeader, ticketHeader+len(state)+chacha20poly1305.Overhead)
	out[0] = ticketVersion
	binary.BigEndian.PutUint64(out[1:9], epoch)
	if _, err := rand.Read(out[9:ticketHeader]); err != nil {
		return nil, err
	}
	err := t.secret.withEpochKey(epoch, func(aead cipher.AEAD) error {
		out = aead.Seal(out, out[9:ticketHeader], state, out[:ticketHeader])
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("wrapping a session ticket: %w", err)
	}
	return out, nil
}

// Unwrap returns the session state in a ticket, or an error wrapping
// ErrTicket for a ticket this fleet did not issue, from an epoch outside
// the window, or altered.
func (t *Tickets) Unwrap(ticket []byte) ([]byte, error) {
	p, err := ParseTicket(ticket)
	if err != nil {
		return nil, err
	}
	cur := t.Epoch(t.now())
	switch {
	case p.Epoch > cur+1:
		return nil, fmt.Errorf("%w: epoch %d is ahead of this instance's %d by more than one", ErrTicket, p.Epoch, cur)
	case p.Epoch+t.past < cur:
		return nil, fmt.Errorf("%w: epoch %d has expired (now %d, %d past accepted)", ErrTicket, p.Epoch, cur, t.past)
	}
	var state []byte
	err = t.secret.withEpochKey(p.Epoch, func(aead cipher.AEAD) error {
		var err error
		state, err = aead.Open(nil, p.Nonce, p.Sealed, ticket[:ticketHeader])
		return err
	})
	if errors.Is(err, ErrClosed) {
		return nil, err
	}
	if err != nil {
		return nil, fmt.Errorf("%w: does not authenticate", ErrTicket)
	}
	return state, nil
}

// ParsedTicket is a ticket's parts; Nonce and Sealed alias the ticket.
type ParsedTicket struct {
	Epoch  uint64
	Nonce  []byte
	Sealed []byte // ciphertext and tag
}

// ParseTicket splits a ticket into its parts without opening it.
func ParseTicket(ticket []byte) (ParsedTicket, error) {
	switch {
	case len(ticket) > maxTicket:
		return ParsedTicket{}, fmt.Errorf("%w: %d bytes, more than %d", ErrTicket, len(ticket), maxTicket)
	case len(ticket) < ticketHeader+chacha20poly1305.Overhead:
		return ParsedTicket{}, fmt.Errorf("%w: %d bytes, too short", ErrTicket, len(ticket))
	case ticket[0] != ticketVersion:
		return ParsedTicket{}, fmt.Errorf("%w: version %d (want %d)", ErrTicket, ticket[0], ticketVersion)
	}
	return ParsedTicket{
		Epoch:  binary.BigEndian.Uint64(ticket[1:9]),
		Nonce:  ticket[9:ticketHeader:ticketHeader],
		Sealed: ticket[ticketHeader:],
	}, nil
}
