// Command demo brings sealproxy up on 127.0.0.1 with nothing installed
// beyond Go: a Tang server with fresh keys that holds each recovery for an
// operator's approval (the code `sealgate serve --approval required`
// runs), an HTTP echo backend, a fresh CA and server certificate whose
// private key is sealed to the Tang server (the code `seal encrypt tang`
// runs) and never written in the clear, and the real `sealproxy run` in
// front of the backend, built from this checkout and supervised the way
// systemd does it (NOTIFY_SOCKET). The demo plays the operator: it
// types the approval code sealproxy shows at the gate and approves
// it through the gate's operator API (as `seal approve` does). Then it
// does a TLS round trip through the
// proxy, reloads it with SIGHUP, stops it with SIGTERM, and exits; with
// -hold it keeps everything running until Ctrl-C, for you to try the
// printed commands.
package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/sealproxy/sealproxy/testenv"
	"github.com/sealproxy/sealproxy/unlock"
	"github.com/sealproxy/sealproxy/unlock/gate"
	"github.com/sealproxy/sealproxy/vault/keyref"
)

const serverName = "demo.sealproxy.test"

func main() {
	hold := flag.Bool("hold", false, "keep everything running until Ctrl-C (to try the printed commands)")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Stdout, *hold); err != nil {
		fmt.Fprintf(os.Stderr, "demo: error: %v\n", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, w io.Writer, hold bool) error {
	out := &lockedWriter{w: w} // the proxy's log and the steps interleave
	if !hold {
		// Never hang when run unattended.
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 3*time.Minute)
		defer cancel()
	}
	dir, err := os.MkdirTemp("", "sealproxy-demo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)

	// 1. Tang, behind an approval gate.
	gt, err := testenv.ServeGate(testenv.GateOptions{Dir: filepath.Join(dir, "gate"), Operators: []string{"demo"}})
	if err != nil {
		return fmt.Errorf("starting the gate: %w", err)
	}
	defer gt.Close()
	if err := os.WriteFile(filepath.Join(dir, "operator.token"), []byte(gt.Tokens["demo"]+"\n"), 0o600); err != nil {
		return err
	}
	tangURL, thp := gt.URL, gt.Thp
	fmt.Fprintf(out, "1. Tang server with approval (sealgate serve --approval required) on %s, fresh keys;\n   signing key thumbprint %s, one operator: demo\n", tangURL, thp)

	// 2. Backend.
	backend, stopBackend, err := startBackend()
	if err != nil {
		return fmt.Errorf("starting the backend: %w", err)
	}
	defer stopBackend()
	fmt.Fprintf(out, "2. HTTP echo backend on %s\n", backend)

	// 3. CA, certificate, sealed key.
	// ca.crt and web.crt (for serverName and 127.0.0.1); the private key
	// is sealed below and wiped: it is never written to disk.
	pki, err := testenv.WritePKI(dir, testenv.PKIOptions{CAName: "sealproxy demo CA", ServerName: serverName, File: "web"})
	if err != nil {
		return err
	}
	keyPEM, err := pki.Server.MarshalKey()
	if err != nil {
		return err
	}
	jwe, err := unlock.Encrypt(ctx, "tang", fmt.Appendf(nil, `{"url":%q,"thp":%q}`, tangURL, thp), keyPEM, nil)
	clear(keyPEM)
	if err != nil {
		return fmt.Errorf("sealing: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "web.key.jwe"), jwe, 0o600); err != nil {
		return err
	}
	fmt.Fprintf(out, "3. fresh CA and certificate for %s in %s;\n   its private key sealed to %s (seal encrypt tang) into web.key.jwe, %d bytes; no key file in the clear\n",
		serverName, dir, tangURL, len(jwe))

	// 4. sealproxy.
	cfgPath := filepath.Join(dir, "sealproxy.toml")
	cfg := fmt.Sprintf(`# written by the demo
shutdown_timeout = "10s"

[[key]]
name = "web"
cert = "web.crt"
source = %q

[[listener]]
name = "web"
listen = "127.0.0.1:0"
mode = "offload"
keys = ["web"]
backend = %q

[admin]
listen = "127.0.0.1:0"
reload = true

[unlock]
timeout = "1m"
`, keyref.Sealed("web.key.jwe"), backend)
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		return err
	}
	fmt.Fprintln(out, "4. building sealproxy from this checkout and starting `sealproxy run`:")
	bin, err := testenv.Build(ctx, "sealproxy", dir, "GOEXPERIMENT=runtimesecret")
	if err != nil {
		return err
	}
	p, err := startProxy(ctx, bin, cfgPath, dir, out)
	if err != nil {
		return err
	}
	defer p.kill()

	// The operator's part: the gate holds the recovery; sealproxy shows
	// the code (log, systemd STATUS=); the operator types it at the gate,
	// which lists the request without it (number matching).
	status, err := p.waitForMsg(ctx, "waiting for approval")
	if err != nil {
		return err
	}
	var req gate.Request
	select {
	case req = <-gt.Ready:
	case <-ctx.Done():
		return fmt.Errorf("waiting for the request at the gate: %w", ctx.Err())
	}
	shown := codeRE.FindStringSubmatch(status)
	if shown == nil || shown[1] != req.Code {
		return fmt.Errorf("the code sealproxy shows (%q) is not the gate's (%s)", status, req.Code)
	}
	fmt.Fprintf(out, "   systemd's status line reads: %s\n", strings.TrimPrefix(status, "STATUS="))
	fmt.Fprintf(out, "   the gate lists request %s from host %q, without a code; the operator types the code the host shows:\n", req.ID, req.Host)
	fmt.Fprintf(out, "     seal approve %s --gate %s\n", shown[1], tangURL)
	op := &gate.Client{URL: tangURL, Token: gt.Tokens["demo"]}
	if _, err := op.Approve(ctx, shown[1]); err != nil {
		return fmt.Errorf("approving: %w", err)
	}
	if err := p.waitFor(ctx, "READY=1"); err != nil {
		return err
	}
	addr, err := p.addr(ctx, "web")
	if err != nil {
		return err
	}
	admin, err := p.addr(ctx, "admin")
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "   systemd would now hear READY=1: every key open, every listener bound; proxy on %s\n", addr)

	// 5. A round trip.
	if err := roundTrip(ctx, out, dir, addr); err != nil {
		return err
	}

	// 6. Reload.
	if err := p.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		return err
	}
	if err := p.waitFor(ctx, "RELOADING=1"); err != nil {
		return err
	}
	if err := p.waitFor(ctx, "READY=1"); err != nil {
		return err
	}
	fmt.Fprintln(out, "6. SIGHUP: reloaded (RELOADING=1, then READY=1); the key was kept in memory: Tang was not asked, no new approval")

	fmt.Fprintf(out, `
Try it while the demo runs (go run ./tools/demo -hold keeps it running):
  curl --cacert %[1]s/ca.crt --resolve %[2]s:%[3]s:127.0.0.1 https://%[2]s:%[3]s/hello
  openssl s_client -connect %[4]s -servername %[2]s -CAfile %[1]s/ca.crt
  curl -X POST http://%[5]s/reload        # reload, as SIGHUP does
  curl http://%[5]s/metrics               # Prometheus metrics
  seal pending --gate %[6]s --token-file %[1]s/operator.token   # the operator's view (make build for bin/seal)
`, dir, serverName, port(addr), addr, admin, tangURL)

	if hold {
		fmt.Fprintln(out, "\nholding; Ctrl-C stops the proxy (SIGTERM: drain, then exit)")
		<-ctx.Done()
		ctx = context.WithoutCancel(ctx)
	}

	// 7. Stop.
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		return err
	}
	sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := p.waitFor(sctx, "STOPPING=1"); err != nil {
		return err
	}
	if err := p.wait(sctx); err != nil {
		return fmt.Errorf("sealproxy did not stop cleanly: %w", err)
	}
	fmt.Fprintln(out, "7. SIGTERM: STOPPING=1, connections drained, keys wiped, exit status 0")
	fmt.Fprintln(out, "demo: ok")
	return nil
}

