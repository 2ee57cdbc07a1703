// Command bench is sealproxy's data-plane benchmark harness: a load client
// (full TLS 1.3 handshakes, bulk streams, 64-byte ping-pong, idle
// connections), a backend that echoes, sinks or sources, and a driver
// (compare, Linux only) that runs sealproxy, haproxy, stunnel and a
// minimal Go terminator side by side. It talks only to 127.0.0.1, and
// every run is bounded in count and time. See docs/benchmarks.md.
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"time"
)

const usage = `usage: bench COMMAND [flags]

commands:
  compare     run every terminator side by side and print the table (Linux)
  backend     serve the benchmark backend (echo, sink, source) for -for
  handshakes  N full TLS 1.3 handshakes against -addr
  bulk        stream -gb GB through -addr (-down: from the backend)
  pingpong    64-byte round trips through -addr, p50/p99
  idle        open and hold -n connections through -addr for -for`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintf(os.Stderr, "bench: error: %v\n", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, out io.Writer) error {
	if len(args) == 0 {
		return errors.New(usage)
	}
	cmd, args := args[0], args[1:]
	fs := flag.NewFlagSet("bench "+cmd, flag.ContinueOnError)
	if cmd == "compare" {
		return compare(ctx, fs, args, out)
	}
	addr := fs.String("addr", "127.0.0.1:8443", "the terminator's TLS address (127.0.0.1 only)")
	caFile := fs.String("ca", "", "PEM CA that signed the terminator's certificate")
	name := fs.String("server-name", serverName, "TLS server name")
	n := fs.Int("n", 1000, "handshakes, round trips or idle connections")
	conc := fs.Int("c", 8, "concurrent connections while opening")
	gb := fs.Float64("gb", 1, "GB (10^9 bytes) to stream")
	down := fs.Bool("down", false, "bulk: stream from the backend to the client")
	hold := fs.Duration("for", 30*time.Second, "how long idle holds, or backend serves")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if err := loopbackOnly(*addr); err != nil {
		return err
	}
	if cmd == "backend" {
		ln, err := net.Listen("tcp", *addr)
		if err != nil {
			return err
		}
		ctx, cancel := context.WithTimeout(ctx, *hold)
		defer cancel()
		fmt.Fprintf(out, "backend on %s for %v\n", ln.Addr(), *hold)
		backend(ctx, ln)
		return nil
	}
	pool := x509.NewCertPool()
	if caPEM, err := os.ReadFile(*caFile); err != nil {
		return err
	} else if !pool.AppendCertsFromPEM(caPEM) {
		return fmt.Errorf("%s: no certificate", *caFile)
	}
	c := newClient(*addr, &tls.Config{RootCAs: pool, ServerName: *name})
	ctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	start := time.Now()
	switch cmd {
	case "handshakes":
		st, err := c.handshakes(ctx, *n, *conc)
		if err != nil {
			return err
		}
		el := time.Since(start)
		fmt.Fprintf(out, "%d handshakes in %v (%.0f/s), %s %s\n", *n, el.Round(time.Millisecond),
			float64(*n)/el.Seconds(), tls.CipherSuiteName(st.CipherSuite), st.CurveID)
	case "bulk":
		bytes := int64(*gb * 1e9)
		if err := c.bulk(ctx, bytes, !*down); err != nil {
			return err
		}
		el := time.Since(start)
		fmt.Fprintf(out, "%d bytes in %v (%.0f MB/s)\n", bytes, el.Round(time.Millisecond), float64(bytes)/1e6/el.Seconds())
	case "pingpong":
		rtts, err := c.pingpong(ctx, *n, 64)
		if err != nil {
			return err
		}
		fmt.Fprintf(out, "%d round trips of 64 bytes: p50 %v p99 %v\n", *n, percentile(rtts, 0.5), percentile(rtts, 0.99))
	case "idle":
		conns, err := c.idle(ctx, *n, *conc)
		if err != nil {
			return err
		}
		fmt.Fprintf(out, "%d connections open, holding them for %v\n", len(conns), *hold)
		select {
		case <-time.After(*hold):
		case <-ctx.Done():
		}
		closeAll(conns)
	default:
		return errors.New(usage)
	}
	return nil
}

// loopbackOnly refuses addresses off 127.0.0.1: the harness makes load.
func loopbackOnly(addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return err
	}
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("%s: the harness only talks to 127.0.0.1", addr)
	}
	return nil
}
