package testenv

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sealproxy/sealproxy/unlock/tang"
)

// Tang is a Tang server for one test, stopped at cleanup.
type Tang struct {
	URL string // http://127.0.0.1:PORT
	Dir string // its key directory
	Thp string // SHA-256 thumbprint of its (first) active signing key

	t     testing.TB
	mu    sync.Mutex
	addr  string
	stop  func()
	start func() error
}

// Stop stops the server; Start brings it back on the same address.
func (s *Tang) Stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stop != nil {
		s.stop()
		s.stop = nil
		waitRefused(s.addr)
	}
}

// Start restarts a stopped server on the same address and key directory.
func (s *Tang) Start() {
	s.t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stop == nil {
		if err := s.start(); err != nil {
			s.t.Fatalf("restarting Tang at %s: %v", s.URL, err)
		}
	}
}

// Config returns the clevis tang pin configuration for this server.
func (s *Tang) Config() string {
	return fmt.Sprintf(`{"url":%q,"thp":%q}`, s.URL, s.Thp)
}

// EmbeddedTang starts our own Tang server (unlock/tang) over a fresh key
// directory. It needs nothing installed.
func EmbeddedTang(t testing.TB) *Tang {
	t.Helper()
	dir := t.TempDir()
	thp, err := tang.Keygen(dir)
	if err != nil {
		t.Fatalf("generating Tang keys: %v", err)
	}
	return ServeEmbeddedTang(t, dir, thp)
}

// ServeEmbeddedTang serves an existing key directory with our server (as
// `sealgate serve` does). An empty thp is looked up from the server.
func ServeEmbeddedTang(t testing.TB, dir, thp string) *Tang {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listening for Tang: %v", err)
	}
	s := &Tang{URL: "http://" + ln.Addr().String(), Dir: dir, Thp: thp, t: t, addr: ln.Addr().String()}
	serve := func(ln net.Listener) error {
		stop, err := serveKeyDir(ln, dir)
		s.stop = stop
		return err
	}
	s.start = func() error {
		ln, err := listenRetry(s.addr)
		if err != nil {
			return err
		}
		return serve(ln)
	}
	if err := serve(ln); err != nil {
		t.Fatalf("serving Tang: %v", err)
	}
	t.Cleanup(s.Stop)
	if s.Thp == "" {
		s.Thp = TangShowKeys(t, s)[0]
	}
	return s
}

// serveKeyDir serves dir with our Tang server on ln until stop.
func serveKeyDir(ln net.Listener, dir string) (stop func(), err error) {
	// A KeyDir, as `sealgate serve` uses: the server follows rotations of
	// dir (tang.Rotate or tangd-rotate-keys) without a restart.
	keys, err := tang.OpenKeyDir(dir)
	if err != nil {
		ln.Close()
		return nil, err
	}
	srv := &http.Server{Handler: tang.NewServer(keys, nil), ReadHeaderTimeout: 5 * time.Second}
	done := make(chan struct{})
	go func() { srv.Serve(ln); close(done) }()
	return func() { srv.Close(); <-done }, nil
}

