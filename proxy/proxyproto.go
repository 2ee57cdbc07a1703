package proxy

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strconv"
	"strings"
)

// PROXY protocol (haproxy's proxy-protocol.txt): a header sent to the
// backend before any payload, telling it the client's address and, in
// version 2, facts about the client's TLS session.

// ErrBadProxyHeader reports a malformed PROXY protocol header.
var ErrBadProxyHeader = errors.New("bad PROXY protocol header")

var proxyV2Sig = []byte("\r\n\r\n\x00\r\nQUIT\n")

// PROXY v2 TLV types used here.
const (
	PP2TypeALPN      = 0x01
	PP2TypeAuthority = 0x02 // the SNI the client sent
	PP2TypeSSL       = 0x20
	PP2SubtypeSSLVer = 0x21 // "TLSv1.3"
	PP2SubtypeSSLCN  = 0x22 // client certificate's subject CN
	PP2SubtypeCipher = 0x23
	// PP2TypeClientCert carries the client's leaf certificate (DER) in
	// the first custom type (0xE0): the specification has no standard
	// TLV for it.
	PP2TypeClientCert = 0xE0

	pp2ClientSSL      = 0x01
	pp2ClientCertConn = 0x02
)

// TLV is one PROXY v2 type-length-value entry.
type TLV struct {
	Type  byte
	Value []byte
}

// ProxyHeader is a parsed PROXY header. Src and Dst are invalid (zero)
// for UNKNOWN (v1) and LOCAL or unspecified (v2) headers.
type ProxyHeader struct {
	Version  int
	Local    bool // v2 LOCAL command: a health check, no client
	Src, Dst netip.AddrPort
	TLVs     []TLV
}

// TLV returns the value of the first TLV of type t.
func (h *ProxyHeader) TLV(t byte) ([]byte, bool) {
	for _, x := range h.TLVs {
		if x.Type == t {
			return x.Value, true
		}
	}
	return nil, false
}

// SSL returns the sub-TLVs of the PP2_TYPE_SSL entry and its client flags.
func (h *ProxyHeader) SSL() (client byte, verify uint32, sub []TLV, err error) {
	v, ok := h.TLV(PP2TypeSSL)
	if !ok {
		return 0, 0, nil, nil
	}
	if len(v) < 5 {
		return 0, 0, nil, fmt.Errorf("%w: PP2_TYPE_SSL shorter than 5 bytes", ErrBadProxyHeader)
	}
	sub, err = parseTLVs(v[5:])
	return v[0], binary.BigEndian.Uint32(v[1:5]), sub, err
}

func addrPort(a net.Addr) netip.AddrPort {
	if ta, ok := a.(*net.TCPAddr); ok {
		ap := ta.AddrPort()
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	}
	return netip.AddrPort{}
}

// AppendProxyV1 appends a version 1 (text) header. Mixed or missing
// address families make a PROXY UNKNOWN line.
func AppendProxyV1(b []byte, src, dst netip.AddrPort) []byte {
	s, d := src.Addr(), dst.Addr()
	if !s.IsValid() || !d.IsValid() || s.Is4() != d.Is4() {
		return append(b, "PROXY UNKNOWN\r\n"...)
	}
	fam := "TCP6"
	if s.Is4() {
		fam = "TCP4"
	}
	return fmt.Appendf(b, "PROXY %s %s %s %d %d\r\n", fam, s, d, src.Port(), dst.Port())
}

// AppendProxyV2 appends a version 2 (binary) PROXY header with tlvs.
func AppendProxyV2(b []byte, src, dst netip.AddrPort, tlvs []TLV) []byte {
	s, d := src.Addr(), dst.Addr()
	b = append(b, proxyV2Sig...)
	b = append(b, 0x21) // version 2, PROXY
	var addrs []byte
	switch {
	case s.IsValid() && d.IsValid() && s.Is4() && d.Is4():
		b = append(b, 0x11) // INET, STREAM
		addrs = append(append(addrs, s.AsSlice()...), d.AsSlice()...)
	case s.IsValid() && d.IsValid():
		b = append(b, 0x21) // INET6, STREAM (an IPv4 address mapped)
		s16, d16 := s.As16(), d.As16()
		addrs = append(append(addrs, s16[:]...), d16[:]...)
	default:
		b = append(b, 0x00) // UNSPEC
	}
	if len(addrs) > 0 {
		addrs = binary.BigEndian.AppendUint16(addrs, src.Port())
		addrs = binary.BigEndian.AppendUint16(addrs, dst.Port())
	}
	n := len(addrs)
	for _, t := range tlvs {
		n += 3 + len(t.Value)
	}
	b = binary.BigEndian.AppendUint16(b, uint16(n))
	b = append(b, addrs...)
	return appendTLVs(b, tlvs)
}

