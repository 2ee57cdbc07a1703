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

// apply installs the keys in a TLS configuration that issues tickets.
func (k *ticketKeys) apply(c *tls.Config) {
	if c == nil || c.SessionTicketsDisabled {
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
