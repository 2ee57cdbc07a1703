package proxy

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/netip"
	"reflect"
	"strings"
	"testing"

	"github.com/sealproxy/sealproxy/proxy/config"
	"time"

	"github.com/sealproxy/sealproxy/testenv"
)

func TestProxyV1(t *testing.T) {
	src := netip.MustParseAddrPort("192.0.2.1:56324")
	dst := netip.MustParseAddrPort("198.51.100.2:443")
	b := AppendProxyV1(nil, src, dst)
	if string(b) != "PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\r\n" {
		t.Fatalf("v1 = %q", b)
	}
	h, err := ReadProxyHeader(bufio.NewReader(bytes.NewReader(b)))
	if err != nil || h.Src != src || h.Dst != dst {
		t.Fatalf("parsed %+v, %v", h, err)
	}
	for _, bad := range []string{
		"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n",                // no CR
		"PROXY TCP4 ::1 5.6.7.8 1 2\r\n",                  // family mismatch
		"PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n",             // leading zero
		"PROXY TCP4 1.2.3.4 5.6.7.8 1 65536\r\n",          // port range
		"PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n",              // protocol
		"PROXY TCP4 " + strings.Repeat("1", 120) + "\r\n", // too long
	} {
		if _, err := ReadProxyHeader(bufio.NewReader(strings.NewReader(bad))); !errors.Is(err, ErrBadProxyHeader) {
			t.Errorf("%q: err = %v, want ErrBadProxyHeader", bad, err)
		}
	}
}

func TestProxyV2RoundTrip(t *testing.T) {
	for _, tt := range []struct{ src, dst string }{
		{"192.0.2.1:56324", "198.51.100.2:443"},
		{"[2001:db8::1]:1000", "[2001:db8::2]:443"},
	} {
		src, dst := netip.MustParseAddrPort(tt.src), netip.MustParseAddrPort(tt.dst)
		tlvs := []TLV{{PP2TypeALPN, []byte("h2")}, {PP2TypeAuthority, []byte("web.test")}}
		b := AppendProxyV2(nil, src, dst, tlvs)
		h, err := ReadProxyHeader(bufio.NewReader(bytes.NewReader(b)))
		if err != nil {
			t.Fatal(err)
		}
		if h.Src != src || h.Dst != dst || !reflect.DeepEqual(h.TLVs, tlvs) {
			t.Errorf("round trip: %+v", h)
		}
	}
}

// TestProxyProtocolToBackend runs offload with PROXY v2 and a backend that
// parses the header: addresses and the TLS TLVs arrive, then the payload.
func TestProxyProtocolToBackend(t *testing.T) {
	p := newPKI(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	type result struct {
		h    *ProxyHeader
		body string
		err  error
	}
	got := make(chan result, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			got <- result{err: err}
			return
		}
		defer c.Close()
		br := bufio.NewReader(c)
		h, err := ReadProxyHeader(br)
		body, _ := io.ReadAll(br)
		got <- result{h, string(body), err}
	}()

	cfg := listenerConfig(config.ModeOffload, ln.Addr().String())
	cfg.TLS = serverTLSConfig(t, p.web)
	cfg.TLS.NextProtos = []string{"h2"}
	cfg.TLS.ClientAuth = tls.RequireAndVerifyClientCert
	cfg.TLS.ClientCAs = p.ca.Pool()
	cfg.ProxyProtocol = 2
	srv := start(t, cfg, nil)

	cc := clientConfig(p, "web.test")
	cc.NextProtos = []string{"h2"}
	cc.Certificates = []tls.Certificate{p.client.TLSCertificate()}
	c, err := dialTLS(t, srv.addr, cc)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, "payload")
	c.CloseWrite()
	r := <-got
	if r.err != nil {
		t.Fatal(r.err)
	}
	if r.h.Src.String() != c.LocalAddr().String() || r.h.Dst.String() != srv.addr {
		t.Errorf("addresses %v → %v, want %v → %v", r.h.Src, r.h.Dst, c.LocalAddr(), srv.addr)
	}
	if v, _ := r.h.TLV(PP2TypeALPN); string(v) != "h2" {
		t.Errorf("ALPN TLV %q", v)
	}
	if v, _ := r.h.TLV(PP2TypeAuthority); string(v) != "web.test" {
		t.Errorf("authority TLV %q", v)
	}
	if v, _ := r.h.TLV(PP2TypeClientCert); !bytes.Equal(v, p.client.Cert.Raw) {
		t.Error("client certificate TLV missing or wrong")
	}
	client, verify, sub, err := r.h.SSL()
	if err != nil || client != pp2ClientSSL|pp2ClientCertConn || verify != 0 {
		t.Errorf("SSL TLV client=%x verify=%d err=%v", client, verify, err)
	}
	want := map[byte]string{PP2SubtypeSSLVer: "TLSv1.3", PP2SubtypeSSLCN: "alice"}
	for _, s := range sub {
		if w, ok := want[s.Type]; ok && string(s.Value) != w {
			t.Errorf("SSL sub-TLV 0x%02x = %q, want %q", s.Type, s.Value, w)
		}
		delete(want, s.Type)
	}
	if len(want) > 0 {
		t.Errorf("SSL sub-TLVs missing: %v", want)
	}
	if r.body != "payload" {
		t.Errorf("payload %q", r.body)
	}
}

