package proxy

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sealproxy/sealproxy/proxy/config"
	"github.com/sealproxy/sealproxy/testenv"
)

func TestGroupReloadUnderTraffic(t *testing.T) {
	p := newPKI(t)
	echo := testenv.StartEcho(t, nil)
	mk := func(name string, leaf *testenv.Leaf) *ListenerConfig {
		lc := listenerConfig(config.ModeOffload, echo.Addr)
		lc.Name, lc.Listen = name, "127.0.0.1:0"
		lc.TLS = serverTLSConfig(t, leaf)
		return lc
	}
	var (
		mu      sync.Mutex
		plan    = &Plan{Listeners: []*ListenerConfig{mk("a", p.web)}}
		loadErr error
	)
	set := func(pl *Plan, err error) {
		mu.Lock()
		plan, loadErr = pl, err
		mu.Unlock()
	}
	loader := func(context.Context) (*Plan, error) {
		mu.Lock()
		defer mu.Unlock()
		return plan, loadErr
	}
	reg := prometheus.NewRegistry()
	m := NewMetrics(reg)
	g := NewGroup(loader, &Options{Metrics: m, Log: slog.New(slog.NewTextHandler(testWriter{t}, nil))})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- g.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()
	testenv.Eventually(t, 10*time.Second, "ready", g.Ready)
	addrA := g.Addr("a").String()

	// Traffic: one long-lived connection echoing and a stream of new
	// connections, all through every reload below; none may fail.
	long, err := dialTLS(t, addrA, clientConfig(p, "web.test"))
	if err != nil {
		t.Fatal(err)
	}
	defer long.Close()
	stop := make(chan struct{})
	trafficErr := make(chan error, 1)
	go func() {
		br := bufio.NewReader(long)
		for i := 0; ; i++ {
			select {
			case <-stop:
				trafficErr <- nil
				return
			default:
			}
			line := fmt.Sprintf("line %d\n", i)
			if _, err := io.WriteString(long, line); err != nil {
				trafficErr <- fmt.Errorf("long-lived connection: write: %w", err)
				return
			}
			if got, err := br.ReadString('\n'); err != nil || got != line {
				trafficErr <- fmt.Errorf("long-lived connection: read %q, %v", got, err)
				return
			}
			c, err := dialTLS(t, addrA, clientConfig(p, "web.test"))
			if err != nil {
				trafficErr <- fmt.Errorf("new connection %d: %w", i, err)
				return
			}
			io.WriteString(c, line)
			c.CloseWrite()
			got, err := io.ReadAll(c)
			c.Close()
			if err != nil || string(got) != line {
				trafficErr <- fmt.Errorf("new connection %d: echo %q, %v", i, got, err)
				return
			}
		}
	}()

	// 1. Renew a's certificate and add b.
	renewed := p.ca.Server(t, "web.test")
	set(&Plan{Listeners: []*ListenerConfig{mk("a", renewed), mk("b", p.api)}}, nil)
	if err := g.Reload(ctx); err != nil {
		t.Fatal(err)
	}
	if g.Addr("a").String() != addrA {
		t.Fatalf("listener a moved to %v", g.Addr("a"))
	}
	addrB := g.Addr("b").String()
	c, err := dialTLS(t, addrA, clientConfig(p, "web.test"))
	if err != nil {
		t.Fatal(err)
	}
	if got := c.ConnectionState().PeerCertificates[0].SerialNumber; got.Cmp(renewed.Cert.SerialNumber) != 0 {
		t.Errorf("a serves serial %v after reload, want %v", got, renewed.Cert.SerialNumber)
	}
	c.Close()
	c, err = dialTLS(t, addrB, clientConfig(p, "api.test"))
	if err != nil {
		t.Fatalf("new listener b: %v", err)
	}
	c.Close()

	// 2-4. Failed reloads change nothing.
	errBad := errors.New("bad configuration")
	set(nil, errBad)
	if err := g.Reload(ctx); !errors.Is(err, errBad) {
		t.Fatalf("Reload = %v, want the loader's error", err)
	}
	noBackend := mk("b", p.api)
	noBackend.Backends = nil
	set(&Plan{Listeners: []*ListenerConfig{mk("a", renewed), noBackend}}, nil)
	if err := g.Reload(ctx); err == nil || !strings.Contains(err.Error(), "no backend") {
		t.Fatalf("Reload = %v, want a refusal naming the missing backend", err)
	}
	clash := mk("c", p.api)
	clash.Listen = addrA
	set(&Plan{Listeners: []*ListenerConfig{mk("a", p.web), mk("b", p.api), clash}}, nil)
	if err := g.Reload(ctx); err == nil {
		t.Fatal("Reload opened a second listener on a's address")
	}
	if g.Addr("c") != nil {
		t.Fatal("failed reload left listener c behind")
	}
	c, err = dialTLS(t, addrA, clientConfig(p, "web.test"))
	if err != nil {
		t.Fatal(err)
	}
	if got := c.ConnectionState().PeerCertificates[0].SerialNumber; got.Cmp(renewed.Cert.SerialNumber) != 0 {
		t.Errorf("failed reload changed a's certificate")
	}
	c.Close()

	// 5. Remove b.
	set(&Plan{Listeners: []*ListenerConfig{mk("a", renewed)}}, nil)
	if err := g.Reload(ctx); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 10*time.Second, "b closed", func() bool {
		c, err := net.Dial("tcp", addrB)
		if err == nil {
			c.Close()
		}
		return err != nil
	})

	close(stop)
	if err := <-trafficErr; err != nil {
		t.Fatal(err)
	}
	if got := counter(m.Reloads.WithLabelValues("success")); got != 2 {
		t.Errorf("successful reloads = %v, want 2", got)
	}
	if got := counter(m.Reloads.WithLabelValues("failure")); got != 3 {
		t.Errorf("failed reloads = %v, want 3", got)
	}

	// The admin endpoints see the same state.
	h := AdminHandler(reg, g.Ready, nil)
	for path, want := range map[string]string{
		"/healthz": "ok",
		"/readyz":  "ready",
		"/metrics": `sealproxy_reloads_total{result="success"} 2`,
	} {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
		if rec.Code != 200 || !strings.Contains(rec.Body.String(), want) {
			t.Errorf("GET %s = %d %q, want %q", path, rec.Code, rec.Body.String(), want)
		}
	}
}