func appendTLVs(b []byte, tlvs []TLV) []byte {
	for _, t := range tlvs {
		b = append(b, t.Type)
		b = binary.BigEndian.AppendUint16(b, uint16(len(t.Value)))
		b = append(b, t.Value...)
	}
	return b
}

// maxTLV is the largest TLV value that fits the 16-bit length fields
// together with the addresses and the other TLVs.
const maxTLV = 60000

// tlsTLVs describes a client TLS session for a v2 header: ALPN, SNI
// (authority), and an SSL entry with version, cipher and the client
// certificate's CN, plus the client certificate itself.
func tlsTLVs(cs *tls.ConnectionState) []TLV {
	if cs == nil {
		return nil
	}
	var tlvs []TLV
	if cs.NegotiatedProtocol != "" {
		tlvs = append(tlvs, TLV{PP2TypeALPN, []byte(cs.NegotiatedProtocol)})
	}
	if cs.ServerName != "" {
		tlvs = append(tlvs, TLV{PP2TypeAuthority, []byte(cs.ServerName)})
	}
	client := byte(pp2ClientSSL)
	sub := []TLV{
		{PP2SubtypeSSLVer, []byte(tlsVersionName(cs.Version))},
		{PP2SubtypeCipher, []byte(tls.CipherSuiteName(cs.CipherSuite))},
	}
	var cert []byte
	if len(cs.PeerCertificates) > 0 {
		client |= pp2ClientCertConn
		leaf := cs.PeerCertificates[0]
		sub = append(sub, TLV{PP2SubtypeSSLCN, []byte(leaf.Subject.CommonName)})
		if len(leaf.Raw) <= maxTLV-2000 {
			cert = leaf.Raw
		}
	}
	ssl := []byte{client, 0, 0, 0, 0} // verify 0: the chain was verified
	ssl = appendTLVs(ssl, sub)
	tlvs = append(tlvs, TLV{PP2TypeSSL, ssl})
	if cert != nil {
		tlvs = append(tlvs, TLV{PP2TypeClientCert, cert})
	}
	return tlvs
}

func tlsVersionName(v uint16) string {
	switch v {
	case tls.VersionTLS10:
		return "TLSv1"
	case tls.VersionTLS11:
		return "TLSv1.1"
	case tls.VersionTLS12:
		return "TLSv1.2"
	case tls.VersionTLS13:
		return "TLSv1.3"
	}
	return "unknown"
}

// ReadProxyHeader reads a v1 or v2 header from r.
func ReadProxyHeader(r *bufio.Reader) (*ProxyHeader, error) {
	first, err := r.Peek(1)
	if err != nil {
		return nil, err
	}
	if first[0] == 'P' {
		return readProxyV1(r)
	}
	sig, err := r.Peek(16)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadProxyHeader, err)
	}
	if !bytes.Equal(sig[:12], proxyV2Sig) {
		return nil, fmt.Errorf("%w: no PROXY signature", ErrBadProxyHeader)
	}
	n := int(binary.BigEndian.Uint16(sig[14:16]))
	buf := make([]byte, 16+n)
	if _, err := io.ReadFull(r, buf); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadProxyHeader, err)
	}
	return parseProxyV2(buf)
}

func readProxyV1(r *bufio.Reader) (*ProxyHeader, error) {
	// A v1 line is at most 107 bytes with its CRLF.
	var line []byte
	for len(line) < 107 {
		c, err := r.ReadByte()
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrBadProxyHeader, err)
		}
		line = append(line, c)
		if c == '\n' {
			break
		}
	}
	s, ok := strings.CutSuffix(string(line), "\r\n")
	if !ok {
		return nil, fmt.Errorf("%w: v1 line longer than 107 bytes or without CRLF", ErrBadProxyHeader)
	}
	f := strings.Split(s, " ")
	if f[0] != "PROXY" || len(f) < 2 {
		return nil, fmt.Errorf("%w: v1 line does not start with PROXY", ErrBadProxyHeader)
	}
	h := &ProxyHeader{Version: 1}
	if f[1] == "UNKNOWN" {
		return h, nil
	}
	if len(f) != 6 || (f[1] != "TCP4" && f[1] != "TCP6") {
		return nil, fmt.Errorf("%w: want PROXY TCP4|TCP6 SRC DST SPORT DPORT", ErrBadProxyHeader)
	}
	src, err1 := netip.ParseAddr(f[2])
	dst, err2 := netip.ParseAddr(f[3])
	sp, err3 := parsePort(f[4])
	dp, err4 := parsePort(f[5])
	if err := errors.Join(err1, err2, err3, err4); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadProxyHeader, err)
	}
	if src.Is4() != (f[1] == "TCP4") || dst.Is4() != (f[1] == "TCP4") || src.Zone() != "" || dst.Zone() != "" {
		return nil, fmt.Errorf("%w: addresses do not match %s", ErrBadProxyHeader, f[1])
	}
	h.Src, h.Dst = netip.AddrPortFrom(src, sp), netip.AddrPortFrom(dst, dp)
	return h, nil
}