// ServeTang is EmbeddedTang for callers without a *testing.T (the soak,
// the bench): it generates keys in dir, serves them on 127.0.0.1 and
// returns the URL, the signing key's thumbprint and a stop function.
func ServeTang(dir string) (url, thp string, stop func(), err error) {
	if thp, err = tang.Keygen(dir); err != nil {
		return "", "", nil, fmt.Errorf("tang keygen: %w", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", "", nil, fmt.Errorf("tang listener: %w", err)
	}
	if stop, err = serveKeyDir(ln, dir); err != nil {
		return "", "", nil, fmt.Errorf("tang keys: %w", err)
	}
	return "http://" + ln.Addr().String(), thp, stop, nil
}

// SealgateRotate rotates s's key directory the way `sealgate rotate` does
// (tang.Rotate), whichever server serves it, and returns the new signing
// thumbprint, which it also checks the running server now advertises.
func SealgateRotate(t testing.TB, s *Tang) string {
	t.Helper()
	thp, err := tang.Rotate(s.Dir)
	if err != nil {
		t.Fatalf("rotating Tang keys in %s: %v", s.Dir, err)
	}
	if got := TangShowKeys(t, s); len(got) != 1 || got[0] != thp {
		t.Fatalf("after rotation %s advertises %v, want only the new key %s", s.URL, got, thp)
	}
	s.Thp = thp
	return thp
}

// TangdTools are the Debian tang 11 programs RealTang runs.
const (
	TangdPath       = "/usr/libexec/tangd"
	TangdKeygenPath = "/usr/libexec/tangd-keygen"
	TangdRotatePath = "/usr/libexec/tangd-rotate-keys"
)

// RealTang starts Debian's tangd behind socat on 127.0.0.1 with keys made
// by tangd-keygen. It skips (or, under SEALPROXY_REQUIRE_INTEROP=1, fails)
// when tang or socat is missing.
func RealTang(t testing.TB) *Tang {
	t.Helper()
	LookTool(t, TangdKeygenPath, "tang")
	dir := t.TempDir()
	if out, err := exec.Command(TangdKeygenPath, dir).CombinedOutput(); err != nil {
		t.Fatalf("tangd-keygen: %v: %s", err, out)
	}
	return ServeRealTang(t, dir)
}

// ServeRealTang serves an existing key directory with tangd behind socat.
func ServeRealTang(t testing.TB, dir string) *Tang {
	t.Helper()
	tangd := LookTool(t, TangdPath, "tang")
	socat := LookTool(t, "socat", "socat")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	s := &Tang{URL: "http://" + addr, Dir: dir, t: t, addr: addr}
	s.start = func() error {
		_, port, _ := net.SplitHostPort(addr)
		var lastErr error
		for range 50 {
			cmd := exec.Command(socat,
				"TCP-LISTEN:"+port+",bind=127.0.0.1,reuseaddr,fork",
				"EXEC:"+tangd+" "+dir)
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			// socat's per-connection children inherit stderr; do not let a
			// lingering one hold Wait after the listener is killed.
			cmd.WaitDelay = 2 * time.Second
			if err := cmd.Start(); err != nil {
				return fmt.Errorf("starting socat: %w", err)
			}
			exited := make(chan struct{})
			go func() { cmd.Wait(); close(exited) }()
			if err := waitListening(addr, exited); err == nil {
				s.stop = func() { cmd.Process.Kill(); <-exited }
				return nil
			} else {
				lastErr = fmt.Errorf("%v: %s", err, strings.TrimSpace(stderr.String()))
			}
			cmd.Process.Kill()
			<-exited
			time.Sleep(100 * time.Millisecond)
		}
		return fmt.Errorf("socat did not come up on %s: %v", addr, lastErr)
	}
	if err := s.start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Stop)
	thps := TangShowKeys(t, s)
	s.Thp = thps[0]
	return s
}

// TangShowKeys asks the server for its signing-key thumbprints with our
// client, after checking the advertisement's signatures.
func TangShowKeys(t testing.TB, s *Tang) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	adv, err := (&tang.Client{}).Advertisement(ctx, s.URL, "")
	if err != nil {
		t.Fatalf("fetching advertisement of %s: %v", s.URL, err)
	}
	return adv.SigningThumbprints()
}

// RotateRealTang rotates the keys of a real tangd's directory with
// tangd-rotate-keys and returns the new signing thumbprint.
func RotateRealTang(t testing.TB, s *Tang) string {
	t.Helper()
	LookTool(t, TangdRotatePath, "tang")
	if out, err := exec.Command(TangdRotatePath, "-d", s.Dir).CombinedOutput(); err != nil {
		t.Fatalf("tangd-rotate-keys: %v: %s", err, out)
	}
	s.Thp = TangShowKeys(t, s)[0]
	return s.Thp
}

func waitListening(addr string, exited <-chan struct{}) error {
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-exited:
			return fmt.Errorf("socat exited")
		default:
		}
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err == nil {
			c.Close()
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("nothing listening on %s after 5s", addr)
}

// waitRefused waits until connecting to addr is refused. A closed Go
// listener's socket is closed for real only once its Accept has woken, so
// a connect just after Close can still land in the backlog and be reset;
// tests that expect "connection refused" wait here first.
func waitRefused(addr string) {
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if isRefused(err) {
			return
		}
		if err == nil {
			c.Close()
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// isRefused reports whether err is a refused connection on this platform.
func isRefused(err error) bool { return errors.Is(err, errRefused) }

func listenRetry(addr string) (net.Listener, error) {
	var err error
	for range 50 {
		var ln net.Listener
		if ln, err = net.Listen("tcp", addr); err == nil {
			return ln, nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return nil, err
}
