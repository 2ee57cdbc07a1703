package proxy

import (
	"crypto/rand"
	"crypto/tls"
	"io"
	"net"
	"testing"
	"time"

	"github.com/sealproxy/sealproxy/vault"
)

// sessionState returns a real TLS 1.3 session state (and the server's
// connection state) from one in-memory handshake.
func sessionState(b testing.TB) (tls.ConnectionState, *tls.SessionState) {
	p := newPKI(b)
	srvCfg := serverTLSConfig(b, p.web)
	var (
		gotCS tls.ConnectionState
		gotSS *tls.SessionState
	)
	srvCfg.WrapSession = func(cs tls.ConnectionState, ss *tls.SessionState) ([]byte, error) {
		gotCS, gotSS = cs, ss
		return srvCfg.EncryptTicket(cs, ss)
	}
	cc := clientConfig(p, "web.test")
	cc.ClientSessionCache = tls.NewLRUClientSessionCache(1)
	c1, c2 := net.Pipe()
	done := make(chan error, 1)
	go func() {
		s := tls.Server(c2, srvCfg)
		err := s.Handshake()
		s.Write([]byte("x")) // the ticket goes before it
		s.Close()
		done <- err
	}()
	c := tls.Client(c1, cc)
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if err := c.Handshake(); err != nil {
		b.Fatal(err)
	}
	// Read to the server's close_notify: net.Pipe writes block until read.
	io.Copy(io.Discard, c)
	c.Close()
	if err := <-done; err != nil || gotSS == nil {
		b.Fatalf("no session state: %v", err)
	}
	return gotCS, gotSS
}

// BenchmarkTicket compares a session ticket's cost under the shared,
// sealed secret (ShareTickets over vault.Tickets: the box opened, the
// epoch key derived with HKDF and XChaCha20-Poly1305, all in secmem.Do)
// with crypto/tls's own ticket keys (AES-CTR and HMAC under keys in the
// heap), each as the handshake calls it: from a SessionState to a ticket
// and back.
func BenchmarkTicket(b *testing.B) {
	cs, ss := sessionState(b)
	own := &tls.Config{}
	secret := make([]byte, vault.TicketSecretSize)
	rand.Read(secret)
	s, err := vault.NewTicketSecret("bench", secret)
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	shared := &tls.Config{}
	shareTickets(shared, s.Tickets(vault.TicketPolicy{Period: time.Hour, Past: 2}))
	for _, c := range []struct {
		name   string
		wrap   func() ([]byte, error)
		unwrap func([]byte) (*tls.SessionState, error)
	}{
		{"crypto-tls",
			func() ([]byte, error) { return own.EncryptTicket(cs, ss) },
			func(t []byte) (*tls.SessionState, error) { return own.DecryptTicket(t, cs) }},
		{"shared-sealed",
			func() ([]byte, error) { return shared.WrapSession(cs, ss) },
			func(t []byte) (*tls.SessionState, error) { return shared.UnwrapSession(t, cs) }},
	} {
		ticket, err := c.wrap()
		if err != nil {
			b.Fatal(err)
		}
		b.Run("wrap/"+c.name, func(b *testing.B) {
			defer reportCPU(b)()
			b.ReportAllocs()
			for b.Loop() {
				if _, err := c.wrap(); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run("unwrap/"+c.name, func(b *testing.B) {
			defer reportCPU(b)()
			b.ReportAllocs()
			for b.Loop() {
				if got, err := c.unwrap(ticket); err != nil || got == nil {
					b.Fatalf("%v, %v", got, err)
				}
			}
		})
	}
}
