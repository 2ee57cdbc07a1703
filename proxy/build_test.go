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
	echo := startEcho(t, nil)
	cfg := f.config(t, buildKeys+`
[[listener]]
name = "test"
listen = "127.0.0.1:0"
mode = "offload"
keys = ["web"]
backend = "`+echo.addr()+`"
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
	waitFor(t, "client_revoked counted", func() bool {
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
	echo := startEcho(t, nil)
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
backend = "` + echo.addr() + `"
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
	tlsEcho := startEcho(t, backTLS)
	plainEcho := startEcho(t, nil)
	_, echoPort, _ := net.SplitHostPort(plainEcho.addr())
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
backend = "`+tlsEcho.addr()+`"
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
	if id := <-tlsEcho.ids; id != "sealproxy" {
		t.Errorf("backend saw client %q", id)
	}

	cc := clientConfig(f.p, "web.test")
	cc.Certificates = []tls.Certificate{f.p.client.TLSCertificate()}
	c, err = dialTLS(t, tunnel.addr, cc)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, "CONNECT "+plainEcho.addr()+" HTTP/1.1\r\n\r\n")
	br := bufio.NewReader(c)
	if status, _ := br.ReadString('\n'); !strings.HasPrefix(status, "HTTP/1.1 200") {
		t.Fatalf("CONNECT status %q", status)
	}
	br.ReadString('\n')
	echoOnce(t, c, br, "tunnelled")
}
