package proxy

import (
	"crypto/tls"
	"testing"

	"github.com/sealproxy/sealproxy/proxy/config"
	"github.com/sealproxy/sealproxy/testenv"
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