func TestGroupPlanCallbacks(t *testing.T) {
	p := newPKI(t)
	echo := testenv.StartEcho(t, nil)
	good := listenerConfig(config.ModeOffload, echo.Addr)
	good.Listen = "127.0.0.1:0"
	good.TLS = serverTLSConfig(t, p.web)
	bad := listenerConfig(config.ModeOffload) // no backend: refused by apply
	bad.Listen = "127.0.0.1:0"
	bad.TLS = good.TLS
	var applied, discarded int
	next := good
	g := NewGroup(func(context.Context) (*Plan, error) {
		return &Plan{Listeners: []*ListenerConfig{next},
			Applied: func() { applied++ }, Discarded: func() { discarded++ }}, nil
	}, nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- g.Run(ctx) }()
	testenv.Eventually(t, 10*time.Second, "ready", g.Ready)
	next = bad
	if err := g.Reload(ctx); err == nil {
		t.Fatal("bad plan applied")
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if applied != 1 || discarded != 1 {
		t.Errorf("applied %d, discarded %d; want 1 and 1", applied, discarded)
	}
}

// TestGroupUnixListenerAndGlobalLimit: a listener on a unix socket (a
// stale socket file from a dead process is replaced), and the global
// bound shared by two listeners.
func TestGroupUnixListenerAndGlobalLimit(t *testing.T) {
	p := newPKI(t)
	echo := testenv.StartEcho(t, nil)
	sock := filepath.Join(t.TempDir(), "web.sock")
	stale, err := net.Listen("unix", sock)
	if err != nil {
		t.Skipf("unix sockets: %v", err)
	}
	stale.(*net.UnixListener).SetUnlinkOnClose(false)
	stale.Close() // the file stays, nobody answers

	a := listenerConfig(config.ModeOffload, echo.Addr)
	a.Name, a.Listen, a.TLS = "a", "unix:"+sock, serverTLSConfig(t, p.web)
	b := listenerConfig(config.ModeOffload, echo.Addr)
	b.Name, b.Listen, b.TLS = "b", "127.0.0.1:0", serverTLSConfig(t, p.web)
	m := NewMetrics(prometheus.NewRegistry())
	g := NewGroup(func(context.Context) (*Plan, error) {
		return &Plan{Listeners: []*ListenerConfig{a, b}, MaxConns: 1}, nil
	}, &Options{Metrics: m})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- g.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	testenv.Eventually(t, 10*time.Second, "ready", g.Ready)

	raw, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	held := tls.Client(raw, clientConfig(p, "web.test"))
	defer held.Close()
	echoOnce(t, held, bufio.NewReader(held), "over a unix socket")

	// A second process cannot take the live socket.
	if _, err := Listen("unix:" + sock); err == nil || !strings.Contains(err.Error(), "another process") {
		t.Errorf("Listen on a live socket: %v", err)
	}

	// The one global slot is taken: listener b refuses.
	if c, err := dialTLS(t, g.Addr("b").String(), clientConfig(p, "web.test")); err == nil {
		_, err = c.Read(make([]byte, 1))
		c.Close()
		if err == nil {
			t.Fatal("b served above the global bound")
		}
	}
	testenv.Eventually(t, 10*time.Second, "global refusal counted", func() bool {
		return counter(m.Rejected.WithLabelValues("b", "global_limit")) == 1
	})
}

func TestAdminNotReady(t *testing.T) {
	h := AdminHandler(prometheus.NewRegistry(), func() bool { return false }, nil)
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/readyz", nil))
	if rec.Code != http.StatusServiceUnavailable {
		t.Errorf("/readyz before ready = %d, want 503", rec.Code)
	}
	rec = httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/metrics", nil))
	if rec.Code != http.StatusMethodNotAllowed {
		t.Errorf("POST /metrics = %d, want 405", rec.Code)
	}
}

func TestAdminReload(t *testing.T) {
	var calls int
	fail := false
	reload := func(context.Context) error {
		calls++
		if fail {
			return errors.New("reload failed, the previous configuration stays: bad")
		}
		return nil
	}
	h := AdminHandler(prometheus.NewRegistry(), func() bool { return true }, reload)
	srv := httptest.NewServer(h)
	defer srv.Close()
	port := srv.Listener.Addr().(*net.TCPAddr).Port
	post := func(method, host string, header map[string]string, body string) (int, string) {
		t.Helper()
		req, err := http.NewRequest(method, srv.URL+"/reload", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		if host != "" {
			req.Host = host
		}
		for k, v := range header {
			req.Header.Set(k, v)
		}
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	self := fmt.Sprintf("127.0.0.1:%d", port)
	for _, tt := range []struct {
		name   string
		method string
		host   string
		header map[string]string
		body   string
		fail   bool
		code   int
		resp   string
	}{
		{"curl -X POST", http.MethodPost, "", nil, "", false, 200, "reloaded\n"},
		{"localhost", http.MethodPost, fmt.Sprintf("LocalHost:%d", port), nil, "", false, 200, "reloaded\n"},
		{"failed reload", http.MethodPost, "", nil, "", true, 500, "the previous configuration stays: bad\n"},
		{"GET", http.MethodGet, "", nil, "", false, http.StatusMethodNotAllowed, ""},
		{"same origin", http.MethodPost, "", map[string]string{"Origin": "http://" + self, "Sec-Fetch-Site": "same-origin"}, "", false, 200, "reloaded\n"},
		// DNS rebinding: the page's own name now resolves to 127.0.0.1, so
		// to the browser the request is same-origin; Host gives it away.
		{"rebinding", http.MethodPost, fmt.Sprintf("attacker.example:%d", port), map[string]string{"Origin": fmt.Sprintf("http://attacker.example:%d", port), "Sec-Fetch-Site": "same-origin"}, "", false, 403, "is not this admin listener"},
		{"rebinding without port", http.MethodPost, "attacker.example", nil, "", false, 403, "is not this admin listener"},
		{"another port", http.MethodPost, "127.0.0.1:1", nil, "", false, 403, "is not this admin listener"},
		{"cross-site page", http.MethodPost, "", map[string]string{"Origin": "https://attacker.example"}, "", false, 403, "cross-origin request"},
		{"other localhost port", http.MethodPost, "", map[string]string{"Origin": "http://localhost:8000"}, "", false, 403, "cross-origin request"},
		{"null origin", http.MethodPost, "", map[string]string{"Origin": "null"}, "", false, 403, "cross-origin request"},
		{"cross-site fetch", http.MethodPost, "", map[string]string{"Sec-Fetch-Site": "cross-site"}, "", false, 403, "Sec-Fetch-Site"},
		{"same-site fetch", http.MethodPost, "", map[string]string{"Sec-Fetch-Site": "same-site"}, "", false, 403, "Sec-Fetch-Site"},
		{"text/plain body", http.MethodPost, "", map[string]string{"Content-Type": "text/plain;charset=UTF-8"}, "x", false, 415, "what a web form sends"},
		{"form body", http.MethodPost, "", map[string]string{"Content-Type": "application/x-www-form-urlencoded"}, "a=b", false, 415, "what a web form sends"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			before := calls
			fail = tt.fail
			code, body := post(tt.method, tt.host, tt.header, tt.body)
			if code != tt.code || !strings.Contains(body, tt.resp) {
				t.Errorf("%s /reload = %d %q, want %d %q", tt.method, code, body, tt.code, tt.resp)
			}
			if called := calls > before; called != (tt.code == 200 || tt.code == 500) {
				t.Errorf("reload called: %v", called)
			}
		})
	}

	// A unix socket is out of a browser's reach: any Host, no Origin.
	sock := filepath.Join(t.TempDir(), "admin.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		// Wine 8 has no AF_UNIX; Linux and current Windows do.
		t.Skipf("unix sockets: %v", err)
	}
	us := &http.Server{Handler: h}
	go us.Serve(ln)
	defer us.Close()
	uc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", sock)
	}}}
	for _, tt := range []struct {
		origin string
		code   int
	}{{"", 200}, {"https://attacker.example", 403}} {
		req, _ := http.NewRequest(http.MethodPost, "http://sealproxy/reload", nil)
		if tt.origin != "" {
			req.Header.Set("Origin", tt.origin)
		}
		resp, err := uc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != tt.code {
			t.Errorf("unix socket, Origin %q: %d, want %d", tt.origin, resp.StatusCode, tt.code)
		}
	}

	// Outside an http.Server (no local address) the request is refused.
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/reload", nil))
	if rec.Code != http.StatusForbidden {
		t.Errorf("POST /reload without a listener = %d, want 403", rec.Code)
	}
	// Without a reload function there is no /reload.
	rec = httptest.NewRecorder()
	AdminHandler(prometheus.NewRegistry(), func() bool { return true }, nil).ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/reload", nil))
	if rec.Code != http.StatusNotFound {
		t.Errorf("POST /reload without reload = %d, want 404", rec.Code)
	}
}