var codeRE = regexp.MustCompile(`waiting for approval \(code ([A-Z0-9]{4}-[A-Z0-9]{4})\)`)

// startBackend serves an HTTP echo: the request comes back as the body.
func startBackend() (string, func(), error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	srv := &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintf(w, "echo from the backend: %s %s (TLS ended at sealproxy; the backend sees plain HTTP from %s)\n",
			r.Method, r.URL.Path, r.RemoteAddr)
	})}
	go srv.Serve(ln)
	return ln.Addr().String(), func() { srv.Close() }, nil
}

// proxyProcess is `sealproxy run` as a child, with the service
// manager's side of sd_notify.
type proxyProcess struct {
	cmd    *exec.Cmd
	notify *net.UnixConn
	msgs   chan string
	exited chan struct{}
	err    error

	mu    sync.Mutex
	lines []string // its log lines so far
}

var listenRE = regexp.MustCompile(`msg=(?:listening listener=(\S+)|"admin (listening)") addr=(\S+)`)

func startProxy(ctx context.Context, bin, cfgPath, dir string, out io.Writer) (*proxyProcess, error) {
	sock := filepath.Join(dir, "notify")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		return nil, err
	}
	p := &proxyProcess{notify: conn, msgs: make(chan string, 100), exited: make(chan struct{})}
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := conn.Read(buf)
			if err != nil {
				close(p.msgs)
				return
			}
			p.msgs <- string(buf[:n])
		}
	}()
	p.cmd = exec.Command(bin, "run", "--config", cfgPath)
	p.cmd.Env = append(os.Environ(), "NOTIFY_SOCKET="+sock)
	detach(p.cmd)
	stderr, err := p.cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	if err := p.cmd.Start(); err != nil {
		return nil, err
	}
	go func() {
		s := bufio.NewScanner(stderr)
		for s.Scan() {
			line := s.Text()
			fmt.Fprintf(out, "   | %s\n", shorten(line))
			p.mu.Lock()
			p.lines = append(p.lines, line)
			p.mu.Unlock()
		}
		p.err = p.cmd.Wait()
		close(p.exited)
	}()
	return p, nil
}

