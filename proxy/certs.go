package proxy

import (
	"crypto"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"sync/atomic"
)

// NewCertificate pairs a PEM-decoded chain (leaf first) with its private
// key, after checking that the key is the leaf's. name identifies the
// pair in errors.
func NewCertificate(name string, chain [][]byte, key crypto.Signer) (*tls.Certificate, error) {
	if len(chain) == 0 {
		return nil, fmt.Errorf("key %q: empty certificate chain", name)
	}
	leaf, err := x509.ParseCertificate(chain[0])
	if err != nil {
		return nil, fmt.Errorf("key %q: parsing leaf certificate: %w", name, err)
	}
	type equaler interface{ Equal(crypto.PublicKey) bool }
	pub, ok := key.Public().(equaler)
	if !ok || !pub.Equal(leaf.PublicKey) {
		return nil, fmt.Errorf("key %q: the private key does not match the certificate %q (its public key differs)", name, leaf.Subject.CommonName)
	}
	return &tls.Certificate{Certificate: chain, PrivateKey: key, Leaf: leaf}, nil
}

// CertChooser picks the certificate for a ClientHello by SNI: an exact
// DNS name of a leaf first, then a wildcard (*.example.com matches one
// label), else the first certificate. Swap replaces the set atomically.
type CertChooser struct {
	set atomic.Pointer[certSet]
}

type certSet struct {
	def      *tls.Certificate
	names    map[string]*tls.Certificate // lower-case DNS names, wildcards as *.x
	staplers map[*tls.Certificate]*stapler
}

// NewCertChooser builds a chooser over certs; the first is the default.
func NewCertChooser(certs []*tls.Certificate) (*CertChooser, error) {
	c := &CertChooser{}
	if err := c.Swap(certs); err != nil {
		return nil, err
	}
	return c, nil
}

// Swap replaces the certificates; in-flight handshakes keep the old set.
func (c *CertChooser) Swap(certs []*tls.Certificate) error {
	return c.swap(certs, nil)
}

func (c *CertChooser) swap(certs []*tls.Certificate, staplers map[*tls.Certificate]*stapler) error {
	if len(certs) == 0 {
		return errors.New("no certificates")
	}
	s := &certSet{def: certs[0], names: map[string]*tls.Certificate{}, staplers: staplers}
	for _, cert := range certs {
		if cert.Leaf == nil {
			return errors.New("certificate without a parsed leaf")
		}
		names := cert.Leaf.DNSNames
		if len(names) == 0 && cert.Leaf.Subject.CommonName != "" {
			names = []string{cert.Leaf.Subject.CommonName}
		}
		for _, n := range names {
			n = lowerASCII(n)
			if _, dup := s.names[n]; !dup { // the first listed key wins
				s.names[n] = cert
			}
		}
	}
	c.set.Store(s)
	return nil
}

// GetCertificate implements tls.Config.GetCertificate.
func (c *CertChooser) GetCertificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	s := c.set.Load()
	cert := s.choose(hello.ServerName)
	if st := s.staplers[cert]; st != nil {
		if der := st.get(); der != nil {
			stapled := *cert
			stapled.OCSPStaple = der
			return &stapled, nil
		}
	}
	return cert, nil
}

func (s *certSet) choose(serverName string) *tls.Certificate {
	name := lowerASCII(strings.TrimSuffix(serverName, "."))
	if name != "" {
		if cert, ok := s.names[name]; ok {
			return cert
		}
		if _, rest, ok := strings.Cut(name, "."); ok {
			if cert, ok := s.names["*."+rest]; ok {
				return cert
			}
		}
	}
	return s.def
}

// errClientDenied reports a verified client certificate that no allow
// rule matches.
var errClientDenied = errors.New("client certificate not allowed")

// AllowRules restrict which verified client certificates are accepted.
// A certificate passes if any rule matches; no rules allow all.
type AllowRules struct {
	CN   []string
	DNS  []string // *.example.com matches one label
	URI  []string // a trailing * matches any suffix
	OU   []string
	SPKI [][32]byte // SHA-256 of SubjectPublicKeyInfo
}

