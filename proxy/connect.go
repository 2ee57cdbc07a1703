package proxy

import (
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"time"
)

// maxConnectRequest bounds a CONNECT request line and its headers.
const maxConnectRequest = 8 << 10

// readConnect reads "CONNECT host:port HTTP/1.x" and its header block
// under the handshake deadline, and checks the destination against the
// allow-list. It returns bytes the client sent after the request.
func readConnect(c *conn, tc *tls.Conn) (dest string, early []byte, err error) {
	reply := func(status string) {
		_ = c.raw.SetWriteDeadline(time.Now().Add(time.Second))
		_, _ = io.WriteString(tc, "HTTP/1.1 "+status+"\r\nContent-Length: 0\r\n\r\n")
	}
	_ = c.raw.SetReadDeadline(time.Now().Add(c.cfg.HandshakeTimeout))
	defer func() { _ = c.raw.SetReadDeadline(time.Time{}) }()
	// Read whole records (a buffer larger than any record) so nothing
	// stays buffered in crypto/tls for the relay to miss.
	bp := bufPool.Get().(*[]byte)
	defer bufPool.Put(bp)
	var req []byte
	for {
		n, err := tc.Read(*bp)
		req = append(req, (*bp)[:n]...)
		if bytes.Contains(req, []byte("\r\n\r\n")) {
			break
		}
		if err != nil || len(req) > maxConnectRequest {
			reply("400 Bad Request")
			return "", nil, fmt.Errorf("reading CONNECT request: cut or longer than %d bytes", maxConnectRequest)
		}
	}
	dest, early, status, err := parseConnect(c.cfg.ConnectAllow, req)
	if err != nil {
		reply(status)
		return "", nil, err
	}
	c.backendName = dest
	return dest, early, nil
}

// parseConnect parses a CONNECT request, req holding at least its request
// line and header block up to the empty line, and checks the destination
// against the allow-list. early is what follows the header block (nil if
// nothing does); on failure status is the HTTP status to refuse it with.
func parseConnect(allow []string, req []byte) (dest string, early []byte, status string, err error) {
	end := bytes.Index(req, []byte("\r\n\r\n"))
	if end < 0 {
		return "", nil, "400 Bad Request", errors.New("reading CONNECT request: no end of header")
	}
	line, _, _ := bytes.Cut(req[:end], []byte("\r\n"))
	method, rest, _ := strings.Cut(string(line), " ")
	target, proto, _ := strings.Cut(rest, " ")
	if method != "CONNECT" || !strings.HasPrefix(proto, "HTTP/1.") {
		return "", nil, "405 Method Not Allowed", errors.New("not a CONNECT request")
	}
	if !connectAllowed(allow, target) {
		return "", nil, "403 Forbidden", fmt.Errorf("CONNECT to %q is not allowed", target)
	}
	if rest := req[end+4:]; len(rest) > 0 {
		early = rest
	}
	return target, early, "", nil
}

// connectAllowed matches host:port against patterns host:port where the
// host may be *.domain and the port *.
func connectAllowed(allow []string, dest string) bool {
	host, port, err := net.SplitHostPort(dest)
	if err != nil || host == "" {
		return false
	}
	for _, p := range allow {
		ph, pp, err := net.SplitHostPort(p)
		if err != nil || (pp != "*" && pp != port) {
			continue
		}
		if matchDNS(ph, host) {
			return true
		}
	}
	return false
}
