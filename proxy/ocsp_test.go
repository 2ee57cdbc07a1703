package proxy

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
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
// acting as the CA's responder, and checks what a Go client receives.
// openssl's own HTTP server binds every interface, so a 127.0.0.1 HTTP
// front hands each request to `openssl ocsp -reqin -respout`, which
// answers it from the CA's index exactly as its server would.
func TestOCSPFromOpenSSLResponder(t *testing.T) {
	openssl := testenv.LookTool(t, "openssl", "openssl")
	p := newPKI(t)
	dir := t.TempDir()
	caFile := p.ca.WriteCA(t, dir, "ca.pem")
	caKey := filepath.Join(dir, "ca.key")
	if err := os.WriteFile(caKey, p.ca.KeyPEM(t), 0o600); err != nil {
		t.Fatal(err)
	}
	indexFile := filepath.Join(dir, "index.txt")
	var mu sync.Mutex
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		body, _ := io.ReadAll(r.Body)
		reqFile, respFile := filepath.Join(dir, "req.der"), filepath.Join(dir, "resp.der")
		os.WriteFile(reqFile, body, 0o644)
		out, err := exec.CommandContext(r.Context(), openssl, "ocsp", "-index", indexFile, "-rsigner", caFile, "-rkey", caKey,
			"-CA", caFile, "-ndays", "1", "-reqin", reqFile, "-respout", respFile).CombinedOutput()
		if err != nil {
			t.Errorf("openssl ocsp: %v\n%s", err, out)
			http.Error(w, "responder failed", http.StatusInternalServerError)
			return
		}
		resp, _ := os.ReadFile(respFile)
		w.Header().Set("Content-Type", "application/ocsp-response")
		w.Write(resp)
	}))
	defer front.Close()
	leaf := p.ca.Issue(t, testenv.LeafOptions{CN: "web.test", DNS: []string{"web.test"}, OCSPServer: []string{front.URL}})
	index := fmt.Sprintf("V\t%s\t\t%X\tunknown\t/CN=web.test\n", leaf.Cert.NotAfter.UTC().Format("060102150405Z"), leaf.Cert.SerialNumber)
	if err := os.WriteFile(indexFile, []byte(index), 0o644); err != nil {
		t.Fatal(err)
	}
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
	resp, err := ocsp.ParseResponseForCert(c.ConnectionState().OCSPResponse, leaf.Cert, p.ca.Cert)
	if err != nil || resp.Status != ocsp.Good {
		t.Fatalf("stapled response: %v, %v", resp, err)
	}
}
