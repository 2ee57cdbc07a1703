package proxy

import (
	"bufio"
	"bytes"
	"context"
	"crypto"
	"crypto/tls"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sealproxy/sealproxy/proxy/config"
	"github.com/sealproxy/sealproxy/testenv"
)

// buildFixture writes certificates, CAs and a CRL revoking "bob" into a
// directory and returns a key opener over the generated keys.
type buildFixture struct {
	dir  string
	p    *pki
	bob  *testenv.Leaf
	keys map[string]crypto.Signer
}

func newBuildFixture(t *testing.T) *buildFixture {
	p := newPKI(t)
	dir := t.TempDir()
	f := &buildFixture{dir: dir, p: p, bob: p.ca.Client(t, "bob"), keys: map[string]crypto.Signer{}}
	p.web.WriteFiles(t, dir, "web")
	p.api.WriteFiles(t, dir, "api")
	p.ca.WriteCA(t, dir, "clients.pem")
	if err := os.WriteFile(filepath.Join(dir, "clients.crl"), p.ca.CRL(t, f.bob.Cert), 0o644); err != nil {
		t.Fatal(err)
	}
	f.keys["web"], f.keys["api"] = p.web.Key, p.api.Key
	return f
}

func (f *buildFixture) open(_ context.Context, k *config.Key) (crypto.Signer, error) {
	return f.keys[k.Name], nil
}

func (f *buildFixture) config(t *testing.T, body string) *config.Config {
	t.Helper()
	path := filepath.Join(f.dir, "sealproxy.toml")
	cfg, err := config.Parse(path, []byte(body))
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

const buildKeys = `
allow_plaintext_keys = true
[[key]]
name = "web"
cert = "web.crt"
source = "file:web.key"
[[key]]
name = "api"
cert = "api.crt"
source = "file:api.key"
`

func TestBuildTLSPolicy(t *testing.T) {
	f := newBuildFixture(t)
	cfg := f.config(t, buildKeys+`
[[listener]]
name = "web"
listen = "127.0.0.1:0"
mode = "offload"
keys = ["web", "api"]
backends = ["127.0.0.1:1", "unix:/run/x.sock"]
balance = "round_robin"
proxy_protocol = "v1"
[listener.tls]
min_version = "1.3"
alpn = ["h2"]
cipher_suites = ["TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256"]
curves = ["X25519", "P256"]
client_auth = "request"
client_ca = "clients.pem"
`)
	lcs, err := Build(context.Background(), cfg, f.open, nil)
	if err != nil {
		t.Fatal(err)
	}
	lc := lcs[0]
	tc := lc.TLS
	if tc.MinVersion != tls.VersionTLS13 || !slices.Equal(tc.NextProtos, []string{"h2"}) ||
		!slices.Equal(tc.CipherSuites, []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256}) ||
		!slices.Equal(tc.CurvePreferences, []tls.CurveID{tls.X25519, tls.CurveP256}) ||
		tc.ClientAuth != tls.VerifyClientCertIfGiven || tc.ClientCAs == nil {
		t.Errorf("TLS policy not applied: %+v", tc)
	}
	if !lc.RoundRobin || lc.ProxyProtocol != 1 || len(lc.Backends) != 2 || lc.Backends[1] != (Backend{"unix", "/run/x.sock"}) {
		t.Errorf("listener = %+v", lc)
	}
	cert, err := tc.GetCertificate(&tls.ClientHelloInfo{ServerName: "api.test"})
	if err != nil || cert.Leaf.Subject.CommonName != "api.test" {
		t.Errorf("SNI api.test chose %v, %v", cert, err)
	}

	// Without an opener (sealproxy check) nothing asks for a key.
	if _, err := Build(context.Background(), cfg, nil, nil); err != nil {
		t.Fatal(err)
	}

	// A key that is not its certificate's is named in the error.
	f.keys["web"] = f.p.api.Key
	if _, err := Build(context.Background(), cfg, f.open, nil); err == nil || !strings.Contains(err.Error(), `key "web"`) {
		t.Fatalf("mismatched key: err = %v", err)
	}
}

