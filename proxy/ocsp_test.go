package proxy

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/crypto/ocsp"

	"github.com/sealproxy/sealproxy/proxy/config"
	"github.com/sealproxy/sealproxy/testenv"
)

func TestOCSPFetchAndRefresh(t *testing.T) {
	p := newPKI(t)
	var requests atomic.Int32
	var revoked atomic.Bool
	var leaf *testenv.Leaf
	responder := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if _, err := ocsp.ParseRequest(body); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		requests.Add(1)
		w.Header().Set("Content-Type", "application/ocsp-response")
		w.Write(p.ca.OCSPResponse(t, leaf.Cert, revoked.Load()))
	}))
	defer responder.Close()
	leaf = p.ca.Issue(t, testenv.LeafOptions{CN: "web.test", DNS: []string{"web.test"}, OCSPServer: []string{responder.URL}})

	st, err := newStapler(leaf.Cert, p.ca.Cert, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.fetch(context.Background()); err != nil {
		t.Fatal(err)
	}
	cert := tlsCert(t, leaf)
	chooser := &CertChooser{}
	if err := chooser.swap([]*tls.Certificate{cert}, map[*tls.Certificate]*stapler{cert: st}); err != nil {
		t.Fatal(err)
	}
	hello := &tls.ClientHelloInfo{ServerName: "web.test"}
	got, _ := chooser.GetCertificate(hello)
	if got.OCSPStaple == nil || requests.Load() != 1 {
		t.Fatalf("no staple after the first fetch (requests %d)", requests.Load())
	}

	// Past half the validity a handshake starts one refresh.
	st.now = func() time.Time { return time.Now().Add(12 * time.Hour) }
	got, _ = chooser.GetCertificate(hello)
	if got.OCSPStaple == nil {
		t.Fatal("the still valid staple was dropped while refreshing")
	}
	testenv.Eventually(t, 10*time.Second, "refresh", func() bool { return requests.Load() == 2 && !st.busy.Load() })

	// Past expiry with a responder that now says revoked: no staple is
	// sent, and failed refreshes back off.
	revoked.Store(true)
	st.now = func() time.Time { return time.Now().Add(25 * time.Hour) }
	got, _ = chooser.GetCertificate(hello)
	if got.OCSPStaple != nil {
		t.Fatal("an expired staple was sent")
	}
	testenv.Eventually(t, 10*time.Second, "failed refresh", func() bool { return requests.Load() == 3 && !st.busy.Load() })
	chooser.GetCertificate(hello)
	if requests.Load() != 3 {
		t.Fatal("a failed refresh was retried at once")
	}
}

// TestOCSPFromOpenSSLResponder fetches the staple from `openssl ocsp`
// acting as the CA's responder (startOpenSSLResponder), and checks what a
// Go client receives.
func TestOCSPFromOpenSSLResponder(t *testing.T) {
	p := newPKI(t)
	resp := startOpenSSLResponder(t, p.ca)
	leaf := p.ca.Issue(t, testenv.LeafOptions{CN: "web.test", DNS: []string{"web.test"}, OCSPServer: []string{resp.URL}})
	resp.set(t, []*x509.Certificate{leaf.Cert})
	ctx := context.Background()

	st, err := newStapler(leaf.Cert, p.ca.Cert, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.fetch(ctx); err != nil {
		t.Fatalf("fetch: %v", err)
	}
	echo := testenv.StartEcho(t, nil)
	cfg := listenerConfig(config.ModeOffload, echo.Addr)
	cert := tlsCert(t, leaf)
	chooser := &CertChooser{}
	if err := chooser.swap([]*tls.Certificate{cert}, map[*tls.Certificate]*stapler{cert: st}); err != nil {
		t.Fatal(err)
	}
	cfg.TLS = &tls.Config{GetCertificate: chooser.GetCertificate}
	srv := start(t, cfg, nil)
	c, err := dialTLS(t, srv.addr, clientConfig(p, "web.test"))
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	r, err := ocsp.ParseResponseForCert(c.ConnectionState().OCSPResponse, leaf.Cert, p.ca.Cert)
	if err != nil || r.Status != ocsp.Good {
		t.Fatalf("stapled response: %v, %v", r, err)
	}
}
