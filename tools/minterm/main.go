// Command minterm is the smallest useful TLS terminator in Go: crypto/tls
// and io.Copy, one goroutine per direction. It is the baseline that
// tools/bench compares sealproxy with; it is not part of the product.
package main

import (
	"crypto/tls"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
)

func main() {
	err := run(os.Args[1:])
	fmt.Fprintf(os.Stderr, "minterm: error: %v\n", err)
	os.Exit(1)
}

// run serves until accepting fails; it returns only with an error.
func run(args []string) error {
	fs := flag.NewFlagSet("minterm", flag.ContinueOnError)
	listen := fs.String("listen", "127.0.0.1:8443", "TLS address to listen on")
	backend := fs.String("backend", "127.0.0.1:9000", "plain TCP backend")
	certFile := fs.String("cert", "", "PEM certificate chain, leaf first")
	keyFile := fs.String("key", "", "PEM private key")
	if err := fs.Parse(args); err != nil {
		return err
	}
	cert, err := tls.LoadX509KeyPair(*certFile, *keyFile)
	if err != nil {
		return err
	}
	ln, err := tls.Listen("tcp", *listen, &tls.Config{Certificates: []tls.Certificate{cert}})
	if err != nil {
		return err
	}
	for {
		c, err := ln.Accept()
		if err != nil {
			return err
		}
		go serve(c, *backend)
	}
}

func serve(c net.Conn, backend string) {
	defer c.Close()
	b, err := net.Dial("tcp", backend)
	if err != nil {
		return
	}
	defer b.Close()
	done := make(chan struct{})
	go func() {
		_, _ = io.Copy(b, c)
		_ = b.(*net.TCPConn).CloseWrite()
		close(done)
	}()
	_, _ = io.Copy(c, b)
	_ = c.(*tls.Conn).CloseWrite()
	<-done
}
