package proxy

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/sealproxy/sealproxy/proxy/config"
	"github.com/sealproxy/sealproxy/testenv"
)

// startLineBackend answers one line with "pong: LINE" and closes.
func startLineBackend(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				line, _ := bufio.NewReader(c).ReadString('\n')
				fmt.Fprintf(c, "pong: %s", line)
			}()
		}
	}()
	return ln.Addr().String()
}

func runTool(t *testing.T, stdin string, name string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Stdin = strings.NewReader(stdin)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

func TestOpenSSLClient(t *testing.T) {
	openssl := testenv.LookTool(t, "openssl", "openssl")
	p := newPKI(t)
	dir := t.TempDir()
	caFile := p.ca.WriteCA(t, dir, "ca.pem")
	clientCert, clientKey := p.client.WriteFiles(t, dir, "alice")

	backend := startLineBackend(t)
	cfg := listenerConfig(config.ModeOffload, backend)
	cfg.TLS = serverTLSConfig(t, p.web, p.api)
	web := tlsCert(t, p.web)
	web.OCSPStaple = p.ca.OCSPResponse(t, p.web.Cert, false)
	chooser, err := NewCertChooser([]*tls.Certificate{web, tlsCert(t, p.api)})
	if err != nil {
		t.Fatal(err)
	}
	cfg.TLS.GetCertificate = chooser.GetCertificate
	cfg.TLS.NextProtos = []string{"h2", "http/1.1"}
	cfg.TLS.ClientAuth = tls.VerifyClientCertIfGiven
	cfg.TLS.ClientCAs = p.ca.Pool()
	srv := start(t, cfg, nil)

	for _, tt := range []struct {
		name string
		args []string
		want []string
	}{
		{"tls1.3 sni alpn", []string{"-tls1_3", "-servername", "api.test", "-alpn", "h2"},
			[]string{"TLSv1.3", "ALPN protocol: h2", "CN = api.test", "pong: ping"}},
		{"tls1.2", []string{"-tls1_2", "-servername", "web.test", "-alpn", "http/1.1"},
			[]string{"TLSv1.2", "ALPN protocol: http/1.1", "CN = web.test", "pong: ping"}},
		{"client certificate", []string{"-servername", "web.test", "-cert", clientCert, "-key", clientKey},
			[]string{"pong: ping"}},
		{"ocsp staple", []string{"-servername", "web.test", "-status"},
			[]string{"OCSP Response Status: successful", "Cert Status: good", "pong: ping"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			args := append([]string{"s_client", "-connect", srv.addr, "-CAfile", caFile, "-verify_return_error", "-ign_eof"}, tt.args...)
			out := runTool(t, "ping\n", openssl, args...)
			for _, w := range tt.want {
				if !strings.Contains(out, w) {
					t.Errorf("openssl output lacks %q:\n%s", w, out)
				}
			}
		})
	}
	// The client-certificate run shows up as the identity in the log line;
	// the metric sees four handshakes.
	testenv.Eventually(t, 10*time.Second, "handshakes observed", func() bool {
		return counter(srv.metrics.Accepted) == 4
	})
}

func TestCurlThroughOffload(t *testing.T) {
	curl := testenv.LookTool(t, "curl", "curl")
	p := newPKI(t)
	dir := t.TempDir()
	caFile := p.ca.WriteCA(t, dir, "ca.pem")

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		fmt.Fprintf(w, "hello from the backend: %s %s %s", r.Method, r.URL.Path, body)
	})}
	go hs.Serve(ln)
	t.Cleanup(func() { hs.Close() })

	cfg := listenerConfig(config.ModeOffload, ln.Addr().String())
	cfg.TLS = serverTLSConfig(t, p.web)
	cfg.TLS.NextProtos = []string{"http/1.1"}
	srv := start(t, cfg, nil)
	_, port, _ := net.SplitHostPort(srv.addr)
	url := "https://web.test:" + port + "/path"
	resolve := "web.test:" + port + ":127.0.0.1"

	for _, args := range [][]string{
		{"--tlsv1.3"},
		{"--tlsv1.2", "--tls-max", "1.2"},
		{"--data", "posted"},
	} {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			out := runTool(t, "", curl, append([]string{"-sS", "--fail", "--cacert", caFile, "--resolve", resolve, url}, args...)...)
			want := "hello from the backend: GET /path "
			if len(args) == 2 && args[0] == "--data" {
				want = "hello from the backend: POST /path posted"
			}
			if strings.TrimSpace(out) != strings.TrimSpace(want) {
				t.Errorf("curl got %q, want %q", out, want)
			}
		})
	}
}

