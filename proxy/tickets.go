package proxy

import (
	"crypto/rand"
	"crypto/tls"
	"sync"
	"time"
)

// ticketKeysKept is how many session ticket keys a server keeps: the
// newest encrypts, all decrypt, so a ticket lives up to this many
// rotation periods.
const ticketKeysKept = 3

// DefaultTicketRotation is the rotation period of session ticket keys.
const DefaultTicketRotation = time.Hour

// ticketKeys are a server's session ticket keys. They belong to the
// server, not to a configuration, so tickets survive reloads.
type ticketKeys struct {
	mu   sync.Mutex
	keys [][32]byte
}

func newTicketKeys() *ticketKeys {
	k := &ticketKeys{}
	k.rotate()
	return k
}

// rotate adds a fresh key in front and drops the oldest beyond the kept.
func (k *ticketKeys) rotate() {
	var key [32]byte
	_, _ = rand.Read(key[:]) // crypto/rand.Read never fails
	k.mu.Lock()
	k.keys = append([][32]byte{key}, k.keys...)
	if len(k.keys) > ticketKeysKept {
		k.keys = k.keys[:ticketKeysKept]
	}
	k.mu.Unlock()
}

// apply installs the keys in a TLS configuration that issues tickets
// with them: not one that shares a fleet's keys (ShareTickets).
func (k *ticketKeys) apply(c *tls.Config) {
	if c == nil || c.SessionTicketsDisabled || c.WrapSession != nil {
		return
	}
	k.mu.Lock()
	keys := append([][32]byte(nil), k.keys...)
	k.mu.Unlock()
	c.SetSessionTicketKeys(keys)
}

// rotateTickets rotates the keys and installs them for new handshakes.
func (s *Server) rotateTickets() {
	s.tickets.rotate()
	s.tickets.apply(s.state.Load().cfg.TLS)
}

// rotateTicketsEvery rotates until done is closed.
func (s *Server) rotateTicketsEvery(period time.Duration, done <-chan struct{}) {
	t := time.NewTicker(period)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			s.rotateTickets()
		case <-done:
			return
		}
	}
}

// A TicketSealer encrypts session tickets under keys every instance of a
// fleet derives alike ([tickets], docs/tickets.md), so that a session one
// instance issued resumes on another. Unwrap fails for a ticket it did
// not make, from a key no longer accepted, or altered; the handshake then
// goes on in full.
type TicketSealer interface {
	Wrap(state []byte) ([]byte, error)
	Unwrap(ticket []byte) ([]byte, error)
}

// ShareTickets makes the server configurations of listeners and of the
// pool's server services issue and accept tickets sealed by t instead of
// the server's own random keys (which then never reach them).
func ShareTickets(t TicketSealer, listeners []*ListenerConfig, pool *PoolConfig) {
	for _, l := range listeners {
		shareTickets(l.TLS, t)
	}
	if pool != nil {
		for _, s := range pool.Services {
			if !s.Client {
				shareTickets(s.TLS, t)
			}
		}
	}
}

func shareTickets(c *tls.Config, t TicketSealer) {
	if c == nil || c.SessionTicketsDisabled {
		return
	}
	c.WrapSession = func(_ tls.ConnectionState, ss *tls.SessionState) ([]byte, error) {
		state, err := ss.Bytes()
		if err != nil {
			return nil, err
		}
		defer clear(state) // the resumption secret
		return t.Wrap(state)
	}
	c.UnwrapSession = func(ticket []byte, _ tls.ConnectionState) (*tls.SessionState, error) {
		state, err := t.Unwrap(ticket)
		if err != nil {
			return nil, nil // not ours, expired or altered: a full handshake
		}
		// The parsed state aliases state: it is not wiped here.
		ss, err := tls.ParseSessionState(state)
		if err != nil {
			return nil, nil
		}
		return ss, nil
	}
}
