package proxy

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/crypto/ocsp"

	"github.com/sealproxy/sealproxy/proxy/config"
	"github.com/sealproxy/sealproxy/testenv"
)

// crlAt is a PEM CRL of ca valid from this to next, revoking certs.
func crlAt(t testing.TB, ca *testenv.CA, this, next time.Time, revoked ...*x509.Certificate) []byte {
	t.Helper()
	tmpl := &x509.RevocationList{Number: big.NewInt(this.UnixNano()), ThisUpdate: this, NextUpdate: next}
	for _, c := range revoked {
		tmpl.RevokedCertificateEntries = append(tmpl.RevokedCertificateEntries,
			x509.RevocationListEntry{SerialNumber: c.SerialNumber, RevocationTime: this})
	}
	der, err := x509.CreateRevocationList(rand.Reader, tmpl, ca.Cert, ca.Key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: der})
}

// mtlsListener builds the fixture's "web" key behind an offload listener
// with client_auth = "require" and the given [listener.tls] lines, and
// starts it with a log the test reads.
func (f *buildFixture) mtlsListener(t *testing.T, top, tlsLines string) (*running, *testenv.SyncBuffer, error) {
	t.Helper()
	echo := testenv.StartEcho(t, nil)
	cfg := f.config(t, buildKeys+`
[[listener]]
name = "test"
listen = "127.0.0.1:0"
mode = "offload"
keys = ["web"]
backend = "`+echo.Addr+`"
[listener.tls]
client_auth = "require"
client_ca = "clients.pem"
`+tlsLines+"\n"+top)
	logs := &testenv.SyncBuffer{}
	log := slog.New(slog.NewTextHandler(logs, nil))
	lcs, err := Build(context.Background(), cfg, f.open, log)
	if err != nil {
		return nil, logs, err
	}
	return start(t, lcs[0], &Options{Log: log}), logs, nil
}

// tryClient connects as leaf and reports whether the echo came back.
func tryClient(t *testing.T, p *pki, addr string, leaf *testenv.Leaf) error {
	t.Helper()
	cc := clientConfig(p, "web.test")
	cc.Certificates = []tls.Certificate{leaf.TLSCertificate()}
	c, err := dialTLS(t, addr, cc)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(c, "x")
	c.CloseWrite()
	b, err := io.ReadAll(c)
	if err == nil && string(b) != "x" {
		err = errUnexpected
	}
	return err
}

func events(r *running, event string) float64 {
	return counter(r.metrics.RevocationEvents.WithLabelValues("test", event))
}

// TestCRLStale: a CRL past its NextUpdate refuses every client of its CA
// by default (fail closed), with a log line and a count; crl_stale =
// "warn" lets them in and counts them.
func TestCRLStale(t *testing.T) {
	f := newBuildFixture(t)
	stale := crlAt(t, f.p.ca, time.Now().Add(-48*time.Hour), time.Now().Add(-time.Hour))
	if err := os.WriteFile(filepath.Join(f.dir, "clients.crl"), stale, 0o644); err != nil {
		t.Fatal(err)
	}

	srv, logs, err := f.mtlsListener(t, "", `crl = ["clients.crl"]`)
	if err != nil {
		t.Fatal(err)
	}
	if err := tryClient(t, f.p, srv.addr, f.p.client); err == nil {
		t.Fatal("a client was let in under a stale CRL with crl_stale defaulting to refuse")
	}
	testenv.Eventually(t, 10*time.Second, "crl_stale counted", func() bool {
		return events(srv, eventCRLStaleRefused) == 1 &&
			counter(srv.metrics.HandshakeErrors.WithLabelValues("test", "crl_stale")) == 1
	})
	logs.WaitFor(t, 5*time.Second, `client certificate refused: the CRL of its CA is past its NextUpdate`)
	if !strings.Contains(logs.String(), `ca="front CA"`) {
		t.Errorf("the log line does not name the CA:\n%s", logs)
	}

	srv, _, err = f.mtlsListener(t, "", "crl = [\"clients.crl\"]\ncrl_stale = \"warn\"")
	if err != nil {
		t.Fatal(err)
	}
	if err := tryClient(t, f.p, srv.addr, f.p.client); err != nil {
		t.Fatalf("crl_stale = warn refused a client: %v", err)
	}
	if events(srv, eventCRLStaleAccepted) != 1 {
		t.Fatal("the stale CRL accepted under warn was not counted")
	}

	// A fresh CRL is no event at all.
	if err := os.WriteFile(filepath.Join(f.dir, "clients.crl"), f.p.ca.CRL(t), 0o644); err != nil {
		t.Fatal(err)
	}
	srv, _, err = f.mtlsListener(t, "", `crl = ["clients.crl"]`)
	if err != nil {
		t.Fatal(err)
	}
	if err := tryClient(t, f.p, srv.addr, f.p.client); err != nil {
		t.Fatalf("fresh CRL: %v", err)
	}
}