func TestCurlThroughBridge(t *testing.T) {
	curl := testenv.LookTool(t, "curl", "curl")
	p := newPKI(t)
	caFile := p.ca.WriteCA(t, t.TempDir(), "ca.pem")

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	backTLS := &tls.Config{
		Certificates: []tls.Certificate{p.backend.TLSCertificate()},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    p.ca.Pool(),
	}
	hs := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "backend over TLS, client %s", r.TLS.PeerCertificates[0].Subject.CommonName)
	})}
	go hs.Serve(tls.NewListener(ln, backTLS))
	t.Cleanup(func() { hs.Close() })

	cfg := listenerConfig(config.ModeBridge, ln.Addr().String())
	cfg.TLS = serverTLSConfig(t, p.web)
	cfg.TLS.NextProtos = []string{"http/1.1"}
	cfg.Upstream = &tls.Config{
		RootCAs: p.backCA.Pool(), ServerName: "backend.test",
		Certificates: []tls.Certificate{*tlsCert(t, p.ca.Client(t, "sealproxy"))},
	}
	srv := start(t, cfg, nil)
	_, port, _ := net.SplitHostPort(srv.addr)
	out := runTool(t, "", curl, "-sS", "--fail", "--cacert", caFile,
		"--resolve", "web.test:"+port+":127.0.0.1", "https://web.test:"+port+"/")
	if want := "backend over TLS, client sealproxy"; out != want {
		t.Errorf("curl got %q, want %q", out, want)
	}
}

// TestCurlClientCertificates: curl presents client certificates to an
// offload listener that requires them and allows only CN alice.
func TestCurlClientCertificates(t *testing.T) {
	curl := testenv.LookTool(t, "curl", "curl")
	p := newPKI(t)
	dir := t.TempDir()
	caFile := p.ca.WriteCA(t, dir, "ca.pem")
	aliceCert, aliceKey := p.client.WriteFiles(t, dir, "alice")
	bobCert, bobKey := p.ca.Client(t, "bob").WriteFiles(t, dir, "bob")

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "welcome")
	})}
	go hs.Serve(ln)
	t.Cleanup(func() { hs.Close() })

	cfg := listenerConfig(config.ModeOffload, ln.Addr().String())
	cfg.TLS = serverTLSConfig(t, p.web)
	cfg.TLS.NextProtos = []string{"http/1.1"}
	cfg.TLS.ClientAuth = tls.RequireAndVerifyClientCert
	cfg.TLS.ClientCAs = p.ca.Pool()
	cfg.TLS.VerifyConnection = (&AllowRules{CN: []string{"alice"}}).VerifyConnection()
	srv := start(t, cfg, nil)
	_, port, _ := net.SplitHostPort(srv.addr)
	args := func(cert, key string) []string {
		return []string{"-sS", "--fail", "--cacert", caFile, "--cert", cert, "--key", key,
			"--resolve", "web.test:" + port + ":127.0.0.1", "https://web.test:" + port + "/"}
	}
	if out := runTool(t, "", curl, args(aliceCert, aliceKey)...); out != "welcome" {
		t.Errorf("alice got %q", out)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, curl, args(bobCert, bobKey)...).CombinedOutput()
	if err == nil {
		t.Errorf("bob was let in: %s", out)
	}
	if err := exec.CommandContext(ctx, curl, "-sS", "--fail", "--cacert", caFile,
		"--resolve", "web.test:"+port+":127.0.0.1", "https://web.test:"+port+"/").Run(); err == nil {
		t.Error("a client without a certificate was let in")
	}
	testenv.Eventually(t, 10*time.Second, "denied counted", func() bool {
		return counter(srv.metrics.HandshakeErrors.WithLabelValues("test", "client_denied")) == 1
	})
}

// TestTicketLifetimeHint pins what docs/configuration.md says of the
// session ticket lifetime hint, which crypto/tls sets and sealproxy
// cannot: 7 days in TLS 1.3 tickets, none in TLS 1.2 tickets. The
// tickets themselves resume for at most three rotation periods
// (TestSessionTicketsSurviveReloadAndRotate). Should Go ever make the
// hint follow the keys, this fails and the docs change.
func TestTicketLifetimeHint(t *testing.T) {
	openssl := testenv.LookTool(t, "openssl", "openssl")
	p := newPKI(t)
	caFile := p.ca.WriteCA(t, t.TempDir(), "ca.pem")
	cfg := listenerConfig(config.ModeOffload, startLineBackend(t))
	cfg.TLS = serverTLSConfig(t, p.web)
	srv := start(t, cfg, nil)
	for _, tt := range []struct {
		version, hint string
	}{
		{"-tls1_3", "TLS session ticket lifetime hint: 604800 (seconds)"},
		{"-tls1_2", ""},
	} {
		out := runTool(t, "ping\n", openssl, "s_client", "-connect", srv.addr, "-CAfile", caFile,
			"-verify_return_error", "-ign_eof", "-servername", "web.test", tt.version)
		if !strings.Contains(out, "pong: ping") || !strings.Contains(out, "TLS session ticket:") {
			t.Fatalf("%s: no ticket or no echo:\n%s", tt.version, out)
		}
		got := ""
		for _, line := range strings.Split(out, "\n") {
			if strings.Contains(line, "lifetime hint") {
				got = strings.TrimSpace(line)
				break
			}
		}
		if got != tt.hint {
			t.Errorf("%s: lifetime hint %q, want %q", tt.version, got, tt.hint)
		}
	}
}