func parsePort(s string) (uint16, error) {
	if s == "" || (len(s) > 1 && s[0] == '0') {
		return 0, fmt.Errorf("bad port %q", s)
	}
	n, err := strconv.ParseUint(s, 10, 16)
	return uint16(n), err
}

func parseProxyV2(b []byte) (*ProxyHeader, error) {
	if b[12]>>4 != 2 {
		return nil, fmt.Errorf("%w: version %d", ErrBadProxyHeader, b[12]>>4)
	}
	h := &ProxyHeader{Version: 2}
	switch b[12] & 0xF {
	case 0:
		h.Local = true
	case 1:
	default:
		return nil, fmt.Errorf("%w: command %d", ErrBadProxyHeader, b[12]&0xF)
	}
	body := b[16:]
	var alen int
	switch b[13] >> 4 {
	case 0:
	case 1:
		alen = 12
	case 2:
		alen = 36
	case 3:
		alen = 216
	default:
		return nil, fmt.Errorf("%w: address family %d", ErrBadProxyHeader, b[13]>>4)
	}
	if len(body) < alen {
		return nil, fmt.Errorf("%w: addresses cut short", ErrBadProxyHeader)
	}
	switch alen {
	case 12:
		s, _ := netip.AddrFromSlice(body[0:4])
		d, _ := netip.AddrFromSlice(body[4:8])
		h.Src = netip.AddrPortFrom(s, binary.BigEndian.Uint16(body[8:]))
		h.Dst = netip.AddrPortFrom(d, binary.BigEndian.Uint16(body[10:]))
	case 36:
		s, _ := netip.AddrFromSlice(body[0:16])
		d, _ := netip.AddrFromSlice(body[16:32])
		h.Src = netip.AddrPortFrom(s, binary.BigEndian.Uint16(body[32:]))
		h.Dst = netip.AddrPortFrom(d, binary.BigEndian.Uint16(body[34:]))
	}
	if h.Local { // LOCAL: the receiver ignores addresses
		h.Src, h.Dst = netip.AddrPort{}, netip.AddrPort{}
	}
	var err error
	h.TLVs, err = parseTLVs(body[alen:])
	return h, err
}

func parseTLVs(b []byte) ([]TLV, error) {
	var out []TLV
	for len(b) > 0 {
		if len(b) < 3 {
			return nil, fmt.Errorf("%w: TLV header cut short", ErrBadProxyHeader)
		}
		n := int(binary.BigEndian.Uint16(b[1:3]))
		if len(b) < 3+n {
			return nil, fmt.Errorf("%w: TLV 0x%02x longer than the header", ErrBadProxyHeader, b[0])
		}
		out = append(out, TLV{Type: b[0], Value: b[3 : 3+n]})
		b = b[3+n:]
	}
	return out, nil
}

// readProxyHeaderExact reads one PROXY header from c without reading a
// byte past it (what follows belongs to TLS or the relay).
func readProxyHeaderExact(c net.Conn) (*ProxyHeader, error) {
	buf := make([]byte, 15, 232) // the shortest header is "PROXY UNKNOWN\r\n"
	if _, err := io.ReadFull(c, buf); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadProxyHeader, err)
	}
	if bytes.HasPrefix(buf, proxyV2Sig) {
		buf = buf[:16]
		if _, err := io.ReadFull(c, buf[15:]); err != nil {
			return nil, fmt.Errorf("%w: %v", ErrBadProxyHeader, err)
		}
		rest := make([]byte, binary.BigEndian.Uint16(buf[14:]))
		if _, err := io.ReadFull(c, rest); err != nil {
			return nil, fmt.Errorf("%w: %v", ErrBadProxyHeader, err)
		}
		buf = append(buf, rest...)
	} else {
		var b [1]byte
		for !bytes.HasSuffix(buf, []byte("\r\n")) && len(buf) < 107 {
			if _, err := io.ReadFull(c, b[:]); err != nil {
				return nil, fmt.Errorf("%w: %v", ErrBadProxyHeader, err)
			}
			buf = append(buf, b[0])
		}
	}
	return ReadProxyHeader(bufio.NewReader(bytes.NewReader(buf)))
}
