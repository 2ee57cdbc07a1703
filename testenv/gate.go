package testenv

import (
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"testing"
	"time"

	"github.com/sealproxy/sealproxy/unlock/gate"
	"github.com/sealproxy/sealproxy/unlock/tang"
)

// GateOptions say how StartGate and ServeGate set up a gate. The zero
// value (with StartGate) is a gate over fresh keys with no operators and
// no audit file.
type GateOptions struct {
	// Dir is the key directory, where keys are generated. StartGate
	// defaults to a fresh t.TempDir(); ServeGate needs it.
	Dir string
	// Operators are added to DIR/operators.json in this order; their
	// tokens are in Gate.Tokens.
	Operators []string
	// AuditFile, when set, is opened as the gate's audit log.
	AuditFile string
	// TLS, when set, makes the gate serve https with it.
	TLS *tls.Config
	// OperatorCA, instead of TLS, serves https with a certificate from
	// this CA (for 127.0.0.1) and takes a client certificate it issued
	// whose name is a listed operator as that operator
	// (gate.Config.CertOperators); hosts need no certificate.
	OperatorCA *CA
	// Configure, when set, changes the configuration last (Hold, Now, a
	// policy, CertOperators...). Setting OnPending there leaves Ready
	// unused.
	Configure func(*gate.Config)
}

// Gate is a gate (unlock/gate, the code `sealgate serve --approval
// required` runs) on 127.0.0.1.
type Gate struct {
	*gate.Gate
	URL       string // http://127.0.0.1:PORT (https with GateOptions.TLS)
	Dir       string // the key directory
	Thp       string // the signing key's thumbprint
	Operators *gate.Operators
	Tokens    map[string]string // operator name -> bearer token
	AuditFile string
	// Ready receives each request that becomes ready for a decision.
	Ready chan gate.Request
	// Logs holds the gate's operational log (JSON, debug level).
	Logs *SyncBuffer

	srv   *http.Server
	done  chan struct{}
	audit *gate.FileAudit
}

// StartGate serves a gate as o says, stopped at cleanup.
func StartGate(t testing.TB, o GateOptions) *Gate {
	t.Helper()
	if o.Dir == "" {
		o.Dir = t.TempDir()
	}
	g, err := ServeGate(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(g.Close)
	return g
}

// ServeGate is StartGate for callers without a *testing.T (the demo, the
// script command): the caller calls Close.
func ServeGate(o GateOptions) (*Gate, error) {
	if o.Dir == "" {
		return nil, errors.New("testenv: ServeGate needs a key directory (GateOptions.Dir)")
	}
	thp, err := tang.Keygen(o.Dir)
	if err != nil {
		return nil, err
	}
	keys, err := tang.OpenKeyDir(o.Dir)
	if err != nil {
		return nil, err
	}
	g := &Gate{
		Dir: o.Dir, Thp: thp, Tokens: map[string]string{}, AuditFile: o.AuditFile,
		Ready: make(chan gate.Request, 64), Logs: &SyncBuffer{}, done: make(chan struct{}),
		Operators: gate.OpenOperators(filepath.Join(o.Dir, gate.OperatorsFile)),
	}
	for _, name := range o.Operators {
		if g.Tokens[name], err = g.Operators.Add(name); err != nil {
			return nil, err
		}
	}
	cfg := gate.Config{
		Keys: keys, Operators: g.Operators,
		Log:       slog.New(slog.NewJSONHandler(g.Logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		OnPending: func(r gate.Request) { g.Ready <- r },
	}
	if o.AuditFile != "" {
		if g.audit, err = gate.OpenAudit(o.AuditFile); err != nil {
			return nil, err
		}
		cfg.Audit = g.audit
	}
	if o.OperatorCA != nil {
		leaf, err := o.OperatorCA.Sign(LeafOptions{CN: "localhost", DNS: []string{"localhost"}, IPs: []net.IP{net.IPv4(127, 0, 0, 1)}})
		if err != nil {
			g.closeAudit()
			return nil, err
		}
		o.TLS = &tls.Config{
			Certificates: []tls.Certificate{leaf.TLSCertificate()},
			ClientAuth:   tls.VerifyClientCertIfGiven,
			ClientCAs:    o.OperatorCA.Pool(),
		}
		cfg.CertOperators = true
	}
	if o.Configure != nil {
		o.Configure(&cfg)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		g.closeAudit()
		return nil, err
	}
	g.Gate = gate.New(cfg)
	g.srv = &http.Server{Handler: g.Gate, ReadHeaderTimeout: 10 * time.Second, TLSConfig: o.TLS}
	g.URL = "http://" + ln.Addr().String()
	if o.TLS != nil {
		g.URL = "https://" + ln.Addr().String()
		ln = tls.NewListener(ln, o.TLS)
	}
	go func() { g.srv.Serve(ln); close(g.done) }()
	return g, nil
}

// Close stops the server and the gate's background work (webhooks),
// and closes the audit log.
func (g *Gate) Close() {
	if g.srv == nil {
		return
	}
	g.srv.Close()
	<-g.done
	g.srv = nil
	g.Gate.Close()
	g.closeAudit()
}

func (g *Gate) closeAudit() {
	if g.audit != nil {
		g.audit.Close()
	}
}

// PinConfig is the clevis tang pin configuration for this gate.
func (g *Gate) PinConfig() string {
	cfg, _ := json.Marshal(struct {
		URL string `json:"url"`
		Thp string `json:"thp"`
	}{g.URL, g.Thp})
	return string(cfg)
}

// Next waits up to timeout for the next request ready for a decision.
func (g *Gate) Next(t testing.TB, timeout time.Duration) gate.Request {
	t.Helper()
	r, err := g.Wait(timeout)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// Wait is Next for callers without a *testing.T.
func (g *Gate) Wait(timeout time.Duration) (gate.Request, error) {
	select {
	case r := <-g.Ready:
		return r, nil
	case <-time.After(timeout):
		return gate.Request{}, fmt.Errorf("no request became ready for a decision at the gate %s in %v", g.URL, timeout)
	}
}
