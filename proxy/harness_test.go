package proxy

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/sealproxy/sealproxy/proxy/config"
	"github.com/sealproxy/sealproxy/testenv"
)

// pki is the certificates one test uses.
type pki struct {
	ca      *testenv.CA
	web     *testenv.Leaf // web.test, *.web.test
	api     *testenv.Leaf // api.test
	backCA  *testenv.CA
	backend *testenv.Leaf // backend.test
	client  *testenv.Leaf // CN alice
}

func newPKI(t testing.TB) *pki {
	ca := testenv.NewCA(t, "front CA")
	back := testenv.NewCA(t, "backend CA")
	return &pki{
		ca:      ca,
		web:     ca.Server(t, "web.test", "*.web.test"),
		api:     ca.Server(t, "api.test"),
		backCA:  back,
		backend: back.Server(t, "backend.test"),
		client:  ca.Client(t, "alice"),
	}
}

func tlsCert(t testing.TB, l *testenv.Leaf) *tls.Certificate {
	t.Helper()
	c, err := NewCertificate(l.Cert.Subject.CommonName, l.Chain, l.Key)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func serverTLSConfig(t testing.TB, certs ...*testenv.Leaf) *tls.Config {
	t.Helper()
	var cs []*tls.Certificate
	for _, l := range certs {
		cs = append(cs, tlsCert(t, l))
	}
	ch, err := NewCertChooser(cs)
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Config{GetCertificate: ch.GetCertificate, MinVersion: tls.VersionTLS12}
}

func listenerConfig(mode config.Mode, backends ...string) *ListenerConfig {
	lc := &ListenerConfig{
		Name: "test", Mode: mode,
		HandshakeTimeout: 5 * time.Second, ConnectTimeout: 5 * time.Second,
		IdleTimeout: time.Minute, CloseTimeout: 10 * time.Second,
	}
	for _, b := range backends {
		lc.Backends = append(lc.Backends, ParseBackend(b))
	}
	return lc
}

// running is a Server started by a test.
type running struct {
	*Server
	addr    string
	metrics *Metrics
	cancel  context.CancelFunc
	done    chan error
}

func start(t testing.TB, cfg *ListenerConfig, opts *Options) *running {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if opts == nil {
		opts = &Options{}
	}
	if opts.Metrics == nil {
		opts.Metrics = NewMetrics(prometheus.NewRegistry())
	}
	if opts.Log == nil {
		opts.Log = slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	if opts.ShutdownTimeout == 0 {
		opts.ShutdownTimeout = 5 * time.Second
	}
	s, err := NewServer(ln, cfg, opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{Server: s, addr: ln.Addr().String(), metrics: opts.Metrics, cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- s.Serve(ctx) }()
	t.Cleanup(func() { r.stop(t) })
	return r
}

func (r *running) stop(t testing.TB) {
	r.cancel()
	if err := <-r.done; err != nil {
		t.Errorf("Serve: %v", err)
	}
	r.done <- nil // later stops return at once
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(string(p))
	return len(p), nil
}

// roundTrip writes msg, half-closes, and reads everything until EOF.
func roundTrip(t testing.TB, c net.Conn, msg string) string {
	t.Helper()
	if _, err := io.WriteString(c, msg); err != nil {
		t.Fatalf("write: %v", err)
	}
	closeWrite(t, c)
	got, err := io.ReadAll(c)
	if err != nil {
		t.Fatalf("read: %v (got %q)", err, got)
	}
	return string(got)
}

func closeWrite(t testing.TB, c net.Conn) {
	t.Helper()
	cw, ok := c.(interface{ CloseWrite() error })
	if !ok {
		t.Fatalf("%T cannot half-close", c)
	}
	if err := cw.CloseWrite(); err != nil {
		t.Fatalf("CloseWrite: %v", err)
	}
}

// echoOnce writes a line and reads it back, leaving the connection open.
func echoOnce(t testing.TB, c net.Conn, br *bufio.Reader, line string) {
	t.Helper()
	if _, err := io.WriteString(c, line+"\n"); err != nil {
		t.Fatalf("write: %v", err)
	}
	got, err := br.ReadString('\n')
	if err != nil || got != line+"\n" {
		t.Fatalf("echo = %q, %v; want %q", got, err, line)
	}
}

func dialTLS(t testing.TB, addr string, cfg *tls.Config) (*tls.Conn, error) {
	t.Helper()
	d := &net.Dialer{Timeout: 5 * time.Second}
	return tls.DialWithDialer(d, "tcp", addr, cfg)
}

func clientConfig(p *pki, sni string) *tls.Config {
	return &tls.Config{RootCAs: p.ca.Pool(), ServerName: sni}
}

func counter(c prometheus.Collector) float64 { return testutil.ToFloat64(c) }

var errUnexpected = errors.New("unexpected")

var discardLog = slog.New(slog.DiscardHandler)
