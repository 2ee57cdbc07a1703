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

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sealproxy/sealproxy/testenv"
)

func TestGroupReloadUnderTraffic(t *testing.T) {
	p := newPKI(t)
	echo := startEcho(t, nil)
	mk := func(name string, leaf *testenv.Leaf) *ListenerConfig {
		lc := listenerConfig(ModeOffload, echo.addr())
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
	waitFor(t, "ready", g.Ready)
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
	waitFor(t, "b closed", func() bool {
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
	echo := startEcho(t, nil)
	good := listenerConfig(ModeOffload, echo.addr())
	good.Listen = "127.0.0.1:0"
	good.TLS = serverTLSConfig(t, p.web)
	bad := listenerConfig(ModeOffload) // no backend: refused by apply
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
	waitFor(t, "ready", g.Ready)
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
	echo := startEcho(t, nil)
	sock := filepath.Join(t.TempDir(), "web.sock")
	stale, err := net.Listen("unix", sock)
	if err != nil {
		t.Skipf("unix sockets: %v", err)
	}
	stale.(*net.UnixListener).SetUnlinkOnClose(false)
	stale.Close() // the file stays, nobody answers

	a := listenerConfig(ModeOffload, echo.addr())
	a.Name, a.Listen, a.TLS = "a", "unix:"+sock, serverTLSConfig(t, p.web)
	b := listenerConfig(ModeOffload, echo.addr())
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
	waitFor(t, "ready", g.Ready)

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
	waitFor(t, "global refusal counted", func() bool {
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
	for _, tt := range []struct {
		method string
		fail   bool
		code   int
		body   string
	}{
		{http.MethodPost, false, 200, "reloaded\n"},
		{http.MethodPost, true, 500, "the previous configuration stays: bad\n"},
		{http.MethodGet, false, http.StatusMethodNotAllowed, ""},
	} {
		fail = tt.fail
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(tt.method, "/reload", nil))
		if rec.Code != tt.code || !strings.HasSuffix(rec.Body.String(), tt.body) {
			t.Errorf("%s /reload = %d %q, want %d %q", tt.method, rec.Code, rec.Body.String(), tt.code, tt.body)
		}
	}
	if calls != 2 {
		t.Errorf("reload called %d times, want 2", calls)
	}
	// Without a reload function there is no /reload.
	rec := httptest.NewRecorder()
	AdminHandler(prometheus.NewRegistry(), func() bool { return true }, nil).ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/reload", nil))
	if rec.Code != http.StatusNotFound {
		t.Errorf("POST /reload without reload = %d, want 404", rec.Code)
	}
}