// shorten drops the timestamp of a log line.
func shorten(line string) string {
	if i := strings.Index(line, " level="); strings.HasPrefix(line, "time=") && i > 0 {
		return line[i+1:]
	}
	return line
}

// waitFor waits for an sd_notify message containing want.
func (p *proxyProcess) waitFor(ctx context.Context, want string) error {
	_, err := p.waitForMsg(ctx, want)
	return err
}

// waitForMsg waits for an sd_notify message containing want and returns
// its line that does.
func (p *proxyProcess) waitForMsg(ctx context.Context, want string) (string, error) {
	for {
		select {
		case m, ok := <-p.msgs:
			if !ok {
				return "", errors.New("notify socket closed")
			}
			for _, line := range strings.Split(m, "\n") {
				if strings.Contains(line, want) {
					return line, nil
				}
			}
		case <-p.exited:
			return "", fmt.Errorf("sealproxy exited (%v) before %s", p.err, want)
		case <-ctx.Done():
			return "", fmt.Errorf("waiting for %s from sealproxy: %w", want, ctx.Err())
		}
	}
}

// addr is the bound address of a listener ("admin" for the admin one),
// from the log. The log and sd_notify are separate channels: the line
// may come a little after READY=1.
func (p *proxyProcess) addr(ctx context.Context, name string) (string, error) {
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	for {
		p.mu.Lock()
		found := ""
		for _, l := range p.lines {
			if m := listenRE.FindStringSubmatch(l); m != nil && (m[1] == name || (name == "admin" && m[2] != "")) {
				found = m[3]
			}
		}
		p.mu.Unlock()
		if found != "" {
			return found, nil
		}
		select {
		case <-ctx.Done():
			return "", fmt.Errorf("no address of listener %s in the log: %w", name, ctx.Err())
		case <-p.exited:
			return "", fmt.Errorf("sealproxy exited (%v)", p.err)
		case <-t.C:
		}
	}
}

func (p *proxyProcess) wait(ctx context.Context) error {
	select {
	case <-p.exited:
		return p.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (p *proxyProcess) kill() {
	select {
	case <-p.exited:
	default:
		_ = p.cmd.Process.Kill()
		<-p.exited
	}
	p.notify.Close()
}

func port(addr string) string {
	_, p, _ := net.SplitHostPort(addr)
	return p
}

// roundTrip sends an HTTPS request through the proxy, trusting only the
// demo CA, and shows what came back.
func roundTrip(ctx context.Context, out io.Writer, dir, addr string) error {
	caPEM, err := os.ReadFile(filepath.Join(dir, "ca.crt"))
	if err != nil {
		return err
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	var state *tls.ConnectionState
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		DisableKeepAlives: true, // nothing left open for the drain to wait on
		DialTLSContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			c, err := (&tls.Dialer{Config: &tls.Config{RootCAs: pool, ServerName: serverName}}).DialContext(ctx, network, addr)
			if err == nil {
				s := c.(*tls.Conn).ConnectionState()
				state = &s
			}
			return c, err
		},
	}}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "https://"+serverName+"/hello", nil)
	if err != nil {
		return err
	}
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("HTTPS through sealproxy: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK || !bytes.Contains(body, []byte("echo from the backend: GET /hello")) {
		return fmt.Errorf("HTTPS through sealproxy: %s %q", resp.Status, body)
	}
	leaf := state.PeerCertificates[0]
	fmt.Fprintf(out, "5. GET https://%s/hello through %s: %s, %s, certificate %q issued by %q\n   (signed with the sealed key, unlocked through Tang into locked memory)\n   <- %s",
		serverName, addr, tls.VersionName(state.Version), tls.CipherSuiteName(state.CipherSuite),
		leaf.Subject.CommonName, leaf.Issuer.CommonName, body)
	return nil
}

// lockedWriter serialises writes from several goroutines.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}