func TestCRLRevokesClient(t *testing.T) {
	f := newBuildFixture(t)
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
	lcs, err := Build(context.Background(), cfg, f.open, nil)
	if err != nil {
		t.Fatal(err)
	}
	srv := start(t, lcs[0], nil)
	try := func(leaf *testenv.Leaf) error {
		cc := clientConfig(f.p, "web.test")
		cc.Certificates = []tls.Certificate{leaf.TLSCertificate()}
		c, err := dialTLS(t, srv.addr, cc)
		if err != nil {
			return err
		}
		defer c.Close()
		io.WriteString(c, "x")
		c.CloseWrite()
		b, err := io.ReadAll(c)
		if err == nil && string(b) != "x" {
			err = errUnexpected
		}
		return err
	}
	if err := try(f.p.client); err != nil {
		t.Fatalf("alice: %v", err)
	}
	if err := try(f.bob); err == nil {
		t.Fatal("revoked bob was let in")
	}
	testenv.Eventually(t, 10*time.Second, "client_revoked counted", func() bool {
		return counter(srv.metrics.HandshakeErrors.WithLabelValues("test", "client_revoked")) == 1
	})

	// A CRL from another CA is refused at build time.
	other := testenv.NewCA(t, "other")
	if err := os.WriteFile(filepath.Join(f.dir, "clients.crl"), other.CRL(t), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Build(context.Background(), cfg, f.open, nil); err == nil || !strings.Contains(err.Error(), "not signed by any CA") {
		t.Fatalf("foreign CRL: err = %v", err)
	}
}

func TestOCSPStaple(t *testing.T) {
	f := newBuildFixture(t)
	echo := testenv.StartEcho(t, nil)
	staple := f.p.ca.OCSPResponse(t, f.p.web.Cert, false)
	if err := os.WriteFile(filepath.Join(f.dir, "web.ocsp"), staple, 0o644); err != nil {
		t.Fatal(err)
	}
	body := strings.Replace(buildKeys, `source = "file:web.key"`, "source = \"file:web.key\"\nocsp_staple = \"web.ocsp\"", 1) + `
[[listener]]
name = "test"
listen = "127.0.0.1:0"
mode = "offload"
keys = ["web"]
backend = "` + echo.Addr + `"
`
	cfg := f.config(t, body)
	lcs, err := Build(context.Background(), cfg, f.open, nil)
	if err != nil {
		t.Fatal(err)
	}
	srv := start(t, lcs[0], nil)
	c, err := dialTLS(t, srv.addr, clientConfig(f.p, "web.test"))
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	if got := c.ConnectionState().OCSPResponse; !bytes.Equal(got, staple) {
		t.Errorf("stapled %d bytes, want the %d of the file", len(got), len(staple))
	}

	// A staple that says revoked, or is for another certificate, is refused.
	for name, der := range map[string][]byte{
		"revoked":    f.p.ca.OCSPResponse(t, f.p.web.Cert, true),
		"other cert": f.p.ca.OCSPResponse(t, f.p.api.Cert, false),
	} {
		if err := os.WriteFile(filepath.Join(f.dir, "web.ocsp"), der, 0o644); err != nil {
			t.Fatal(err)
		}
		if _, err := Build(context.Background(), cfg, f.open, nil); err == nil || !strings.Contains(err.Error(), "ocsp_staple") {
			t.Errorf("%s staple: err = %v", name, err)
		}
	}
}

// TestBuildBridgeAndConnect drives bridge and connect listeners built
// from TOML: upstream CA, server name and client key; connect allow-list
// and required client certificates.
func TestBuildBridgeAndConnect(t *testing.T) {
	f := newBuildFixture(t)
	proxyClient := f.p.ca.Client(t, "sealproxy")
	proxyClient.WriteFiles(t, f.dir, "proxyclient")
	f.keys["proxyclient"] = proxyClient.Key
	f.p.backCA.WriteCA(t, f.dir, "backend-ca.pem")
	backTLS := &tls.Config{
		Certificates: []tls.Certificate{f.p.backend.TLSCertificate()},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    f.p.ca.Pool(),
	}
	tlsEcho := testenv.StartEcho(t, backTLS)
	plainEcho := testenv.StartEcho(t, nil)
	_, echoPort, _ := net.SplitHostPort(plainEcho.Addr)
	cfg := f.config(t, buildKeys+`
[[key]]
name = "proxyclient"
cert = "proxyclient.crt"
source = "file:proxyclient.key"

[[listener]]
name = "bridge"
listen = "127.0.0.1:0"
mode = "bridge"
keys = ["web"]
backend = "`+tlsEcho.Addr+`"
[listener.upstream]
ca = "backend-ca.pem"
server_name = "backend.test"
client_key = "proxyclient"

[[listener]]
name = "tunnel"
listen = "127.0.0.1:0"
mode = "connect"
keys = ["web"]
[listener.tls]
client_auth = "require"
client_ca = "clients.pem"
[listener.connect]
allow = ["127.0.0.1:`+echoPort+`"]
`)
	lcs, err := Build(context.Background(), cfg, f.open, nil)
	if err != nil {
		t.Fatal(err)
	}
	bridge, tunnel := start(t, lcs[0], nil), start(t, lcs[1], nil)

	c, err := dialTLS(t, bridge.addr, clientConfig(f.p, "web.test"))
	if err != nil {
		t.Fatal(err)
	}
	if got := roundTrip(t, c, "bridged"); got != "bridged" {
		t.Errorf("bridge echo %q", got)
	}
	c.Close()
	if id := <-tlsEcho.IDs; id != "sealproxy" {
		t.Errorf("backend saw client %q", id)
	}

	cc := clientConfig(f.p, "web.test")
	cc.Certificates = []tls.Certificate{f.p.client.TLSCertificate()}
	c, err = dialTLS(t, tunnel.addr, cc)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, "CONNECT "+plainEcho.Addr+" HTTP/1.1\r\n\r\n")
	br := bufio.NewReader(c)
	if status, _ := br.ReadString('\n'); !strings.HasPrefix(status, "HTTP/1.1 200") {
		t.Fatalf("CONNECT status %q", status)
	}
	br.ReadString('\n')
	echoOnce(t, c, br, "tunnelled")
}

