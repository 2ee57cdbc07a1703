package proxy

import (
	"bytes"
	"crypto/rand"
	"crypto/tls"
	"sync"
	"testing"
	"time"

	"github.com/sealproxy/sealproxy/proxy/config"
	"github.com/sealproxy/sealproxy/testenv"
	"github.com/sealproxy/sealproxy/vault"
)

func TestSessionTicketsSurviveReloadAndRotate(t *testing.T) {
	p := newPKI(t)
	echo := testenv.StartEcho(t, nil)
	cfg := listenerConfig(config.ModeOffload, echo.Addr)
	cfg.TLS = serverTLSConfig(t, p.web)
	srv := start(t, cfg, nil)

	cc := clientConfig(p, "web.test")
	cc.ClientSessionCache = tls.NewLRUClientSessionCache(4)
	connect := func() bool {
		t.Helper()
		c, err := dialTLS(t, srv.addr, cc)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		// Reading processes the TLS 1.3 ticket that follows the handshake.
		if got := roundTrip(t, c, "x"); got != "x" {
			t.Fatalf("echo %q", got)
		}
		return c.ConnectionState().DidResume
	}
	if connect() {
		t.Fatal("first connection resumed")
	}
	if !connect() {
		t.Fatal("second connection did not resume")
	}

	// A reload brings a new tls.Config; the server's keys carry over.
	next := listenerConfig(config.ModeOffload, echo.Addr)
	next.TLS = serverTLSConfig(t, p.web)
	if err := srv.Update(next); err != nil {
		t.Fatal(err)
	}
	if !connect() {
		t.Fatal("no resumption after a reload")
	}

	// After as many rotations as keys are kept, old tickets are refused.
	cc.ClientSessionCache = tls.NewLRUClientSessionCache(4)
	connect() // a ticket under the current key
	for range ticketKeysKept {
		srv.rotateTickets()
	}
	if connect() {
		t.Fatal("resumed with a ticket whose key rotated out")
	}
}

// fleet is two servers (instances A and B) sharing one ticket secret,
// each with its own epoch clock.
type fleet struct {
	a, b           *running
	clockA, clockB *stepClock
	p              *pki
	echo           string
}

type stepClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *stepClock) now() time.Time  { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *stepClock) set(t time.Time) { c.mu.Lock(); c.t = t; c.mu.Unlock() }
func (c *stepClock) step(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

const testEpoch = time.Hour

func startFleet(t *testing.T, past int) *fleet {
	t.Helper()
	secret := make([]byte, vault.TicketSecretSize)
	rand.Read(secret)
	f := &fleet{p: newPKI(t), echo: testenv.StartEcho(t, nil).Addr}
	// Real time: crypto/tls refuses tickets from the future.
	f.clockA, f.clockB = &stepClock{t: time.Now()}, &stepClock{t: time.Now()}
	inst := func(name string, c *stepClock) *running {
		s, err := vault.NewTicketSecret("sealed:"+name, secret)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		tk := s.Tickets(vault.TicketPolicy{Period: testEpoch, Past: past, Now: c.now})
		cfg := listenerConfig(config.ModeOffload, f.echo)
		cfg.TLS = serverTLSConfig(t, f.p.web)
		ShareTickets(tk, []*ListenerConfig{cfg}, nil)
		return start(t, cfg, nil)
	}
	f.a, f.b = inst("a", f.clockA), inst("b", f.clockB)
	return f
}

// connect makes one connection to srv and reports whether it resumed.
func (f *fleet) connect(t *testing.T, srv *running, cc *tls.Config) bool {
	t.Helper()
	c, err := dialTLS(t, srv.addr, cc)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// Reading processes the TLS 1.3 ticket that follows the handshake.
	if got := roundTrip(t, c, "x"); got != "x" {
		t.Fatalf("echo %q", got)
	}
	return c.ConnectionState().DidResume
}

func (f *fleet) client(version uint16, cache tls.ClientSessionCache) *tls.Config {
	cc := clientConfig(f.p, "web.test")
	cc.MinVersion, cc.MaxVersion = version, version
	cc.ClientSessionCache = cache
	return cc
}

var versions = []struct {
	name string
	v    uint16
}{{"TLS1.2", tls.VersionTLS12}, {"TLS1.3", tls.VersionTLS13}}

func TestSharedTicketsResumeAcrossInstances(t *testing.T) {
	for _, ver := range versions {
		t.Run(ver.name, func(t *testing.T) {
			f := startFleet(t, 1)
			cc := f.client(ver.v, tls.NewLRUClientSessionCache(4))
			if f.connect(t, f.a, cc) {
				t.Fatal("first connection resumed")
			}
			if !f.connect(t, f.b, cc) {
				t.Fatal("a session A issued did not resume on B")
			}
			if !f.connect(t, f.a, cc) {
				t.Fatal("a session B issued (or A's again) did not resume on A")
			}
			// The servers' own random keys rotating changes nothing: they
			// are not used.
			for range ticketKeysKept {
				f.a.rotateTickets()
				f.b.rotateTickets()
			}
			if !f.connect(t, f.b, cc) {
				t.Fatal("no resumption after the servers' own keys rotated")
			}
		})
	}
}

// TestSharedTicketsRotateByEpoch steps both instances' epoch clocks: a
// ticket of epoch N resumes in N+1 (Past = 1) on either, and in N+2 on
// neither; an instance whose clock runs one epoch ahead issues tickets
// the other accepts.
func TestSharedTicketsRotateByEpoch(t *testing.T) {
	for _, ver := range versions {
		t.Run(ver.name, func(t *testing.T) {
			f := startFleet(t, 1)
			for _, srv := range []*running{f.a, f.b} {
				// One ticket, from A, in epoch N; one session per try, so
				// that a resumption does not refresh the ticket.
				f.clockA.set(time.Now())
				f.clockB.set(time.Now())
				issued := tls.NewLRUClientSessionCache(4)
				f.connect(t, f.a, f.client(ver.v, issued))
				try := func() bool { return f.connect(t, srv, f.client(ver.v, &onceCache{issued})) }
				if !try() {
					t.Fatalf("%s: no resumption in epoch N", srv.Config().Name)
				}
				f.clockA.step(testEpoch)
				f.clockB.step(testEpoch)
				if !try() {
					t.Fatal("no resumption in epoch N+1")
				}
				f.clockA.step(testEpoch)
				f.clockB.step(testEpoch)
				if try() {
					t.Fatal("resumed in epoch N+2, outside the window")
				}
			}
			// Skew: A one epoch ahead of B issues tickets B accepts.
			f.clockA.set(time.Now().Add(testEpoch))
			f.clockB.set(time.Now())
			cc := f.client(ver.v, tls.NewLRUClientSessionCache(4))
			f.connect(t, f.a, cc)
			if !f.connect(t, f.b, cc) {
				t.Fatal("a ticket from an instance one epoch ahead did not resume")
			}
			// Two epochs ahead: refused.
			f.clockA.set(time.Now().Add(2 * testEpoch))
			cc = f.client(ver.v, tls.NewLRUClientSessionCache(4))
			f.connect(t, f.a, cc)
			if f.connect(t, f.b, cc) {
				t.Fatal("a ticket from two epochs ahead resumed")
			}
		})
	}
}

// onceCache hands out the session of an underlying cache and keeps none
// of the tickets it is given, so that every try presents the first one.
type onceCache struct{ tls.ClientSessionCache }

func (onceCache) Put(string, *tls.ClientSessionState) {}

// tamperCache flips one byte of every ticket it keeps.
type tamperCache struct {
	tls.ClientSessionCache
	at int
}

func (c *tamperCache) Put(key string, cs *tls.ClientSessionState) {
	if cs == nil {
		c.ClientSessionCache.Put(key, cs)
		return
	}
	ticket, state, err := cs.ResumptionState()
	if err != nil || len(ticket) == 0 {
		return
	}
	bad := bytes.Clone(ticket)
	bad[c.at%len(bad)] ^= 0x40
	next, err := tls.NewResumptionState(bad, state)
	if err != nil {
		return
	}
	c.ClientSessionCache.Put(key, next)
}

func TestSharedTicketsTamperedFallBack(t *testing.T) {
	for _, ver := range versions {
		t.Run(ver.name, func(t *testing.T) {
			f := startFleet(t, 1)
			// The version byte, the epoch, the nonce, the ciphertext, the tag.
			for _, at := range []int{0, 5, 20, 40, -1} {
				cache := &tamperCache{ClientSessionCache: tls.NewLRUClientSessionCache(4), at: at}
				if at < 0 {
					cache.at = 1 << 20 // the last byte, whatever the length
				}
				cc := f.client(ver.v, cache)
				f.connect(t, f.a, cc)
				// The connection succeeds (no alert), without resumption.
				if f.connect(t, f.b, cc) {
					t.Fatalf("byte %d altered: resumed", at)
				}
			}
			// Another fleet's ticket: a full handshake too.
			other := startFleet(t, 1)
			shared := tls.NewLRUClientSessionCache(4)
			other.connect(t, other.a, other.client(ver.v, shared))
			cc := f.client(ver.v, shared)
			if f.connect(t, f.a, cc) {
				t.Fatal("another fleet's ticket resumed")
			}
			if !f.connect(t, f.b, cc) {
				t.Fatal("the full handshake's new ticket did not resume")
			}
		})
	}
}

// TestShareTicketsWhere: ShareTickets reaches the listeners and the
// pool's server services, not its client services nor a configuration
// with tickets off; the server's own keys never go where it did.
func TestShareTicketsWhere(t *testing.T) {
	a, _ := vault.NewTicketSecret("t", make([]byte, vault.TicketSecretSize))
	defer a.Close()
	tk := a.Tickets(vault.TicketPolicy{Period: time.Hour})
	lc := &ListenerConfig{TLS: &tls.Config{}}
	off := &ListenerConfig{TLS: &tls.Config{SessionTicketsDisabled: true}}
	srv, cli := &tls.Config{}, &tls.Config{}
	pool := &PoolConfig{Services: map[string]*PoolService{"s": {TLS: srv}, "c": {Client: true, TLS: cli}}}
	ShareTickets(tk, []*ListenerConfig{lc, off}, pool)
	for name, c := range map[string]*tls.Config{"listener": lc.TLS, "pool server": srv} {
		if c.WrapSession == nil || c.UnwrapSession == nil {
			t.Errorf("%s: not shared", name)
		}
	}
	for name, c := range map[string]*tls.Config{"tickets off": off.TLS, "pool client": cli} {
		if c.WrapSession != nil || c.UnwrapSession != nil {
			t.Errorf("%s: shared", name)
		}
	}
	// apply leaves a shared configuration alone: a ticket under the
	// server's own keys does not open there.
	keys := newTicketKeys()
	keys.apply(lc.TLS)
	other := &tls.Config{}
	keys.apply(other)
	cs, state := sessionState(t)
	ticket, err := other.EncryptTicket(cs, state)
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := other.DecryptTicket(ticket, cs); got == nil {
		t.Fatal("the control configuration does not open its own ticket")
	}
	if got, _ := lc.TLS.DecryptTicket(ticket, cs); got != nil {
		t.Error("the server's own keys were installed in a shared configuration")
	}
}