func FuzzReadProxyHeader(f *testing.F) {
	src := netip.MustParseAddrPort("192.0.2.1:56324")
	dst := netip.MustParseAddrPort("198.51.100.2:443")
	f.Add(AppendProxyV1(nil, src, dst))
	f.Add([]byte("PROXY UNKNOWN\r\n"))
	f.Add(AppendProxyV2(nil, src, dst, []TLV{{PP2TypeALPN, []byte("h2")}, {PP2TypeSSL, []byte{1, 0, 0, 0, 0, 0x21, 0, 1, 'x'}}}))
	f.Add(AppendProxyV2(nil, netip.MustParseAddrPort("[::1]:1"), netip.MustParseAddrPort("[::2]:2"), nil))
	f.Fuzz(func(t *testing.T, data []byte) {
		h, err := ReadProxyHeader(bufio.NewReader(bytes.NewReader(data)))
		if err != nil {
			return
		}
		_, _, _, _ = h.SSL()
		// What parses re-encodes to something that parses the same.
		var again []byte
		if h.Version == 1 {
			again = AppendProxyV1(nil, h.Src, h.Dst)
		} else {
			if h.Local {
				return
			}
			again = AppendProxyV2(nil, h.Src, h.Dst, h.TLVs)
		}
		h2, err := ReadProxyHeader(bufio.NewReader(bytes.NewReader(again)))
		if err != nil {
			t.Fatalf("re-encoded header does not parse: %v\n%q", err, again)
		}
		if h2.Src != h.Src || h2.Dst != h.Dst || len(h2.TLVs) != len(h.TLVs) {
			t.Fatalf("round trip changed the header: %+v → %+v", h, h2)
		}
	})
}

// TestAcceptProxyFromTrusted puts the proxy behind a "load balancer" on
// 127.0.0.1: its PROXY v2 header's source reaches the backend (in the
// proxy's own v1 header) and the log; without a header the connection is
// refused.
func TestAcceptProxyFromTrusted(t *testing.T) {
	p := newPKI(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	got := make(chan string, 2)
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
	cfg := listenerConfig(config.ModeOffload, ln.Addr().String())
	cfg.TLS = serverTLSConfig(t, p.web)
	cfg.ProxyProtocol = 1
	cfg.AcceptProxyFrom = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}
	srv := start(t, cfg, nil)

	raw, err := net.Dial("tcp", srv.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	client := netip.MustParseAddrPort("203.0.113.7:4242")
	front := netip.MustParseAddrPort("198.51.100.1:443")
	if _, err := raw.Write(AppendProxyV2(nil, client, front, nil)); err != nil {
		t.Fatal(err)
	}
	c := tls.Client(raw, clientConfig(p, "web.test"))
	if err := c.Handshake(); err != nil {
		t.Fatal(err)
	}
	if line := <-got; line != "PROXY TCP4 203.0.113.7 198.51.100.1 4242 443\r\n" {
		t.Errorf("backend got %q", line)
	}
	c.Close()

	// A trusted source without a header is refused and counted.
	if c, err := dialTLS(t, srv.addr, clientConfig(p, "web.test")); err == nil {
		c.Close()
		t.Fatal("handshake without a PROXY header succeeded")
	}
	// One event, one spelling: the refusal and the close carry the same
	// reason label (and the log line's reason is the close's).
	testenv.Eventually(t, 10*time.Second, "refusal counted", func() bool {
		return counter(srv.metrics.Rejected.WithLabelValues("test", "bad_proxy_header")) == 1 &&
			counter(srv.metrics.Closed.WithLabelValues("test", "bad_proxy_header")) == 1
	})
}
