package proxy

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/sealproxy/sealproxy/proxy/config"
)

// TestProxyHeaderFromBalancer covers docs/fleet.md's two rules for an L4
// balancer: its health checks (a PROXY v2 LOCAL header) are served with
// the connection's own address, and a client outside accept_proxy_from
// cannot forge its address by sending a header of its own (it is read as
// TLS, and fails).
func TestProxyHeaderFromBalancer(t *testing.T) {
	p := newPKI(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	got := make(chan string, 4)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			line, _ := bufio.NewReader(c).ReadString('\n')
			got <- line
			c.Close()
		}
	}()
	// v2 signature, version 2 + LOCAL, family UNSPEC, no addresses.
	local := append([]byte("\r\n\r\n\x00\r\nQUIT\n"), 0x20, 0x00, 0x00, 0x00)
	forged := AppendProxyV2(nil, netip.MustParseAddrPort("203.0.113.7:4242"), netip.MustParseAddrPort("198.51.100.1:443"), nil)

	for _, tt := range []struct {
		name    string
		trusted string
		header  []byte
		wantOK  bool
	}{
		{"LOCAL from the balancer", "127.0.0.0/8", local, true},
		{"a header from elsewhere", "10.0.0.0/8", forged, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cfg := listenerConfig(config.ModeOffload, ln.Addr().String())
			cfg.TLS = serverTLSConfig(t, p.web)
			cfg.ProxyProtocol = 1
			cfg.AcceptProxyFrom = []netip.Prefix{netip.MustParsePrefix(tt.trusted)}
			cfg.HandshakeTimeout = 5 * time.Second
			srv := start(t, cfg, nil)
			raw, err := net.Dial("tcp", srv.addr)
			if err != nil {
				t.Fatal(err)
			}
			defer raw.Close()
			if _, err := raw.Write(tt.header); err != nil {
				t.Fatal(err)
			}
			c := tls.Client(raw, clientConfig(p, "web.test"))
			_ = c.SetDeadline(time.Now().Add(10 * time.Second))
			err = c.Handshake()
			if !tt.wantOK {
				if err == nil {
					t.Fatal("a client outside accept_proxy_from got through with a PROXY header of its own")
				}
				return
			}
			if err != nil {
				t.Fatalf("handshake after a LOCAL header: %v", err)
			}
			local := raw.LocalAddr().(*net.TCPAddr)
			want := fmt.Sprintf("PROXY TCP4 %s %s %d %d\r\n", local.IP, "127.0.0.1", local.Port, raw.RemoteAddr().(*net.TCPAddr).Port)
			select {
			case line := <-got:
				if line != want {
					t.Errorf("backend got %q, want the connection's own addresses %q", line, want)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("nothing reached the backend")
			}
		})
	}
}