// TestCRLBadSignature: a CRL that names the client CA as issuer but is
// signed by another key (same subject) is refused at load.
func TestCRLBadSignature(t *testing.T) {
	f := newBuildFixture(t)
	forger := testenv.NewCA(t, f.p.ca.Cert.Subject.CommonName) // same name, other key
	if err := os.WriteFile(filepath.Join(f.dir, "clients.crl"), forger.CRL(t), 0o644); err != nil {
		t.Fatal(err)
	}
	_, _, err := f.mtlsListener(t, "", `crl = ["clients.crl"]`)
	if err == nil || !strings.Contains(err.Error(), "signature does not verify") {
		t.Fatalf("forged CRL: err = %v", err)
	}
}

// TestCRLFromURL: a CRL URL is fetched, kept in cache_dir, used after a
// restart with the URL down, and a replayed older CRL is refused.
func TestCRLFromURL(t *testing.T) {
	f := newBuildFixture(t)
	var body atomic.Pointer[[]byte]
	crl := f.p.ca.CRL(t, f.bob.Cert)
	body.Store(&crl)
	var hits atomic.Int32
	srvCRL := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		w.Write(*body.Load())
	}))
	cache := filepath.Join(f.dir, "cache")
	if err := os.Mkdir(cache, 0o700); err != nil {
		t.Fatal(err)
	}
	top := "[revocation]\ncache_dir = \"cache\"\nfetch_timeout = \"2s\"\n"
	line := `crl = ["` + srvCRL.URL + `/clients.crl"]`
	srv, _, err := f.mtlsListener(t, top, line)
	if err != nil {
		t.Fatal(err)
	}
	if hits.Load() != 1 {
		t.Fatalf("the CRL URL was fetched %d times", hits.Load())
	}
	if err := tryClient(t, f.p, srv.addr, f.bob); err == nil {
		t.Fatal("bob, revoked by the URL's CRL, was let in")
	}
	if err := tryClient(t, f.p, srv.addr, f.p.client); err != nil {
		t.Fatalf("alice: %v", err)
	}
	files, _ := filepath.Glob(filepath.Join(cache, "*.crl"))
	if len(files) != 1 {
		t.Fatalf("cache holds %v", files)
	}
	if fi, err := os.Stat(files[0]); err != nil || runtime.GOOS != "windows" && fi.Mode().Perm() != 0o600 {
		t.Fatalf("cache file: %v, %v", fi, err)
	}

	// Restart with the URL down: the cached copy serves.
	srvCRL.Close()
	srv, _, err = f.mtlsListener(t, top, line)
	if err != nil {
		t.Fatalf("restart with the CRL URL down: %v", err)
	}
	if err := tryClient(t, f.p, srv.addr, f.bob); err == nil {
		t.Fatal("after restart bob was let in")
	}

	// Without a cached copy and without the network, start-up fails
	// naming the cache.
	os.Remove(files[0])
	if _, _, err := f.mtlsListener(t, top, line); err == nil || !strings.Contains(err.Error(), "no usable cached copy") {
		t.Fatalf("no cache, no network: err = %v", err)
	}

	// A replayed older CRL (one that did not yet revoke bob) is refused.
	newer := f.p.ca.CRL(t, f.bob.Cert)
	older := crlAt(t, f.p.ca, time.Now().Add(-3*time.Hour), time.Now().Add(time.Hour))
	s := &crlSource{where: "test", url: true, cas: []*x509.Certificate{f.p.ca.Cert}, now: time.Now,
		log: discardLog, cache: filepath.Join(cache, "x.crl")}
	replay := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write(older) }))
	defer replay.Close()
	s.where, s.http = replay.URL, replay.Client()
	lists, err := parseCRLs("newer", newer, s.cas)
	if err != nil {
		t.Fatal(err)
	}
	s.cur.Store(&lists)
	if err := s.fetch(context.Background()); err == nil || !strings.Contains(err.Error(), "older than the one in hand") {
		t.Fatalf("replayed CRL: err = %v", err)
	}
	if res, _ := (&Revocations{sources: []*crlSource{s}}).check([]*x509.Certificate{f.bob.Cert}, time.Now()); res != crlRevoked {
		t.Fatal("the replay replaced the newer CRL")
	}
}

