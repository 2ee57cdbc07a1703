package proxy

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/sealproxy/sealproxy/proxy/config"
	"github.com/sealproxy/sealproxy/testenv"
)

func TestOffload(t *testing.T) {
	p := newPKI(t)
	echo := testenv.StartEcho(t, nil)
	cfg := listenerConfig(config.ModeOffload, echo.Addr)
	cfg.TLS = serverTLSConfig(t, p.web, p.api)
	srv := start(t, cfg, nil)

	for _, tt := range []struct{ sni, wantCN string }{
		{"web.test", "web.test"},
		{"api.test", "api.test"},
		{"x.web.test", "web.test"}, // wildcard
		{"", "web.test"},           // no SNI: the first key
		{"other.test", "web.test"}, // unknown: the first key
	} {
		t.Run("sni="+tt.sni, func(t *testing.T) {
			cc := &tls.Config{RootCAs: p.ca.Pool(), ServerName: tt.sni}
			if tt.sni == "" || tt.sni == "other.test" {
				cc.InsecureSkipVerify = true // the default certificate does not name it
			}
			c, err := dialTLS(t, srv.addr, cc)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if got := c.ConnectionState().PeerCertificates[0].Subject.CommonName; got != tt.wantCN {
				t.Errorf("certificate %q, want %q", got, tt.wantCN)
			}
			if got := roundTrip(t, c, "hello "+tt.sni); got != "hello "+tt.sni {
				t.Errorf("echo = %q", got)
			}
		})
	}
	testenv.Eventually(t, 10*time.Second, "bytes counted", func() bool { return counter(srv.metrics.BytesOut) > 0 })
}