// ParseSPKIPin decodes a base64 SHA-256 pin.
func ParseSPKIPin(s string) ([32]byte, error) {
	var pin [32]byte
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil || len(b) != 32 {
		return pin, fmt.Errorf("SPKI pin %q is not the base64 of a SHA-256 digest", s)
	}
	copy(pin[:], b)
	return pin, nil
}

// SPKIPin returns the pin of a certificate's public key.
func SPKIPin(cert *x509.Certificate) string {
	sum := sha256.Sum256(cert.RawSubjectPublicKeyInfo)
	return base64.StdEncoding.EncodeToString(sum[:])
}

func (r *AllowRules) empty() bool {
	return r == nil || len(r.CN)+len(r.DNS)+len(r.URI)+len(r.OU)+len(r.SPKI) == 0
}

// Allowed reports whether a verified leaf passes the rules.
func (r *AllowRules) Allowed(leaf *x509.Certificate) bool {
	if r.empty() {
		return true
	}
	for _, cn := range r.CN {
		if leaf.Subject.CommonName == cn {
			return true
		}
	}
	for _, ou := range r.OU {
		for _, have := range leaf.Subject.OrganizationalUnit {
			if have == ou {
				return true
			}
		}
	}
	for _, pat := range r.DNS {
		for _, name := range leaf.DNSNames {
			if matchDNS(pat, name) {
				return true
			}
		}
	}
	for _, pat := range r.URI {
		for _, u := range leaf.URIs {
			if matchURI(pat, u) {
				return true
			}
		}
	}
	if len(r.SPKI) > 0 {
		sum := sha256.Sum256(leaf.RawSubjectPublicKeyInfo)
		for _, pin := range r.SPKI {
			if pin == sum {
				return true
			}
		}
	}
	return false
}

// VerifyConnection is for tls.Config.VerifyConnection: it enforces the
// rules on a presented (already chain-verified) client certificate; nil
// when there are no rules.
func (r *AllowRules) VerifyConnection() func(tls.ConnectionState) error {
	return verifyClient(r, nil)
}

// matchDNS compares DNS names in ASCII case only (RFC 4343): Unicode
// folding would let "\u212a" (Kelvin sign) stand for "k", and a client
// reach a name the pattern does not name.
func matchDNS(pattern, name string) bool {
	if rest, ok := strings.CutPrefix(pattern, "*."); ok {
		_, nameRest, ok := strings.Cut(name, ".")
		return ok && equalFoldASCII(nameRest, rest)
	}
	return equalFoldASCII(pattern, name)
}

// lowerASCII lowercases A-Z only, as matchDNS compares: the certificate
// chosen for a name is the one its comparison would pick.
func lowerASCII(s string) string {
	return strings.Map(func(r rune) rune {
		if 'A' <= r && r <= 'Z' {
			return r + 'a' - 'A'
		}
		return r
	}, s)
}

func equalFoldASCII(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := 0; i < len(a); i++ {
		x, y := a[i], b[i]
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if 'A' <= y && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}

func matchURI(pattern string, u *url.URL) bool {
	s := u.String()
	if prefix, ok := strings.CutSuffix(pattern, "*"); ok {
		return strings.HasPrefix(s, prefix)
	}
	return s == pattern
}

// clientIdentity names a verified client for logs.
func clientIdentity(cs *tls.ConnectionState) string {
	if cs == nil || len(cs.PeerCertificates) == 0 {
		return ""
	}
	leaf := cs.PeerCertificates[0]
	switch {
	case leaf.Subject.CommonName != "":
		return leaf.Subject.CommonName
	case len(leaf.URIs) > 0:
		return leaf.URIs[0].String()
	case len(leaf.DNSNames) > 0:
		return leaf.DNSNames[0]
	}
	return "spki:" + SPKIPin(leaf)
}
