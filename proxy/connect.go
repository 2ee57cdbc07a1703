package proxy

import (
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strconv"
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
	c.connectRule = connectRule(c.cfg.ConnectAllow, dest)
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
	return connectRule(allow, dest) != ""
}

// connectRule returns the first allow-list entry dest matches, or "".
// It names the destination in metrics: the entries are the operator's
// and few, the destinations the clients' and unbounded.
func connectRule(allow []string, dest string) string {
	host, port, err := net.SplitHostPort(dest)
	if err != nil || host == "" {
		return ""
	}
	for _, p := range allow {
		ph, pp, err := net.SplitHostPort(p)
		if err != nil || (pp != "*" && pp != port) {
			continue
		}
		if matchDNS(ph, host) {
			return p
		}
	}
	return ""
}

// errForbiddenDestination is matched by a CONNECT whose name resolved to
// an address of the proxy's own host or network.
var errForbiddenDestination = errors.New("destination address not allowed")

// checkConnectAddr is the dialer's last word on a CONNECT destination, on
// the address actually dialed (after resolution, for each address tried,
// so a name cannot be re-resolved in between): loopback, link-local
// (169.254.169.254, cloud metadata), unspecified, multicast and the
// metadata services' other addresses are refused unless an allow entry
// names that address literally ("127.0.0.1:6379", "[::1]:*"). A name
// that matches a wildcard, or even an exact name, is not enough: whoever
// controls its DNS chooses the address.
func checkConnectAddr(allow []string, address string) error {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return fmt.Errorf("%w: %q is not an address", errForbiddenDestination, address)
	}
	ip := ap.Addr().Unmap().WithZone("")
	if !internalAddr(ip) {
		return nil
	}
	port := strconv.Itoa(int(ap.Port()))
	for _, p := range allow {
		ph, pp, err := net.SplitHostPort(p)
		if err != nil || (pp != "*" && pp != port) {
			continue
		}
		if a, err := netip.ParseAddr(ph); err == nil && a.Unmap() == ip {
			return nil
		}
	}
	return fmt.Errorf("%w: %s is a %s address; only an allow entry naming it (%s) permits it",
		errForbiddenDestination, ip, addrKind(ip), net.JoinHostPort(ip.String(), port))
}

var (
	thisNetwork = netip.MustParsePrefix("0.0.0.0/8")
	nat64       = netip.MustParsePrefix("64:ff9b::/96")
	// Cloud metadata services outside link-local: AWS's IPv6 endpoint.
	metadataV6 = netip.MustParseAddr("fd00:ec2::254")
)

// internalAddr reports addresses that reach the proxy's host or its
// link rather than a destination: loopback, link-local, unspecified,
// 0.0.0.0/8 (Linux connects it to the host), multicast, a metadata
// endpoint, or one of those behind NAT64.
func internalAddr(ip netip.Addr) bool { return addrKind(ip) != "" }

// addrKind names the kind of an internal address, "" for others.
func addrKind(ip netip.Addr) string {
	if nat64.Contains(ip) {
		b := ip.As16()
		ip = netip.AddrFrom4([4]byte(b[12:]))
	}
	switch {
	case ip.IsLoopback():
		return "loopback"
	case ip.IsUnspecified(), thisNetwork.Contains(ip):
		return "unspecified"
	case ip == netip.AddrFrom4([4]byte{169, 254, 169, 254}), ip == metadataV6:
		return "cloud metadata"
	case ip.IsLinkLocalUnicast():
		return "link-local"
	case ip.IsMulticast():
		return "multicast"
	}
	return ""
}
