package gate_test

import (
	"crypto/tls"
	"errors"
	"net/http"
	"testing"

	"github.com/sealproxy/sealproxy/testenv"
	"github.com/sealproxy/sealproxy/unlock/gate"
	"github.com/sealproxy/sealproxy/unlock/tang"
)

// TestCertOperators: over TLS, a client certificate from the operators'
// CA whose name is a listed operator is that operator; another name, a
// certificate from another CA, or a removed operator is refused. Hosts
// need no certificate.
func TestCertOperators(t *testing.T) {
	ca, other := testenv.NewCA(t, "operators"), testenv.NewCA(t, "elsewhere")
	gt := testenv.StartGate(t, testenv.GateOptions{Operators: []string{"alice"}, OperatorCA: ca})
	thp, ready, ops := gt.Thp, gt.Ready, gt.Operators
	client := func(leaf *testenv.Leaf) *gate.Client {
		cfg := &tls.Config{RootCAs: ca.Pool()}
		if leaf != nil {
			cfg.Certificates = []tls.Certificate{leaf.TLSCertificate()}
		}
		return &gate.Client{URL: gt.URL, HTTP: &http.Client{Transport: &http.Transport{TLSClientConfig: cfg}}}
	}

	// A host without a certificate recovers over https (tang pin URLs may
	// be https), and waits like any other.
	hostTang := &tang.Client{HTTP: &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.Pool()}}}}
	adv, err := hostTang.Advertisement(testCtx(t), gt.URL, thp)
	if err != nil {
		t.Fatal(err)
	}
	exc, _ := adv.ExchangeKey()
	epk, z, _ := tang.Bind(exc)
	clear(z)
	b, _ := tang.NewBlind(exc, epk)
	defer b.Wipe()
	done := make(chan error, 1)
	go func() {
		z, err := hostTang.Recover(testCtx(t), gt.URL, exc.Thumbprint(), b)
		clear(z)
		done <- err
	}()
	var req gate.Request
	select {
	case req = <-ready:
	case <-testCtx(t).Done():
		t.Fatal("no pending request")
	}

	for name, c := range map[string]*gate.Client{
		"no certificate":     client(nil),
		"not an operator":    client(ca.Client(t, "mallory")),
		"another CA's alice": client(other.Client(t, "alice")),
	} {
		if _, err := c.Approve(testCtx(t), req.Code); !errors.Is(err, gate.ErrUnauthorized) {
			t.Errorf("%s: %v, want ErrUnauthorized", name, err)
		}
	}
	d, err := client(ca.Client(t, "alice")).Approve(testCtx(t), req.Code)
	if err != nil || d.Operator != "alice" {
		t.Fatalf("alice's certificate: %+v, %v", d, err)
	}
	if err := <-done; err != nil {
		t.Fatalf("recovery after approval by certificate: %v", err)
	}
	if err := ops.Remove("alice"); err != nil {
		t.Fatal(err)
	}
	if _, err := client(ca.Client(t, "alice")).Pending(testCtx(t)); !errors.Is(err, gate.ErrUnauthorized) {
		t.Fatalf("removed operator's certificate: %v, want ErrUnauthorized", err)
	}
}