// TestCRLSizeLimit: a CRL URL answering more than maxCRLSize is refused
// without reading it all.
func TestCRLSizeLimit(t *testing.T) {
	big := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		chunk := make([]byte, 1<<20)
		for i := 0; i < maxCRLSize>>20+2; i++ {
			if _, err := w.Write(chunk); err != nil {
				return
			}
		}
	}))
	defer big.Close()
	s := &crlSource{where: big.URL, url: true, http: big.Client(), now: time.Now, log: discardLog}
	if err := s.fetch(context.Background()); err == nil || !strings.Contains(err.Error(), "larger than") {
		t.Fatalf("oversized CRL: err = %v", err)
	}
}

// openSSLResponder answers OCSP requests with `openssl ocsp` over the
// CA's index file, which the test rewrites to revoke. openssl's own HTTP
// server binds every interface, so a 127.0.0.1 HTTP front hands each
// request to `openssl ocsp -reqin -respout`, which answers it from the
// index exactly as its server would.
type openSSLResponder struct {
	URL   string
	dir   string
	index string
}

func startOpenSSLResponder(t *testing.T, ca *testenv.CA) *openSSLResponder {
	t.Helper()
	openssl := testenv.LookTool(t, "openssl", "openssl")
	dir := t.TempDir()
	caFile := ca.WriteCA(t, dir, "ca.pem")
	caKey := filepath.Join(dir, "ca.key")
	if err := os.WriteFile(caKey, ca.KeyPEM(t), 0o600); err != nil {
		t.Fatal(err)
	}
	r := &openSSLResponder{dir: dir, index: filepath.Join(dir, "index.txt")}
	if err := os.WriteFile(r.index, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		body, _ := io.ReadAll(req.Body)
		reqFile, respFile := filepath.Join(dir, "req.der"), filepath.Join(dir, "resp.der")
		os.WriteFile(reqFile, body, 0o644)
		out, err := exec.CommandContext(req.Context(), openssl, "ocsp", "-index", r.index, "-rsigner", caFile, "-rkey", caKey,
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
	t.Cleanup(front.Close)
	r.URL = front.URL
	return r
}

// set writes the index: each certificate valid, or revoked when listed
// in revoked.
func (r *openSSLResponder) set(t *testing.T, certs []*x509.Certificate, revoked ...*x509.Certificate) {
	t.Helper()
	var b strings.Builder
	for _, c := range certs {
		status, when := "V", ""
		for _, rc := range revoked {
			if rc == c {
				status, when = "R", time.Now().Add(-time.Minute).UTC().Format("060102150405Z")
			}
		}
		fmt.Fprintf(&b, "%s\t%s\t%s\t%X\tunknown\t/CN=%s\n", status, c.NotAfter.UTC().Format("060102150405Z"), when,
			c.SerialNumber, c.Subject.CommonName)
	}
	if err := os.WriteFile(r.index, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestClientOCSP checks client certificates against `openssl ocsp`:
// good passes in both modes; revoked is refused in both; a responder
// that cannot be reached is accepted (and counted) by soft and refused
// by hard.
func TestClientOCSP(t *testing.T) {
	f := newBuildFixture(t)
	resp := startOpenSSLResponder(t, f.p.ca)
	carol := f.p.ca.Issue(t, testenv.LeafOptions{CN: "carol", Client: true, OCSPServer: []string{resp.URL}})
	dave := f.p.ca.Issue(t, testenv.LeafOptions{CN: "dave", Client: true, OCSPServer: []string{resp.URL}})
	resp.set(t, []*x509.Certificate{carol.Cert, dave.Cert}, dave.Cert)
	down := "http://" + testenv.FreeAddr(t) + "/"

	for _, mode := range []string{"soft", "hard"} {
		t.Run(mode, func(t *testing.T) {
			srv, _, err := f.mtlsListener(t, "", `client_ocsp = "`+mode+`"`)
			if err != nil {
				t.Fatal(err)
			}
			if err := tryClient(t, f.p, srv.addr, carol); err != nil {
				t.Fatalf("good carol: %v", err)
			}
			if err := tryClient(t, f.p, srv.addr, dave); err == nil {
				t.Fatal("revoked dave was let in")
			}
			testenv.Eventually(t, 10*time.Second, "revoked counted", func() bool {
				return events(srv, eventOCSPRevoked) == 1 &&
					counter(srv.metrics.HandshakeErrors.WithLabelValues("test", "client_revoked")) == 1
			})

			srv, logs, err := f.mtlsListener(t, "", `client_ocsp = "`+mode+`"`+"\nclient_ocsp_responder = \""+down+"\"")
			if err != nil {
				t.Fatal(err)
			}
			err = tryClient(t, f.p, srv.addr, carol)
			switch mode {
			case "soft":
				if err != nil {
					t.Fatalf("soft refused with the responder down: %v", err)
				}
				if events(srv, eventOCSPUnreachableSoft) != 1 {
					t.Fatal("soft acceptance without an answer was not counted")
				}
			case "hard":
				if err == nil {
					t.Fatal("hard accepted with the responder down")
				}
				testenv.Eventually(t, 10*time.Second, "hard refusal counted", func() bool {
					return events(srv, eventOCSPUnreachable) == 1 &&
						counter(srv.metrics.HandshakeErrors.WithLabelValues("test", "ocsp_unavailable")) == 1
				})
				logs.WaitFor(t, 5*time.Second, "no usable OCSP answer")
			}
		})
	}
}

// TestClientOCSPCache: answers are cached until NextUpdate, so the
// responder sees one query for many handshakes of one certificate.
func TestClientOCSPCache(t *testing.T) {
	p := newPKI(t)
	var leaf *testenv.Leaf
	var n atomic.Int32
	responder := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n.Add(1)
		w.Write(p.ca.OCSPResponse(t, leaf.Cert, false))
	}))
	defer responder.Close()
	leaf = p.ca.Issue(t, testenv.LeafOptions{CN: "carol", Client: true, OCSPServer: []string{responder.URL}})
	o := newClientOCSP(true, "", 2*time.Second)
	for i := 0; i < 5; i++ {
		if st, err := o.status(leaf.Cert, p.ca.Cert, time.Now()); err != nil || st != ocspGood {
			t.Fatalf("status = %v, %v", st, err)
		}
	}
	if n.Load() != 1 {
		t.Fatalf("%d queries for one certificate", n.Load())
	}
	// Past NextUpdate the cache asks again.
	if _, err := o.status(leaf.Cert, p.ca.Cert, time.Now().Add(25*time.Hour)); err != nil || n.Load() != 2 {
		t.Fatalf("after NextUpdate: %v, %d queries", err, n.Load())
	}
}

// TestOCSPResponderAuthority: a response signed by a certificate of the
// CA that is not a delegated OCSP responder (a client's own key) is
// refused; one signed by a responder with id-kp-OCSPSigning is accepted.
func TestOCSPResponderAuthority(t *testing.T) {
	p := newPKI(t)
	leaf := p.client
	signWith := func(eku []x509.ExtKeyUsage) []byte {
		key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: "responder"},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), ExtKeyUsage: eku}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, p.ca.Cert, key.Public(), p.ca.Key)
		if err != nil {
			t.Fatal(err)
		}
		rc, _ := x509.ParseCertificate(der)
		resp, err := ocsp.CreateResponse(p.ca.Cert, rc, ocsp.Response{Status: ocsp.Good, SerialNumber: leaf.Cert.SerialNumber,
			ThisUpdate: time.Now().Add(-time.Minute), NextUpdate: time.Now().Add(time.Hour), Certificate: rc}, key)
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}
	if _, err := checkOCSPResponse(signWith([]x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}), leaf.Cert, p.ca.Cert, time.Now()); err != errOCSPNotAuthorized {
		t.Fatalf("response from a non-responder certificate: err = %v", err)
	}
	if _, err := checkOCSPResponse(signWith([]x509.ExtKeyUsage{x509.ExtKeyUsageOCSPSigning}), leaf.Cert, p.ca.Cert, time.Now()); err != nil {
		t.Fatalf("delegated responder: %v", err)
	}
	// An expired response is refused.
	if _, err := checkOCSPResponse(p.ca.OCSPResponse(t, leaf.Cert, false), leaf.Cert, p.ca.Cert, time.Now().Add(48*time.Hour)); err == nil {
		t.Fatal("an expired response was accepted")
	}
}

