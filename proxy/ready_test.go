package proxy

import (
	"context"
	"io"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sealproxy/sealproxy/proxy/config"
	"github.com/sealproxy/sealproxy/testenv"
)

// TestNotReadyWhileDraining: once shutdown begins, /readyz answers 503
// while open connections still drain, so a load balancer or the kubelet
// (docs/fleet.md, "Probes") stops sending new clients before the
// process goes away, and the open connection keeps working meanwhile.
func TestNotReadyWhileDraining(t *testing.T) {
	p := newPKI(t)
	echo := testenv.StartEcho(t, nil)
	lc := listenerConfig(config.ModeOffload, echo.Addr)
	lc.Listen = "127.0.0.1:0"
	lc.TLS = serverTLSConfig(t, p.web)
	g := NewGroup(func(context.Context) (*Plan, error) {
		return &Plan{Listeners: []*ListenerConfig{lc}}, nil
	}, nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- g.Run(ctx) }()
	testenv.Eventually(t, 10*time.Second, "ready", g.Ready)
	h := AdminHandler(prometheus.NewRegistry(), g.Ready, nil)
	readyz := func() int {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("GET", "/readyz", nil))
		return rec.Code
	}
	if code := readyz(); code != 200 {
		t.Fatalf("/readyz while serving = %d, want 200", code)
	}

	c, err := dialTLS(t, g.Addr(lc.Name).String(), clientConfig(p, "web.test"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	roundTrip := func(msg string) {
		t.Helper()
		if _, err := c.Write([]byte(msg)); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, len(msg))
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.ReadFull(c, buf); err != nil || string(buf) != msg {
			t.Fatalf("echo %q: %q, %v", msg, buf, err)
		}
	}
	roundTrip("before")

	cancel()
	testenv.Eventually(t, 10*time.Second, "/readyz 503 after shutdown began", func() bool { return readyz() == 503 })
	select {
	case err := <-done:
		t.Fatalf("the group stopped (%v) with a connection open: no drain to test", err)
	default:
	}
	roundTrip("while draining") // the open connection still works
	c.Close()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("the group did not stop once its last connection closed")
	}
}