func TestHalfCloseBackendFirst(t *testing.T) {
	p := newPKI(t)
	// The backend speaks first, closes its side, then still reads.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	got := make(chan string, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			got <- err.Error()
			return
		}
		defer c.Close()
		_, _ = io.WriteString(c, "greeting")
		_ = c.(*net.TCPConn).CloseWrite()
		b, _ := io.ReadAll(c)
		got <- string(b)
	}()
	cfg := listenerConfig(config.ModeOffload, ln.Addr().String())
	cfg.TLS = serverTLSConfig(t, p.web)
	srv := start(t, cfg, nil)
	c, err := dialTLS(t, srv.addr, clientConfig(p, "web.test"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	b, err := io.ReadAll(c)
	if err != nil || string(b) != "greeting" {
		t.Fatalf("read %q, %v; want greeting then EOF", b, err)
	}
	// Our write side is still open after the backend's half-close.
	if _, err := io.WriteString(c, "late reply"); err != nil {
		t.Fatal(err)
	}
	closeWrite(t, c)
	if s := <-got; s != "late reply" {
		t.Errorf("backend read %q", s)
	}
}

func TestBridge(t *testing.T) {
	p := newPKI(t)
	backTLS := &tls.Config{
		Certificates: []tls.Certificate{p.backend.TLSCertificate()},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    p.ca.Pool(),
	}
	echo := testenv.StartEcho(t, backTLS)
	cfg := listenerConfig(config.ModeBridge, echo.Addr)
	cfg.TLS = serverTLSConfig(t, p.web)
	proxyClient := p.ca.Client(t, "proxy")
	cfg.Upstream = &tls.Config{
		RootCAs: p.backCA.Pool(), ServerName: "backend.test",
		Certificates: []tls.Certificate{*tlsCert(t, proxyClient)},
	}
	srv := start(t, cfg, nil)
	c, err := dialTLS(t, srv.addr, clientConfig(p, "web.test"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if got := roundTrip(t, c, "through two TLS sessions"); got != "through two TLS sessions" {
		t.Errorf("echo = %q", got)
	}
	if id := <-echo.IDs; id != "proxy" {
		t.Errorf("backend saw client %q, want the proxy's certificate", id)
	}

	t.Run("wrong server name", func(t *testing.T) {
		bad := listenerConfig(config.ModeBridge, echo.Addr)
		bad.TLS = serverTLSConfig(t, p.web)
		bad.Upstream = &tls.Config{RootCAs: p.backCA.Pool(), ServerName: "other.test"}
		srv := start(t, bad, nil)
		c, err := dialTLS(t, srv.addr, clientConfig(p, "web.test"))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if b, err := io.ReadAll(c); err == nil && len(b) > 0 {
			t.Fatalf("relayed %q to an unverified backend", b)
		}
		if got := counter(srv.metrics.BackendErrors); got != 1 {
			t.Errorf("backend errors = %v, want 1", got)
		}
	})
}

func TestEncrypt(t *testing.T) {
	p := newPKI(t)
	backTLS := &tls.Config{Certificates: []tls.Certificate{p.backend.TLSCertificate()}}
	echo := testenv.StartEcho(t, backTLS)
	cfg := listenerConfig(config.ModeEncrypt, echo.Addr)
	cfg.Upstream = &tls.Config{RootCAs: p.backCA.Pool(), ServerName: "backend.test"}
	srv := start(t, cfg, nil)
	c, err := net.Dial("tcp", srv.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if got := roundTrip(t, c, "plain in, TLS out"); got != "plain in, TLS out" {
		t.Errorf("echo = %q", got)
	}
}

func TestConnect(t *testing.T) {
	p := newPKI(t)
	echo := testenv.StartEcho(t, nil)
	cfg := listenerConfig(config.ModeConnect)
	cfg.TLS = serverTLSConfig(t, p.web)
	cfg.TLS.ClientAuth = tls.RequireAndVerifyClientCert
	cfg.TLS.ClientCAs = p.ca.Pool()
	_, echoPort, _ := net.SplitHostPort(echo.Addr)
	cfg.ConnectAllow = []string{"127.0.0.1:" + echoPort}
	srv := start(t, cfg, nil)

	withCert := clientConfig(p, "web.test")
	withCert.Certificates = []tls.Certificate{p.client.TLSCertificate()}

	t.Run("allowed", func(t *testing.T) {
		c, err := dialTLS(t, srv.addr, withCert)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		// The first payload bytes ride with the request.
		fmt.Fprintf(c, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\nearly ", echo.Addr, echo.Addr)
		br := bufio.NewReader(c)
		status, err := br.ReadString('\n')
		if err != nil || !strings.HasPrefix(status, "HTTP/1.1 200") {
			t.Fatalf("status %q, %v", status, err)
		}
		if blank, _ := br.ReadString('\n'); blank != "\r\n" {
			t.Fatalf("header end %q", blank)
		}
		io.WriteString(c, "bytes")
		closeWrite(t, c)
		rest, err := io.ReadAll(br)
		if err != nil || string(rest) != "early bytes" {
			t.Fatalf("tunnel echo %q, %v", rest, err)
		}
	})
	t.Run("not in allow-list", func(t *testing.T) {
		c, err := dialTLS(t, srv.addr, withCert)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		fmt.Fprintf(c, "CONNECT 127.0.0.1:1 HTTP/1.1\r\n\r\n")
		status, _ := bufio.NewReader(c).ReadString('\n')
		if !strings.HasPrefix(status, "HTTP/1.1 403") {
			t.Fatalf("status %q, want 403", status)
		}
	})
	t.Run("no client certificate", func(t *testing.T) {
		c, err := dialTLS(t, srv.addr, clientConfig(p, "web.test"))
		if err == nil {
			// TLS 1.3: the server's refusal arrives with the first read.
			_, err = c.Read(make([]byte, 1))
			c.Close()
		}
		if err == nil {
			t.Fatal("tunnel opened without a client certificate")
		}
	})
}

func TestClientAllowRules(t *testing.T) {
	p := newPKI(t)
	echo := testenv.StartEcho(t, nil)
	cfg := listenerConfig(config.ModeOffload, echo.Addr)
	cfg.TLS = serverTLSConfig(t, p.web)
	cfg.TLS.ClientAuth = tls.RequireAndVerifyClientCert
	cfg.TLS.ClientCAs = p.ca.Pool()
	rules := &AllowRules{CN: []string{"alice"}}
	cfg.TLS.VerifyConnection = rules.VerifyConnection()
	srv := start(t, cfg, nil)

	try := func(leaf tls.Certificate) error {
		cc := clientConfig(p, "web.test")
		cc.Certificates = []tls.Certificate{leaf}
		c, err := dialTLS(t, srv.addr, cc)
		if err != nil {
			return err
		}
		defer c.Close()
		if _, err := io.WriteString(c, "hi"); err != nil {
			return err
		}
		if err := c.CloseWrite(); err != nil {
			return err
		}
		got, err := io.ReadAll(c)
		if err != nil {
			return err
		}
		if string(got) != "hi" {
			return fmt.Errorf("echo %q: %w", got, errUnexpected)
		}
		return nil
	}
	if err := try(p.client.TLSCertificate()); err != nil {
		t.Errorf("alice refused: %v", err)
	}
	bob := p.ca.Client(t, "bob")
	if err := try(bob.TLSCertificate()); err == nil {
		t.Error("bob accepted")
	}
	testenv.Eventually(t, 10*time.Second, "client_denied counted", func() bool {
		return counter(srv.metrics.HandshakeErrors.WithLabelValues("test", "client_denied")) == 1
	})
}

func TestHandshakeTimeoutFreesSlot(t *testing.T) {
	p := newPKI(t)
	echo := testenv.StartEcho(t, nil)
	cfg := listenerConfig(config.ModeOffload, echo.Addr)
	cfg.TLS = serverTLSConfig(t, p.web)
	cfg.MaxConns = 1
	cfg.HandshakeTimeout = 200 * time.Millisecond
	srv := start(t, cfg, nil)

	silent, err := net.Dial("tcp", srv.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	// The silent client is cut at the handshake deadline...
	if _, err := silent.Read(make([]byte, 1)); err == nil {
		t.Fatal("silent client got data")
	}
	testenv.Eventually(t, 10*time.Second, "timeout counted", func() bool {
		return counter(srv.metrics.HandshakeErrors.WithLabelValues("test", "timeout")) == 1
	})
	// ...and its slot is free again. (A patient deadline from here on, so
	// that a slow machine cannot fail the real client's handshake.)
	testenv.Eventually(t, 10*time.Second, "slot released", func() bool { return srv.local.InUse() == 0 })
	patient := *cfg
	patient.HandshakeTimeout = time.Minute
	if err := srv.Update(&patient); err != nil {
		t.Fatal(err)
	}
	c, err := dialTLS(t, srv.addr, clientConfig(p, "web.test"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if got := roundTrip(t, c, "after"); got != "after" {
		t.Errorf("echo = %q", got)
	}
}

func TestLimitRefuses(t *testing.T) {
	p := newPKI(t)
	echo := testenv.StartEcho(t, nil)
	cfg := listenerConfig(config.ModeOffload, echo.Addr)
	cfg.TLS = serverTLSConfig(t, p.web)
	cfg.MaxConns = 1
	global := NewLimiter(10)
	srv := start(t, cfg, &Options{Global: global})

	first, err := dialTLS(t, srv.addr, clientConfig(p, "web.test"))
	if err != nil {
		t.Fatal(err)
	}
	defer first.Close()
	echoOnce(t, first, bufio.NewReader(first), "holding the slot")

	second, err := dialTLS(t, srv.addr, clientConfig(p, "web.test"))
	if err == nil {
		_, err = second.Read(make([]byte, 1))
		second.Close()
	}
	if err == nil {
		t.Fatal("second connection served above the limit")
	}
	if got := counter(srv.metrics.Rejected.WithLabelValues("test", "listener_limit")); got != 1 {
		t.Errorf("rejected = %v, want 1", got)
	}
	if global.InUse() != 1 {
		t.Errorf("global slots in use = %d, want 1", global.InUse())
	}
}

func TestBackendFailover(t *testing.T) {
	p := newPKI(t)
	dead, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadAddr := dead.Addr().String()
	dead.Close() // nothing listens here now: connection refused
	echo := testenv.StartEcho(t, nil)
	cfg := listenerConfig(config.ModeOffload, deadAddr, echo.Addr)
	cfg.TLS = serverTLSConfig(t, p.web)
	srv := start(t, cfg, nil)
	for i := 0; i < 2; i++ {
		c, err := dialTLS(t, srv.addr, clientConfig(p, "web.test"))
		if err != nil {
			t.Fatal(err)
		}
		if got := roundTrip(t, c, "failover"); got != "failover" {
			t.Errorf("echo = %q", got)
		}
		c.Close()
	}
	if got := counter(srv.metrics.BackendErrors.WithLabelValues("test", deadAddr)); got != 2 {
		t.Errorf("dial errors = %v, want 2", got)
	}
}

func TestRoundRobin(t *testing.T) {
	p := newPKI(t)
	var addrs []string
	seen := make(chan string, 10)
	for _, name := range []string{"a", "b"} {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		addrs = append(addrs, ln.Addr().String())
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				seen <- name
				io.WriteString(c, name)
				c.Close()
			}
		}()
	}
	cfg := listenerConfig(config.ModeOffload, addrs...)
	cfg.RoundRobin = true
	cfg.TLS = serverTLSConfig(t, p.web)
	srv := start(t, cfg, nil)
	got := map[string]int{}
	for i := 0; i < 4; i++ {
		c, err := dialTLS(t, srv.addr, clientConfig(p, "web.test"))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(c)
		c.Close()
		got[string(b)]++
	}
	if got["a"] != 2 || got["b"] != 2 {
		t.Errorf("round robin spread %v, want 2 each", got)
	}
}

func TestUnixBackend(t *testing.T) {
	p := newPKI(t)
	path := t.TempDir() + "/b.sock"
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Skipf("unix sockets: %v", err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		io.Copy(c, c)
		c.(*net.UnixConn).CloseWrite()
		c.Close()
	}()
	cfg := listenerConfig(config.ModeOffload, "unix:"+path)
	cfg.TLS = serverTLSConfig(t, p.web)
	srv := start(t, cfg, nil)
	c, err := dialTLS(t, srv.addr, clientConfig(p, "web.test"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if got := roundTrip(t, c, "via unix"); got != "via unix" {
		t.Errorf("echo = %q", got)
	}
}

func TestIdleTimeout(t *testing.T) {
	p := newPKI(t)
	echo := testenv.StartEcho(t, nil)
	cfg := listenerConfig(config.ModeOffload, echo.Addr)
	cfg.TLS = serverTLSConfig(t, p.web)
	cfg.IdleTimeout = 200 * time.Millisecond
	srv := start(t, cfg, nil)
	c, err := dialTLS(t, srv.addr, clientConfig(p, "web.test"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// One exchange, then silence; on a slow machine the timeout may even
	// strike before the exchange, which is no failure of the proxy.
	br := bufio.NewReader(c)
	io.WriteString(c, "then silence\n")
	br.ReadString('\n')
	// The proxy must close the connection long before this deadline; a
	// proxy that never does fails here instead of hanging the test.
	c.SetReadDeadline(time.Now().Add(20 * time.Second))
	if _, err := br.ReadByte(); err == nil {
		t.Fatal("idle connection got data")
	} else if errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatal("the proxy did not close the idle connection")
	}
	testenv.Eventually(t, 10*time.Second, "idle close counted", func() bool {
		return counter(srv.metrics.Closed.WithLabelValues("test", string(reasonIdleTimeout))) == 1
	})
}

func TestMaxLifetime(t *testing.T) {
	p := newPKI(t)
	echo := testenv.StartEcho(t, nil)
	cfg := listenerConfig(config.ModeOffload, echo.Addr)
	cfg.TLS = serverTLSConfig(t, p.web)
	cfg.MaxLifetime = 300 * time.Millisecond
	srv := start(t, cfg, nil)
	// A busy connection: the client keeps talking until the proxy cuts it.
	// (On a slow machine the cut may come during the handshake.)
	if c, err := dialTLS(t, srv.addr, clientConfig(p, "web.test")); err == nil {
		defer c.Close()
		br := bufio.NewReader(c)
		for {
			if _, err := io.WriteString(c, "busy\n"); err != nil {
				break
			}
			if _, err := br.ReadString('\n'); err != nil {
				break
			}
		}
	}
	testenv.Eventually(t, 10*time.Second, "lifetime close counted", func() bool {
		return counter(srv.metrics.Closed.WithLabelValues("test", string(reasonMaxLifetime))) == 1
	})
}

func TestUpdateKeepsOpenConnections(t *testing.T) {
	p := newPKI(t)
	echo := testenv.StartEcho(t, nil)
	cfg := listenerConfig(config.ModeOffload, echo.Addr)
	cfg.TLS = serverTLSConfig(t, p.web)
	srv := start(t, cfg, nil)

	old, err := dialTLS(t, srv.addr, clientConfig(p, "web.test"))
	if err != nil {
		t.Fatal(err)
	}
	defer old.Close()
	br := bufio.NewReader(old)
	echoOnce(t, old, br, "before")

	renewed := p.ca.Server(t, "web.test")
	next := listenerConfig(config.ModeOffload, echo.Addr)
	next.TLS = serverTLSConfig(t, renewed)
	if err := srv.Update(next); err != nil {
		t.Fatal(err)
	}
	bad := listenerConfig(config.ModeOffload) // no backend
	bad.TLS = next.TLS
	if err := srv.Update(bad); err == nil {
		t.Fatal("Update accepted a listener without backends")
	}
	echoOnce(t, old, br, "after")
	c, err := dialTLS(t, srv.addr, clientConfig(p, "web.test"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if got := c.ConnectionState().PeerCertificates[0].SerialNumber; got.Cmp(renewed.Cert.SerialNumber) != 0 {
		t.Errorf("new connection got serial %v, want the renewed %v", got, renewed.Cert.SerialNumber)
	}
}

func TestDrain(t *testing.T) {
	p := newPKI(t)
	echo := testenv.StartEcho(t, nil)
	cfg := listenerConfig(config.ModeOffload, echo.Addr)
	cfg.TLS = serverTLSConfig(t, p.web)

	t.Run("waits for open connections", func(t *testing.T) {
		srv := start(t, cfg, nil)
		c, err := dialTLS(t, srv.addr, clientConfig(p, "web.test"))
		if err != nil {
			t.Fatal(err)
		}
		br := bufio.NewReader(c)
		echoOnce(t, c, br, "open")
		srv.cancel()
		// No new connections once draining.
		testenv.Eventually(t, 10*time.Second, "listener closed", func() bool {
			c, err := net.Dial("tcp", srv.addr)
			if err == nil {
				c.Close()
			}
			return err != nil
		})
		select {
		case err := <-srv.done:
			t.Fatalf("Serve returned (%v) with a connection open", err)
		default:
		}
		echoOnce(t, c, br, "still served while draining")
		closeWrite(t, c)
		io.ReadAll(br)
		c.Close()
		if err := <-srv.done; err != nil {
			t.Fatal(err)
		}
		srv.done <- nil
	})
	t.Run("bounded by the shutdown timeout", func(t *testing.T) {
		srv := start(t, cfg, &Options{ShutdownTimeout: 100 * time.Millisecond})
		c, err := dialTLS(t, srv.addr, clientConfig(p, "web.test"))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		echoOnce(t, c, bufio.NewReader(c), "open")
		srv.cancel()
		if err := <-srv.done; err != nil {
			t.Fatal(err)
		}
		srv.done <- nil
		if got := counter(srv.metrics.Closed.WithLabelValues("test", string(reasonShutdown))); got != 1 {
			t.Errorf("closed by shutdown = %v, want 1", got)
		}
	})
}

func TestAllowRules(t *testing.T) {
	p := newPKI(t)
	leaf := p.ca.Issue(t, testenv.LeafOptions{CN: "svc", DNS: []string{"svc.prod.example.com"}, URIs: []string{"spiffe://example.com/ns/prod/svc"}, OU: []string{"payments"}, Client: true})
	pin := SPKIPin(leaf.Cert)
	pinBytes, _ := ParseSPKIPin(pin)
	for _, tt := range []struct {
		name  string
		rules AllowRules
		want  bool
	}{
		{"no rules", AllowRules{}, true},
		{"cn", AllowRules{CN: []string{"svc"}}, true},
		{"cn other", AllowRules{CN: []string{"alice"}}, false},
		{"dns wildcard", AllowRules{DNS: []string{"*.prod.example.com"}}, true},
		{"dns wildcard one label only", AllowRules{DNS: []string{"*.example.com"}}, false},
		{"uri prefix", AllowRules{URI: []string{"spiffe://example.com/ns/prod/*"}}, true},
		{"uri exact other", AllowRules{URI: []string{"spiffe://example.com/ns/dev/svc"}}, false},
		{"ou", AllowRules{OU: []string{"payments"}}, true},
		{"spki", AllowRules{SPKI: [][32]byte{pinBytes}}, true},
		{"spki other", AllowRules{SPKI: [][32]byte{{1}}}, false},
	} {
		if got := tt.rules.Allowed(leaf.Cert); got != tt.want {
			t.Errorf("%s: Allowed = %v, want %v", tt.name, got, tt.want)
		}
	}
}

func TestNewCertificateKeyMismatch(t *testing.T) {
	p := newPKI(t)
	_, err := NewCertificate("web", p.web.Chain, p.api.Key)
	if err == nil || !strings.Contains(err.Error(), `key "web"`) || !strings.Contains(err.Error(), "does not match") {
		t.Fatalf("err = %v", err)
	}
}

func TestServeContextStopsAccept(t *testing.T) {
	p := newPKI(t)
	echo := testenv.StartEcho(t, nil)
	cfg := listenerConfig(config.ModeOffload, echo.Addr)
	cfg.TLS = serverTLSConfig(t, p.web)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s, err := NewServer(ln, cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := s.Serve(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestEncryptThenConnect chains the two halves of seed 001: a local
// encrypt listener (plain in, mTLS out with the proxy's client
// certificate) forwards a browser's CONNECT through the tunnel to a
// connect listener, which checks it and relays to the destination.
func TestEncryptThenConnect(t *testing.T) {
	p := newPKI(t)
	echo := testenv.StartEcho(t, nil)
	far := listenerConfig(config.ModeConnect)
	far.TLS = serverTLSConfig(t, p.web)
	far.TLS.ClientAuth = tls.RequireAndVerifyClientCert
	far.TLS.ClientCAs = p.ca.Pool()
	far.ConnectAllow = []string{"127.0.0.1:*"}
	farSrv := start(t, far, nil)

	near := listenerConfig(config.ModeEncrypt, farSrv.addr)
	near.Upstream = &tls.Config{RootCAs: p.ca.Pool(), ServerName: "web.test",
		Certificates: []tls.Certificate{*tlsCert(t, p.client)}}
	nearSrv := start(t, near, nil)

	c, err := net.Dial("tcp", nearSrv.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintf(c, "CONNECT %s HTTP/1.1\r\n\r\n", echo.Addr)
	br := bufio.NewReader(c)
	status, err := br.ReadString('\n')
	if err != nil || !strings.HasPrefix(status, "HTTP/1.1 200") {
		t.Fatalf("status %q, %v", status, err)
	}
	br.ReadString('\n')
	io.WriteString(c, "end to end through the tunnel")
	closeWrite(t, c)
	rest, err := io.ReadAll(br)
	if err != nil || string(rest) != "end to end through the tunnel" {
		t.Fatalf("echo %q, %v", rest, err)
	}
	testenv.Eventually(t, 10*time.Second, "tunnel logged", func() bool {
		return counter(farSrv.metrics.Closed.WithLabelValues("test", string(reasonClientClosed))) == 1
	})
}

// flakyListener fails its first Accepts, as a listener out of file
// descriptors does.
type flakyListener struct {
	net.Listener
	fails atomic.Int32
}

var errEMFILE = errors.New("accept: too many open files")

func (l *flakyListener) Accept() (net.Conn, error) {
	if l.fails.Add(-1) >= 0 {
		return nil, errEMFILE
	}
	return l.Listener.Accept()
}

func TestAcceptErrorsBackOff(t *testing.T) {
	p := newPKI(t)
	echo := testenv.StartEcho(t, nil)
	cfg := listenerConfig(config.ModeOffload, echo.Addr)
	cfg.TLS = serverTLSConfig(t, p.web)
	cfg.MaxConns = 1
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln := &flakyListener{Listener: inner}
	ln.fails.Store(3)
	s, err := NewServer(ln, cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx) }()
	c, err := dialTLS(t, inner.Addr().String(), clientConfig(p, "web.test"))
	if err != nil {
		t.Fatal(err)
	}
	if got := roundTrip(t, c, "after accept errors"); got != "after accept errors" {
		t.Errorf("echo = %q", got)
	}
	c.Close()
	if ln.fails.Load() >= 0 {
		t.Error("the listener's errors were not all seen")
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	// Slots taken for failed Accepts were given back.
	if n := s.local.InUse(); n != 0 {
		t.Errorf("%d slots still taken", n)
	}
}

// TestCloseTimeout: after the backend half-closes, a client that neither
// closes nor sends is cut after close_timeout, not idle_timeout.
func TestCloseTimeout(t *testing.T) {
	p := newPKI(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		io.WriteString(c, "bye")
		c.(*net.TCPConn).CloseWrite()
		io.Copy(io.Discard, c)
	}()
	cfg := listenerConfig(config.ModeOffload, ln.Addr().String())
	cfg.TLS = serverTLSConfig(t, p.web)
	cfg.CloseTimeout = 200 * time.Millisecond
	srv := start(t, cfg, nil)
	c, err := dialTLS(t, srv.addr, clientConfig(p, "web.test"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if b, err := io.ReadAll(c); err != nil || string(b) != "bye" {
		t.Fatalf("read %q, %v", b, err)
	}
	testenv.Eventually(t, 10*time.Second, "close_timeout", func() bool {
		return counter(srv.metrics.Closed.WithLabelValues("test", string(reasonCloseTimeout))) == 1
	})
}

func TestZeroTimeoutsMeanDefaults(t *testing.T) {
	p := newPKI(t)
	echo := testenv.StartEcho(t, nil)
	cfg := &ListenerConfig{Name: "test", Mode: config.ModeOffload, TLS: serverTLSConfig(t, p.web),
		Backends: []Backend{ParseBackend(echo.Addr)}}
	srv := start(t, cfg, nil)
	c, err := dialTLS(t, srv.addr, clientConfig(p, "web.test"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if got := roundTrip(t, c, "defaults"); got != "defaults" {
		t.Errorf("echo = %q", got)
	}
	if srv.Config().IdleTimeout != 5*time.Minute {
		t.Errorf("idle timeout %v", srv.Config().IdleTimeout)
	}
}

// TestBridgeResumesUpstreamAndBackendSpeaksFirst: the second upstream
// handshake resumes the first's session (tickets drained during setup),
// and a greeting the backend sends right after its handshake reaches
// the client.
func TestBridgeResumesUpstreamAndBackendSpeaksFirst(t *testing.T) {
	p := newPKI(t)
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{p.backend.TLSCertificate()}})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	resumed := make(chan bool, 2)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				tc := c.(*tls.Conn)
				if err := tc.Handshake(); err != nil {
					return
				}
				resumed <- tc.ConnectionState().DidResume
				io.WriteString(tc, "greeting\n")
				io.Copy(tc, tc)
				tc.CloseWrite()
			}()
		}
	}()
	cfg := listenerConfig(config.ModeBridge, ln.Addr().String())
	cfg.TLS = serverTLSConfig(t, p.web)
	cfg.Upstream = &tls.Config{RootCAs: p.backCA.Pool(), ServerName: "backend.test",
		ClientSessionCache: tls.NewLRUClientSessionCache(4)}
	srv := start(t, cfg, nil)
	for i, wantResumed := range []bool{false, true} {
		c, err := dialTLS(t, srv.addr, clientConfig(p, "web.test"))
		if err != nil {
			t.Fatal(err)
		}
		br := bufio.NewReader(c)
		if g, err := br.ReadString('\n'); err != nil || g != "greeting\n" {
			t.Fatalf("connection %d: greeting %q, %v", i, g, err)
		}
		echoOnce(t, c, br, "after the greeting")
		c.Close()
		if got := <-resumed; got != wantResumed {
			t.Errorf("connection %d: upstream resumed = %v, want %v", i, got, wantResumed)
		}
	}
}

// TestConnectInternalDestinations: a name that an allow entry matches
// but that resolves to loopback ("localhost", matched by the wildcard
// entry "localhost:*") is refused with 403 after resolution, and the
// backend sees nothing; an entry naming 127.0.0.1 literally permits it.
func TestConnectInternalDestinations(t *testing.T) {
	p := newPKI(t)
	echo := testenv.StartEcho(t, nil)
	_, echoPort, _ := net.SplitHostPort(echo.Addr)
	withCert := clientConfig(p, "web.test")
	withCert.Certificates = []tls.Certificate{p.client.TLSCertificate()}
	connect := func(allow []string, dest string) string {
		t.Helper()
		cfg := listenerConfig(config.ModeConnect)
		cfg.TLS = serverTLSConfig(t, p.web)
		cfg.TLS.ClientAuth = tls.RequireAndVerifyClientCert
		cfg.TLS.ClientCAs = p.ca.Pool()
		cfg.ConnectAllow = allow
		srv := start(t, cfg, nil)
		c, err := dialTLS(t, srv.addr, withCert)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		fmt.Fprintf(c, "CONNECT %s HTTP/1.1\r\n\r\n", dest)
		c.SetDeadline(time.Now().Add(5 * time.Second))
		status, _ := bufio.NewReader(c).ReadString('\n')
		return status
	}
	localhost := "localhost:" + echoPort
	if status := connect([]string{"localhost:*"}, localhost); !strings.HasPrefix(status, "HTTP/1.1 403") {
		t.Errorf("CONNECT %s under localhost:* = %q, want 403", localhost, status)
	}
	if status := connect([]string{"*.example.com:*", "localhost:" + echoPort}, localhost); !strings.HasPrefix(status, "HTTP/1.1 403") {
		t.Errorf("CONNECT %s under an exact name = %q, want 403", localhost, status)
	}
	if status := connect([]string{"localhost:*", "127.0.0.1:" + echoPort}, localhost); !strings.HasPrefix(status, "HTTP/1.1 200") {
		t.Errorf("CONNECT %s with 127.0.0.1 listed = %q, want 200", localhost, status)
	}
	if status := connect([]string{"127.0.0.1:*"}, echo.Addr); !strings.HasPrefix(status, "HTTP/1.1 200") {
		t.Errorf("CONNECT %s under 127.0.0.1:* = %q, want 200", echo.Addr, status)
	}
}

func TestCheckConnectAddr(t *testing.T) {
	allow := []string{"*.example.com:*", "127.0.0.1:6379", "[::1]:*"}
	for addr, ok := range map[string]bool{
		"192.0.2.10:443":          true,
		"127.0.0.1:6379":          true,
		"127.0.0.1:22":            false,
		"127.0.0.2:6379":          false,
		"[::1]:22":                true,
		"[::ffff:127.0.0.1]:6379": true,
		"[::ffff:127.0.0.1]:22":   false,
		"169.254.169.254:80":      false,
		"169.254.1.1:80":          false,
		"[fe80::1%eth0]:80":       false,
		"0.0.0.0:80":              false,
		"0.1.2.3:80":              false,
		"[::]:80":                 false,
		"[fd00:ec2::254]:80":      false,
		"[64:ff9b::a9fe:a9fe]:80": false,
		"224.0.0.1:80":            false,
		"[2001:db8::1]:443":       true,
		"not an address":          false,
	} {
		err := checkConnectAddr(allow, addr)
		if (err == nil) != ok || (err != nil && !errors.Is(err, errForbiddenDestination)) {
			t.Errorf("checkConnectAddr(%q) = %v, want allowed %v", addr, err, ok)
		}
	}
}

// TestConnectMetricsBounded: failed CONNECTs to many destinations count
// under the allow entry they matched, not under each destination.
func TestConnectMetricsBounded(t *testing.T) {
	p := newPKI(t)
	cfg := listenerConfig(config.ModeConnect)
	cfg.TLS = serverTLSConfig(t, p.web)
	cfg.TLS.ClientAuth = tls.RequireAndVerifyClientCert
	cfg.TLS.ClientCAs = p.ca.Pool()
	cfg.ConnectAllow = []string{"*.example.com:443", "127.0.0.1:*"}
	srv := start(t, cfg, nil)
	withCert := clientConfig(p, "web.test")
	withCert.Certificates = []tls.Certificate{p.client.TLSCertificate()}
	for range 5 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		closed := ln.Addr().String() // nothing listens there once closed
		ln.Close()
		c, err := dialTLS(t, srv.addr, withCert)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(c, "CONNECT %s HTTP/1.1\r\n\r\n", closed)
		c.SetDeadline(time.Now().Add(5 * time.Second))
		status, _ := bufio.NewReader(c).ReadString('\n')
		c.Close()
		if !strings.HasPrefix(status, "HTTP/1.1 502") {
			t.Fatalf("CONNECT %s = %q, want 502", closed, status)
		}
	}
	if n := testutil.CollectAndCount(srv.metrics.BackendErrors); n != 1 {
		t.Errorf("%d backend error series, want 1", n)
	}
	if got := counter(srv.metrics.BackendErrors.WithLabelValues("test", "127.0.0.1:*")); got != 5 {
		t.Errorf("backend errors under 127.0.0.1:* = %v, want 5", got)
	}
}