// TestStaplerStopsOnRevoked: once `openssl ocsp` answers revoked, the
// staple in hand is dropped at the next refresh, a TLS client receives
// none, and each refresh logs an error.
func TestStaplerStopsOnRevoked(t *testing.T) {
	p := newPKI(t)
	resp := startOpenSSLResponder(t, p.ca)
	leaf := p.ca.Issue(t, testenv.LeafOptions{CN: "web.test", DNS: []string{"web.test"}, OCSPServer: []string{resp.URL}})
	resp.set(t, []*x509.Certificate{leaf.Cert})
	logs := &testenv.SyncBuffer{}
	st, err := newStapler(leaf.Cert, p.ca.Cert, "", slog.New(slog.NewTextHandler(logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	if err := st.fetch(context.Background()); err != nil {
		t.Fatal(err)
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
	stapled := func() []byte {
		c, err := dialTLS(t, srv.addr, clientConfig(p, "web.test"))
		if err != nil {
			t.Fatal(err)
		}
		c.Close()
		return c.ConnectionState().OCSPResponse
	}
	if r, err := ocsp.ParseResponseForCert(stapled(), leaf.Cert, p.ca.Cert); err != nil || r.Status != ocsp.Good {
		t.Fatalf("first staple: %v, %v", r, err)
	}

	// The responder now says revoked; the next refresh (forced by moving
	// past half the validity) drops the good staple still valid.
	resp.set(t, []*x509.Certificate{leaf.Cert}, leaf.Cert)
	st.now = func() time.Time { return time.Now().Add(13 * time.Hour) }
	stapled()
	testenv.Eventually(t, 20*time.Second, "refresh", func() bool { return st.cur.Load() == nil && !st.busy.Load() })
	if got := stapled(); got != nil {
		t.Fatal("a staple was sent after the responder said revoked")
	}
	logs.WaitFor(t, 5*time.Second, "this server's certificate is revoked")
	if !strings.Contains(logs.String(), "level=ERROR") {
		t.Errorf("the revoked certificate was not logged as an error:\n%s", logs)
	}
	// A fetch that finds it revoked reports it, every time.
	if err := st.fetch(context.Background()); err == nil || !strings.Contains(err.Error(), "REVOKED") {
		t.Fatalf("fetch: %v", err)
	}
}

// TestStaplerWithoutNextUpdate: a response without NextUpdate is asked
// for again after a fixed interval, and not stapled for ever.
func TestStaplerWithoutNextUpdate(t *testing.T) {
	p := newPKI(t)
	var leaf *testenv.Leaf
	var n atomic.Int32
	responder := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n.Add(1)
		der, err := ocsp.CreateResponse(p.ca.Cert, p.ca.Cert, ocsp.Response{Status: ocsp.Good, SerialNumber: leaf.Cert.SerialNumber,
			ThisUpdate: time.Now().Add(-time.Minute)}, p.ca.Key)
		if err != nil {
			t.Error(err)
		}
		w.Write(der)
	}))
	leaf = p.ca.Issue(t, testenv.LeafOptions{CN: "web.test", OCSPServer: []string{responder.URL}})
	st, err := newStapler(leaf.Cert, p.ca.Cert, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.fetch(context.Background()); err != nil {
		t.Fatal(err)
	}
	if st.get() == nil {
		t.Fatal("no staple")
	}
	st.now = func() time.Time { return time.Now().Add(ocspNoNextUpdateRefresh + time.Minute) }
	st.get()
	testenv.Eventually(t, 10*time.Second, "fixed-interval refresh", func() bool { return n.Load() == 2 && !st.busy.Load() })
	// The responder is gone: past the maximum age the staple stops.
	responder.Close()
	st.now = func() time.Time {
		return time.Now().Add(ocspNoNextUpdateRefresh + ocspNoNextUpdateMaxAge + 5*time.Minute)
	}
	if st.get() != nil {
		t.Fatal("a response without NextUpdate was stapled past its maximum age")
	}
	// Failed refreshes back off, doubling.
	d1 := st.backoff()
	d2 := st.backoff()
	if d1 != ocspRetry || d2 != 2*ocspRetry {
		t.Fatalf("backoff %v then %v", d1, d2)
	}
}

// shortLived replaces the fixture's "web" certificate by one that
// expires in 5 days.
func (f *buildFixture) shortLived(t *testing.T) *testenv.Leaf {
	t.Helper()
	web := f.p.ca.Issue(t, testenv.LeafOptions{CN: "web.test", DNS: []string{"web.test"}, NotAfter: time.Now().Add(5 * 24 * time.Hour)})
	web.WriteFiles(t, f.dir, "web")
	f.keys["web"] = web.Key
	return web
}

// TestExpiryMetrics: a running group exports each key's NotAfter and each
// CRL's NextUpdate, and logs a warning for a certificate within 30 days
// of expiry and again within 7, once each.
func TestExpiryMetrics(t *testing.T) {
	f := newBuildFixture(t)
	web := f.shortLived(t)
	echo := testenv.StartEcho(t, nil)
	cfg := f.config(t, buildKeys+`
[[listener]]
name = "test"
listen = "127.0.0.1:0"
mode = "offload"
keys = ["web"]
backend = "`+echo.Addr+`"
[listener.tls]
client_auth = "require"
client_ca = "clients.pem"
crl = ["clients.crl"]
`)
	logs := &testenv.SyncBuffer{}
	log := slog.New(slog.NewTextHandler(logs, nil))
	m := NewMetrics(prometheus.NewRegistry())
	g := NewGroup(func(ctx context.Context) (*Plan, error) {
		lcs, err := Build(ctx, cfg, f.open, log)
		if err != nil {
			return nil, err
		}
		return &Plan{Listeners: lcs}, nil
	}, &Options{Log: log, Metrics: m})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := g.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if got, want := counter(m.CertExpiry.WithLabelValues("web")), float64(web.Cert.NotAfter.Unix()); got != want {
		t.Errorf("certificate expiry = %v, want %v", got, want)
	}
	if got := counter(m.CRLNextUpdate.WithLabelValues("front CA")); got < float64(time.Now().Unix()) {
		t.Errorf("CRL next update = %v", got)
	}
	logs.WaitFor(t, 5*time.Second, "certificate expires soon")
	if n := strings.Count(logs.String(), "certificate expires soon"); n != 1 || !strings.Contains(logs.String(), "days_left=4") {
		t.Errorf("%d expiry warnings, want 1 (within 7 days):\n%s", n, logs)
	}
	// A reload does not repeat them.
	if err := g.Reload(ctx); err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(logs.String(), "certificate expires soon"); n != 1 {
		t.Errorf("warnings repeated on reload: %d", n)
	}
	if got := counter(m.CertExpiry.WithLabelValues("api")); got != 0 {
		t.Errorf("a key no listener uses has an expiry gauge: %v", got)
	}
	cancel()
	g.Wait()

	// A certificate 90 days from expiry gets no warning.
	var w expiryWatch
	logs.Reset()
	lc := &ListenerConfig{revocation: &revocationInfo{leaves: map[string]*x509.Certificate{"api": f.p.api.Cert}}}
	w.note(m, log, []*ListenerConfig{lc}, time.Now())
	if logs.Len() != 0 {
		t.Errorf("warning for a certificate 90 days from expiry: %s", logs)
	}
	// It warns once 30 days are left, then at 7.
	w.note(m, log, []*ListenerConfig{lc}, f.p.api.Cert.NotAfter.Add(-29*24*time.Hour))
	w.note(m, log, []*ListenerConfig{lc}, f.p.api.Cert.NotAfter.Add(-28*24*time.Hour))
	if n := strings.Count(logs.String(), "certificate expires soon"); n != 1 {
		t.Errorf("%d warnings at 29 and 28 days, want 1", n)
	}
	w.note(m, log, []*ListenerConfig{lc}, f.p.api.Cert.NotAfter.Add(-6*24*time.Hour))
	if n := strings.Count(logs.String(), "certificate expires soon"); n != 2 || !strings.Contains(logs.String(), "days_left=6") {
		t.Errorf("no 7-day warning: %s", logs)
	}
}

// TestCheckWarnings: Build without keys (sealproxy check) warns about a
// certificate close to expiry and a CRL past NextUpdate.
func TestCheckWarnings(t *testing.T) {
	f := newBuildFixture(t)
	f.shortLived(t)
	stale := crlAt(t, f.p.ca, time.Now().Add(-48*time.Hour), time.Now().Add(-time.Hour))
	if err := os.WriteFile(filepath.Join(f.dir, "clients.crl"), stale, 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := f.config(t, buildKeys+`
[[listener]]
name = "test"
listen = "127.0.0.1:0"
mode = "offload"
keys = ["web"]
backend = "127.0.0.1:1"
[listener.tls]
client_auth = "require"
client_ca = "clients.pem"
crl = ["clients.crl"]
`)
	if _, err := Build(context.Background(), cfg, nil, nil); err != nil {
		t.Fatal(err)
	}
	all := fmt.Sprint(cfg.Warnings)
	if !strings.Contains(all, `the certificate of key "web" expires in 4 days`) || !strings.Contains(all, "past its NextUpdate") {
		t.Fatalf("warnings: %s", all)
	}
}

// TestCRLRefreshBeforeNextUpdate: past half its validity a URL's CRL is
// downloaded again in the background and replaces the one in hand, on
// disk too; a failed download backs off and keeps the old one.
func TestCRLRefreshBeforeNextUpdate(t *testing.T) {
	p := newPKI(t)
	bob := p.ca.Client(t, "bob")
	var body atomic.Pointer[[]byte]
	first := p.ca.CRL(t)
	body.Store(&first)
	var hits atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		if b := body.Load(); b != nil {
			w.Write(*b)
			return
		}
		http.Error(w, "down", http.StatusServiceUnavailable)
	}))
	defer srv.Close()
	cache := t.TempDir()
	rev, err := loadCRLSources(context.Background(), []string{srv.URL}, []*x509.Certificate{p.ca.Cert},
		crlOptions{cacheDir: cache, timeout: 5 * time.Second, log: discardLog})
	if err != nil {
		t.Fatal(err)
	}
	s := rev.sources[0]
	chain := []*x509.Certificate{bob.Cert}
	if res, _ := rev.check(chain, time.Now()); res != crlOK || hits.Load() != 1 {
		t.Fatalf("before the refresh: %v, %d fetches", res, hits.Load())
	}
	// The CA revokes bob; 13 hours later (past half of the 24h CRL) a
	// poll fetches the new CRL.
	second := crlAt(t, p.ca, time.Now(), time.Now().Add(24*time.Hour), bob.Cert)
	body.Store(&second)
	later := time.Now().Add(13 * time.Hour)
	rev.poll(later)
	testenv.Eventually(t, 10*time.Second, "refresh", func() bool { return hits.Load() == 2 && !s.busy.Load() })
	if res, _ := rev.check(chain, time.Now()); res != crlRevoked {
		t.Fatal("the refreshed CRL was not installed")
	}
	cached, err := os.ReadFile(s.cache)
	if err != nil || !strings.Contains(string(cached), "X509 CRL") {
		t.Fatalf("cache not rewritten: %v", err)
	}
	if lists, err := parseCRLs("cache", cached, s.cas); err != nil || !lists[0].this.Equal(mustParseCRL(t, second).ThisUpdate) {
		t.Fatalf("cache holds another CRL: %v", err)
	}

	// The server fails: the CRL in hand stays, and the next try waits.
	body.Store(nil)
	even := time.Now().Add(13 * time.Hour)
	s.now = func() time.Time { return even }
	rev.poll(even)
	testenv.Eventually(t, 10*time.Second, "failed refresh", func() bool { return hits.Load() == 3 && !s.busy.Load() })
	rev.poll(even) // a retry starts its download before poll returns (busy)
	if s.busy.Load() || hits.Load() != 3 {
		t.Fatal("a failed CRL download was retried at once")
	}
	if res, _ := rev.check(chain, time.Now()); res != crlRevoked {
		t.Fatal("a failed refresh dropped the CRL in hand")
	}
}