// TestDefaultsIntermediate: without cipher_suites and curves a listener
// speaks Mozilla's intermediate profile: a TLS 1.2 client that offers
// only CBC suites, or only P-521, is refused (Go's own defaults accept
// both), while AES-GCM, ChaCha20-Poly1305 and the profile's groups work.
// A CBC suite named in cipher_suites is served.
func TestDefaultsIntermediate(t *testing.T) {
	f := newBuildFixture(t)
	echo := testenv.StartEcho(t, nil)
	listener := func(tlsTable string) string {
		return buildKeys + `
[[listener]]
name = "web"
listen = "127.0.0.1:0"
mode = "offload"
keys = ["web"]
backend = "` + echo.Addr + `"
` + tlsTable
	}
	serve := func(cfg *config.Config) string {
		lcs, err := Build(context.Background(), cfg, f.open, nil)
		if err != nil {
			t.Fatal(err)
		}
		return start(t, lcs[0], nil).addr
	}
	defaults := serve(f.config(t, listener("")))
	withCBC := serve(f.config(t, listener("[listener.tls]\ncipher_suites = [\"TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA\"]\n")))

	tls12 := func(suites []uint16, curves []tls.CurveID) *tls.Config {
		c := clientConfig(f.p, "web.test")
		c.MaxVersion = tls.VersionTLS12
		c.CipherSuites, c.CurvePreferences = suites, curves
		return c
	}
	cbc := []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA, tls.TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA,
		tls.TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA, tls.TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA}
	for _, tt := range []struct {
		name string
		addr string
		cfg  *tls.Config
		ok   bool
	}{
		{"CBC only", defaults, tls12(cbc, nil), false},
		{"AES-GCM", defaults, tls12([]uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384}, nil), true},
		{"ChaCha20-Poly1305", defaults, tls12([]uint16{tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256}, nil), true},
		{"P-521 only", defaults, tls12(nil, []tls.CurveID{tls.CurveP521}), false},
		{"P-384", defaults, tls12(nil, []tls.CurveID{tls.CurveP384}), true},
		{"TLS 1.3 X25519MLKEM768", defaults, func() *tls.Config {
			c := clientConfig(f.p, "web.test")
			c.CurvePreferences = []tls.CurveID{tls.X25519MLKEM768}
			return c
		}(), true},
		{"CBC named in cipher_suites", withCBC, tls12(cbc, nil), true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c, err := dialTLS(t, tt.addr, tt.cfg)
			if err == nil {
				defer c.Close()
				if got := roundTrip(t, c, "x"); got != "x" {
					t.Fatalf("echo %q", got)
				}
			}
			if (err == nil) != tt.ok {
				t.Fatalf("handshake err = %v, want success %v", err, tt.ok)
			}
		})
	}
}

// TestAllowRulesNeedACertificate: a listener whose tls.Config only asks
// for a certificate (VerifyClientCertIfGiven, as client_auth = "request"
// builds) refuses a client that shows none when allow rules exist; the
// configuration refuses that combination too, this is the second fence.
func TestAllowRulesNeedACertificate(t *testing.T) {
	p := newPKI(t)
	echo := testenv.StartEcho(t, nil)
	cfg := listenerConfig(config.ModeOffload, echo.Addr)
	cfg.TLS = serverTLSConfig(t, p.web)
	cfg.TLS.ClientAuth = tls.VerifyClientCertIfGiven
	cfg.TLS.ClientCAs = p.ca.Pool()
	cfg.TLS.VerifyConnection = (&AllowRules{CN: []string{"alice"}}).VerifyConnection()
	srv := start(t, cfg, nil)

	c, err := dialTLS(t, srv.addr, clientConfig(p, "web.test"))
	if err == nil {
		// TLS 1.3: the refusal arrives with the first read; an echo means
		// the client got through.
		c.SetDeadline(time.Now().Add(5 * time.Second))
		io.WriteString(c, "x")
		var got []byte
		got, err = io.ReadAll(c)
		c.Close()
		if string(got) == "x" {
			t.Fatal("a client without a certificate passed the allow rules")
		}
	}
	if err == nil || !strings.Contains(err.Error(), "bad certificate") {
		t.Fatalf("no refusal: %v", err)
	}
	withCert := clientConfig(p, "web.test")
	withCert.Certificates = []tls.Certificate{p.client.TLSCertificate()}
	c, err = dialTLS(t, srv.addr, withCert)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if got := roundTrip(t, c, "alice"); got != "alice" {
		t.Fatalf("echo %q", got)
	}
}
