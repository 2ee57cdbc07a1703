package proxy

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"testing"

	"github.com/sealproxy/sealproxy/proxy/config"
	"time"

	"github.com/sealproxy/sealproxy/testenv"
)

// TestBulkBothWays streams megabytes both ways at once through bridge
// (TLS on both sides, records of every size) and checks every byte.
func TestBulkBothWays(t *testing.T) {
	p := newPKI(t)
	backTLS := &tls.Config{Certificates: []tls.Certificate{p.backend.TLSCertificate()}}
	echo := testenv.StartEcho(t, backTLS)
	cfg := listenerConfig(config.ModeBridge, echo.Addr)
	cfg.TLS = serverTLSConfig(t, p.web)
	cfg.Upstream = &tls.Config{RootCAs: p.backCA.Pool(), ServerName: "backend.test"}
	srv := start(t, cfg, nil)

	c, err := dialTLS(t, srv.addr, clientConfig(p, "web.test"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	data := make([]byte, 4<<20)
	rand.Read(data)
	want := sha256.Sum256(data)
	errc := make(chan error, 1)
	go func() {
		// Writes of odd sizes make records of every length.
		rest := data
		for i := 1; len(rest) > 0; i = i*7%40000 + 1 {
			n := min(i, len(rest))
			if _, err := c.Write(rest[:n]); err != nil {
				errc <- err
				return
			}
			rest = rest[n:]
		}
		errc <- c.CloseWrite()
	}()
	h := sha256.New()
	n, err := io.Copy(h, c)
	if err != nil {
		t.Fatal(err)
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	if n != int64(len(data)) || !bytes.Equal(h.Sum(nil), want[:]) {
		t.Fatalf("echoed %d bytes, hash mismatch or short (want %d)", n, len(data))
	}
}

// TestPingPong exchanges many small messages: a byte left buffered
// anywhere in the relay would stall it.
func TestPingPong(t *testing.T) {
	p := newPKI(t)
	echo := testenv.StartEcho(t, nil)
	cfg := listenerConfig(config.ModeOffload, echo.Addr)
	cfg.TLS = serverTLSConfig(t, p.web)
	srv := start(t, cfg, nil)
	c, err := dialTLS(t, srv.addr, clientConfig(p, "web.test"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	br := bufio.NewReader(c)
	for i := 0; i < 2000; i++ {
		echoOnce(t, c, br, "ping")
	}
}

func BenchmarkHandshake(b *testing.B) {
	defer reportCPU(b)()
	p := newPKI(b)
	echo := testenv.StartEcho(b, nil)
	cfg := listenerConfig(config.ModeOffload, echo.Addr)
	cfg.TLS = serverTLSConfig(b, p.web)
	srv := start(b, cfg, &Options{Log: discardLog})
	cc := clientConfig(p, "web.test")
	b.ResetTimer()
	for b.Loop() {
		c, err := dialTLS(b, srv.addr, cc)
		if err != nil {
			b.Fatal(err)
		}
		c.Close()
	}
}

func BenchmarkCopy(b *testing.B) {
	for _, mode := range []config.Mode{config.ModeOffload, config.ModeBridge} {
		b.Run(mode.String(), func(b *testing.B) {
			defer reportCPU(b)()
			p := newPKI(b)
			// A sink backend: reads and discards, answers nothing.
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				b.Fatal(err)
			}
			defer ln.Close()
			var backTLS *tls.Config
			if mode == config.ModeBridge {
				backTLS = &tls.Config{Certificates: []tls.Certificate{p.backend.TLSCertificate()}}
			}
			go func() {
				for {
					c, err := ln.Accept()
					if err != nil {
						return
					}
					go func() {
						var r io.Reader = c
						if backTLS != nil {
							r = tls.Server(c, backTLS)
						}
						io.Copy(io.Discard, r)
						c.Close()
					}()
				}
			}()
			cfg := listenerConfig(mode, ln.Addr().String())
			cfg.TLS = serverTLSConfig(b, p.web)
			cfg.Upstream = &tls.Config{RootCAs: p.backCA.Pool(), ServerName: "backend.test"}
			srv := start(b, cfg, &Options{Log: discardLog})
			c, err := dialTLS(b, srv.addr, clientConfig(p, "web.test"))
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			chunk := make([]byte, 256<<10)
			b.SetBytes(int64(len(chunk)))
			b.ResetTimer()
			for b.Loop() {
				if _, err := c.Write(chunk); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkIdleConnMemory reports the memory (heap and stacks) the proxy
// holds per idle established offload connection: the figure the 16 KiB
// target is about. The clients and the backend run in a child process
// (TestHelperIdleClients) so that only the proxy's share is measured.
func BenchmarkIdleConnMemory(b *testing.B) {
	for _, mode := range []config.Mode{config.ModeOffload, config.ModeBridge} {
		b.Run(mode.String(), func(b *testing.B) { benchmarkIdleConnMemory(b, mode) })
	}
}

func benchmarkIdleConnMemory(b *testing.B, mode config.Mode) {
	var c idleCost
	for b.Loop() {
		c = idleConnCost(b, mode, 500)
	}
	b.ReportMetric(c.perConn, "B/idle-conn")
	b.ReportMetric(c.stackPerConn, "stack-B/idle-conn")
	b.ReportMetric(c.goroutinesPerConn, "goroutines/idle-conn")
}

// TestIdleConnCost holds the bounds docs/reliability.md gives for an idle
// offload connection, in process: no goroutine of its own (idle
// directions are parked on epoll, park_linux.go), and heap plus stacks
// under 13 KiB (11.5 KiB measured; 16.0 KiB with two waiting goroutines
// per connection, before parking).
func TestIdleConnCost(t *testing.T) {
	testenv.SkipIfShort(t, "opens 300 connections in a helper process")
	if !canPark {
		t.Skip("idle directions wait in goroutines on this system (park_other.go)")
	}
	c := idleConnCost(t, config.ModeOffload, 300)
	t.Logf("%.0f B heap+stack, %.0f B stack, %.2f goroutines per idle connection", c.perConn, c.stackPerConn, c.goroutinesPerConn)
	if c.goroutinesPerConn > 0.05 {
		t.Errorf("%.2f goroutines per idle connection, want none", c.goroutinesPerConn)
	}
	if !raceEnabled && c.perConn > 13<<10 {
		t.Errorf("%.0f bytes of heap and stack per idle connection, want at most %d", c.perConn, 13<<10)
	}
}

type idleCost struct{ perConn, stackPerConn, goroutinesPerConn float64 }

// idleConnCost measures the memory (heap and stacks) and the goroutines
// the proxy holds per idle established connection. The clients and the
// backend run in a child process (TestHelperIdleClients) so that only the
// proxy's share is measured.
func idleConnCost(tb testing.TB, mode config.Mode, n int) idleCost {
	p := newPKI(tb)
	dir := tb.TempDir()
	caFile := p.ca.WriteCA(tb, dir, "ca.pem")
	spec := strconv.Itoa(n) + "," + caFile
	if mode == config.ModeBridge {
		crt, key := p.backend.WriteFiles(tb, dir, "backend")
		spec += "," + crt + "," + key
	}
	exe, err := os.Executable()
	if err != nil {
		tb.Fatal(err)
	}
	cmd := exec.Command(exe, "-test.run=^TestHelperIdleClients$")
	cmd.Env = append(os.Environ(), "SEALPROXY_IDLE_HELPER="+spec)
	stdin, _ := cmd.StdinPipe()
	stdout, _ := cmd.StdoutPipe()
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	defer cmd.Wait()
	defer stdin.Close()
	lines := bufio.NewScanner(stdout)
	if !lines.Scan() {
		tb.Fatal("helper gave no backend address")
	}
	cfg := listenerConfig(mode, lines.Text())
	cfg.TLS = serverTLSConfig(tb, p.web)
	cfg.Upstream = &tls.Config{RootCAs: p.backCA.Pool(), ServerName: "backend.test",
		ClientSessionCache: tls.NewLRUClientSessionCache(64)}
	srv := start(tb, cfg, &Options{Log: discardLog})

	if os.Getenv("SEALPROXY_IDLE_HEAPPROFILE") != "" {
		runtime.MemProfileRate = 1
	}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	g0 := runtime.NumGoroutine()
	io.WriteString(stdin, srv.addr+"\n")
	if !lines.Scan() || lines.Text() != "ready" {
		tb.Fatalf("helper: %q", lines.Text())
	}
	testenv.Eventually(tb, 10*time.Second, "all active", func() bool { return counter(srv.metrics.Active) == float64(n) })
	// Past hotWait, when directions that just echoed have parked.
	time.Sleep(3 * hotWait)
	runtime.GC()
	runtime.ReadMemStats(&after)
	g1 := runtime.NumGoroutine()
	if f := os.Getenv("SEALPROXY_IDLE_HEAPPROFILE"); f != "" {
		out, err := os.Create(f)
		if err != nil {
			tb.Fatal(err)
		}
		pprof.Lookup("heap").WriteTo(out, 0)
		out.Close()
	}
	return idleCost{
		perConn:           float64(int64(after.HeapInuse+after.StackInuse)-int64(before.HeapInuse+before.StackInuse)) / float64(n),
		stackPerConn:      float64(int64(after.StackInuse)-int64(before.StackInuse)) / float64(n),
		goroutinesPerConn: float64(g1-g0) / float64(n),
	}
}

// TestHelperIdleClients is BenchmarkIdleConnMemory's child: it runs an
// echo backend, prints its address, reads the proxy's, opens idle TLS
// connections through it and holds them until stdin closes.
func TestHelperIdleClients(t *testing.T) {
	spec := os.Getenv("SEALPROXY_IDLE_HELPER")
	if spec == "" {
		t.Skip("helper process for BenchmarkIdleConnMemory")
	}
	f := strings.Split(spec, ",")
	n, _ := strconv.Atoi(f[0])
	caFile := f[1]
	var backTLS *tls.Config
	if len(f) == 4 { // bridge: a TLS echo backend
		cert, err := tls.LoadX509KeyPair(f[2], f[3])
		if err != nil {
			t.Fatal(err)
		}
		backTLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	}
	echo := testenv.StartEcho(t, backTLS)
	fmt.Println(echo.Addr)
	in := bufio.NewScanner(os.Stdin)
	if !in.Scan() {
		t.Fatal("no proxy address")
	}
	pem, err := os.ReadFile(caFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	cc := &tls.Config{RootCAs: pool, ServerName: "web.test"}
	var conns []net.Conn
	for range n {
		c, err := dialTLS(t, in.Text(), cc)
		if err != nil {
			t.Fatal(err)
		}
		br := bufio.NewReader(c)
		echoOnce(t, c, br, "x")
		conns = append(conns, c)
	}
	fmt.Println("ready")
	for in.Scan() {
	}
	for _, c := range conns {
		c.Close()
	}
}

// BenchmarkPingPong64 measures the round trip of 64-byte messages through
// offload (client and echo backend in this process).
func BenchmarkPingPong64(b *testing.B) {
	defer reportCPU(b)()
	p := newPKI(b)
	echo := testenv.StartEcho(b, nil)
	cfg := listenerConfig(config.ModeOffload, echo.Addr)
	cfg.TLS = serverTLSConfig(b, p.web)
	srv := start(b, cfg, &Options{Log: discardLog})
	c, err := dialTLS(b, srv.addr, clientConfig(p, "web.test"))
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	msg := make([]byte, 64)
	buf := make([]byte, 64)
	for b.Loop() {
		if _, err := c.Write(msg); err != nil {
			b.Fatal(err)
		}
		if _, err := io.ReadFull(c, buf); err != nil {
			b.Fatal(err)
		}
	}
}