func mustParseCRL(t *testing.T, pemData []byte) *x509.RevocationList {
	t.Helper()
	b, _ := pem.Decode(pemData)
	crl, err := x509.ParseRevocationList(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return crl
}

// TestClientOCSPSlowResponder: a responder that never answers costs each
// waiting handshake at most client_ocsp_timeout, concurrent handshakes of
// one certificate share one query, and the failure is remembered so the
// next handshakes do not wait again.
func TestClientOCSPSlowResponder(t *testing.T) {
	p := newPKI(t)
	var hits atomic.Int32
	release := make(chan struct{})
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer slow.Close()
	defer close(release)
	leaf := p.ca.Issue(t, testenv.LeafOptions{CN: "carol", Client: true, OCSPServer: []string{slow.URL}})
	o := newClientOCSP(true, "", 300*time.Millisecond)
	var wg sync.WaitGroup
	errs := make(chan error, 5)
	for i := 0; i < 5; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := o.status(leaf.Cert, p.ca.Cert, time.Now())
			errs <- err
		}()
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("handshakes waited on a silent responder past the OCSP timeout")
	}
	close(errs)
	for err := range errs {
		if err == nil {
			t.Fatal("a silent responder gave an answer")
		}
	}
	testenv.Eventually(t, 10*time.Second, "the query ends", func() bool {
		o.mu.Lock()
		defer o.mu.Unlock()
		return len(o.inflight) == 0
	})
	if _, err := o.status(leaf.Cert, p.ca.Cert, time.Now()); err == nil || hits.Load() != 1 {
		t.Fatalf("after the failure: %v, %d queries (want the remembered failure, 1 query)", err, hits.Load())
	}
}
