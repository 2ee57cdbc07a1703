package config

import (
	"crypto/tls"
	"encoding/base64"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/sealproxy/sealproxy/vault/keyref"
)

type validator struct {
	file  string
	loc   *locator
	errs  Errors
	warns Errors
}

func (v *validator) errorf(path, format string, args ...any) {
	v.errs = append(v.errs, &Error{File: v.file, Line: v.loc.line(path), Path: path, Msg: fmt.Sprintf(format, args...)})
}

// warnf records a setting that is valid but weakens the defaults.
func (v *validator) warnf(path, format string, args ...any) {
	v.warns = append(v.warns, &Error{File: v.file, Line: v.loc.line(path), Path: path, Msg: fmt.Sprintf(format, args...)})
}

// allowValues refuses empty rule values: cn = [""] matches every
// certificate without a common name. A DNS pattern "*" or "*." names no
// domain. (SPKI pins are checked as digests.)
func (v *validator) allowValues(path string, a *Allow) {
	for _, list := range []struct {
		name   string
		values []string
	}{{"cn", a.CN}, {"dns", a.DNS}, {"uri", a.URI}, {"ou", a.OU}} {
		for _, val := range list.values {
			switch {
			case strings.TrimSpace(val) == "":
				v.errorf(path+"."+list.name, "empty value: it would match certificates that have no %s at all; remove it or name what to allow", list.name)
			case list.name == "dns" && (val == "*" || val == "*."):
				v.errorf(path+".dns", "pattern %q names no domain: write *.example.com", val)
			}
		}
	}
}

// IntermediateSuites are the TLS 1.2 cipher suites of Mozilla's
// "intermediate" profile (v5.7) that crypto/tls implements: ECDHE with
// AES-GCM or ChaCha20-Poly1305. They are the default of every listener.
var IntermediateSuites = []uint16{
	tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
	tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
	tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
	tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
	tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
	tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
}

// IntermediateCurves are the key exchange groups of the intermediate
// profile, with the post-quantum hybrid first.
var IntermediateCurves = []tls.CurveID{tls.X25519MLKEM768, tls.X25519, tls.CurveP256, tls.CurveP384}

func (v *validator) validate(c *Config) {
	if c.MaxConnections < 0 {
		v.errorf("max_connections", "must not be negative")
	}
	if c.ShutdownTimeout < 0 {
		v.errorf("shutdown_timeout", "must not be negative")
	} else if c.ShutdownTimeout == 0 {
		c.ShutdownTimeout = DefaultShutdownTimeout
	}
	v.unlock(&c.Unlock)
	v.sandbox(&c.Sandbox)
	v.revocation(c)
	keys := map[string]bool{}
	for i := range c.Keys {
		k := &c.Keys[i]
		p := fmt.Sprintf("key[%d]", i)
		switch {
		case k.Name == "":
			v.errorf(p+".name", "missing: every [[key]] needs a name")
		case keys[k.Name]:
			v.errorf(p+".name", "duplicate key name %q", k.Name)
		}
		keys[k.Name] = true
		if k.Cert == "" {
			v.errorf(p+".cert", "missing: the PEM certificate chain of key %q", k.Name)
		}
		if k.OCSPStaple != "" && (k.OCSPFetch || k.OCSPResponder != "") {
			v.errorf(p+".ocsp_staple", "choose a staple file or fetching (ocsp_fetch, ocsp_responder), not both")
		}
		if k.OCSPResponder != "" {
			if u, err := url.Parse(k.OCSPResponder); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
				v.errorf(p+".ocsp_responder", "want an http:// or https:// URL")
			}
		}
		if k.Source == "" {
			v.errorf(p+".source", "missing: where the private key is (%s)", keyref.Forms(", ", ", "))
		} else if scheme, rest, ok := keyref.Lookup(k.Source); !ok || rest == "" {
			v.errorf(p+".source", "want %s", keyref.Forms(", ", " or "))
		} else if scheme.Plaintext && !c.AllowPlaintextKeys {
			v.errorf(p+".source", "file: keys are plaintext and need allow_plaintext_keys = true (development only); seal the key with 'seal encrypt'")
		} else if _, err := keyref.Parse(k.Source); err != nil {
			// keyref's errors name attributes, never their values (a PIN).
			v.errorf(p+".source", "%v", err)
		}
		v.acme(p, k)
	}
	if len(c.Listeners) == 0 && isZeroPool(&c.Pool) {
		v.errs = append(v.errs, &Error{File: v.file, Msg: "no [[listener]]: nothing to do"})
	}
	names := map[string]bool{}
	addrs := map[string]string{}
	if c.Admin.Listen != "" {
		v.address("admin.listen", c.Admin.Listen)
		if !ephemeral(c.Admin.Listen) {
			addrs[c.Admin.Listen] = "admin"
		}
		if c.Admin.Reload && !Loopback(c.Admin.Listen) {
			v.errorf("admin.reload", "POST /reload needs a loopback admin.listen (127.0.0.1, [::1], localhost) or a unix: socket: anyone who reaches %s could trigger reloads", c.Admin.Listen)
		}
		if c.Admin.Upgrade && !Loopback(c.Admin.Listen) {
			v.errorf("admin.upgrade", "POST /upgrade needs a loopback admin.listen (127.0.0.1, [::1], localhost) or a unix: socket: anyone who reaches %s could start upgrades", c.Admin.Listen)
		}
	} else if c.Admin.Reload {
		v.errorf("admin.reload", "needs admin.listen")
	} else if c.Admin.Upgrade {
		v.errorf("admin.upgrade", "needs admin.listen")
	}
	if c.Admin.StateFile != "" && !strings.HasPrefix(c.Admin.Listen, "unix:") {
		v.errorf("admin.state_file", "the control API (sealproxy ctl) is served only on a unix: admin.listen, whose callers' uid is checked; set listen = \"unix:/run/sealproxy/admin.sock\"")
	}
	if len(c.Admin.CtlUsers) > 0 && !strings.HasPrefix(c.Admin.Listen, "unix:") {
		v.errorf("admin.ctl_users", "the control API (sealproxy ctl) is served only on a unix: admin.listen, whose callers' uid is checked; set listen = \"unix:/run/sealproxy/admin.sock\"")
	}
	for i := range c.Listeners {
		l := &c.Listeners[i]
		p := fmt.Sprintf("listener[%d]", i)
		switch {
		case l.Name == "":
			v.errorf(p+".name", "missing: every [[listener]] needs a name")
		case names[l.Name]:
			v.errorf(p+".name", "duplicate listener name %q", l.Name)
		}
		names[l.Name] = true
		if l.Listen == "" {
			v.errorf(p+".listen", "missing: the address to listen on (host:port or unix:PATH)")
		} else {
			v.address(p+".listen", l.Listen)
			if other, dup := addrs[l.Listen]; dup {
				v.errorf(p+".listen", "%s is also the address of %s", l.Listen, other)
			}
			if !ephemeral(l.Listen) {
				addrs[l.Listen] = "listener " + strconv.Quote(l.Name)
			}
		}
		v.listener(c, p, l, keys)
	}
	v.pool(c, keys)
	v.tickets(c)
}

func (v *validator) listener(c *Config, p string, l *Listener, keys map[string]bool) {
	switch l.Mode {
	case ModeOffload, ModeBridge, ModeEncrypt, ModeConnect:
	case "":
		v.errorf(p+".mode", "missing: offload, bridge, encrypt or connect")
	default:
		v.errorf(p+".mode", "unknown mode %q (want offload, bridge, encrypt or connect)", l.Mode)
	}
	tlsIn := l.Mode != ModeEncrypt
	tlsOut := l.Mode == ModeBridge || l.Mode == ModeEncrypt
	if tlsIn && l.Mode != "" && len(l.Keys) == 0 {
		v.errorf(p+".keys", "missing: mode %s terminates TLS and needs at least one key", l.Mode)
	}
	if !tlsIn && len(l.Keys) > 0 {
		v.errorf(p+".keys", "mode encrypt accepts plain connections and presents no certificate; use upstream.client_key for a client certificate")
	}
	seen := map[string]bool{}
	for _, k := range l.Keys {
		if !keys[k] {
			v.errorf(p+".keys", "unknown key %q (no [[key]] has this name)", k)
		} else if seen[k] {
			v.errorf(p+".keys", "key %q listed twice", k)
		}
		seen[k] = true
	}
	switch {
	case l.Backend != "" && len(l.Backends) > 0:
		v.errorf(p+".backends", "set backend or backends, not both")
	case l.Mode == ModeConnect:
		if l.Backend != "" || len(l.Backends) > 0 {
			v.errorf(p+".backend", "mode connect takes its destination from CONNECT; use connect.allow instead")
		}
	case l.Backend == "" && len(l.Backends) == 0:
		v.errorf(p+".backend", "missing: where to send connections (host:port or unix:PATH)")
	}
	for i, b := range l.BackendList() {
		path := p + ".backend"
		if l.Backend == "" {
			path = fmt.Sprintf("%s.backends[%d]", p, i)
		}
		v.address(path, b)
	}
	if !oneOf(l.Balance, "", "failover", "round_robin") {
		v.errorf(p+".balance", "unknown balance %q (want failover or round_robin)", l.Balance)
	}
	if !oneOf(l.ProxyProtocol, "", "v1", "v2") {
		v.errorf(p+".proxy_protocol", "unknown PROXY protocol version %q (want v1 or v2)", l.ProxyProtocol)
	}
	for _, n := range l.AcceptProxyFrom {
		if _, err := ParsePrefix(n); err != nil {
			v.errorf(p+".accept_proxy_from", "%q is not a network (10.0.0.0/8) or an address", n)
		}
	}
	if l.MaxConnections < 0 {
		v.errorf(p+".max_connections", "must not be negative")
	}
	for _, d := range []struct {
		name string
		val  *time.Duration
		def  time.Duration
	}{
		{"handshake_timeout", &l.HandshakeTimeout, DefaultHandshakeTimeout},
		{"connect_timeout", &l.ConnectTimeout, DefaultConnectTimeout},
		{"idle_timeout", &l.IdleTimeout, DefaultIdleTimeout},
		{"close_timeout", &l.CloseTimeout, DefaultCloseTimeout},
		{"max_lifetime", &l.MaxLifetime, 0},
	} {
		if *d.val < 0 {
			v.errorf(p+"."+d.name, "must not be negative")
		} else if *d.val == 0 {
			*d.val = d.def
		}
	}

	t := &l.TLS
	if !tlsIn && !isZeroTLS(t) {
		v.errorf(p+".tls", "mode encrypt accepts plain connections: [listener.tls] does not apply (see [listener.upstream])")
	}
	if t.MinVersion == "" {
		t.MinVersion = DefaultMinVersion
	}
	v.versions(p+".tls", t.MinVersion, t.MaxVersion)
	for _, name := range t.CipherSuites {
		if _, ok := CipherSuite(name); !ok {
			v.errorf(p+".tls.cipher_suites", "unknown or insecure TLS 1.2 cipher suite %q (use Go's names, e.g. TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256)", name)
		} else if id, _ := CipherSuite(name); !slices.Contains(IntermediateSuites, id) {
			if strings.Contains(name, "_CBC_") {
				v.warnf(p+".tls.cipher_suites", "%s is a CBC suite (MAC-then-encrypt: testssl.sh reports LUCKY13), outside Mozilla's intermediate profile (the default): keep it only for clients that cannot use ECDHE with AES-GCM or ChaCha20-Poly1305", name)
			} else {
				v.warnf(p+".tls.cipher_suites", "%s is a TLS 1.3 suite: crypto/tls always enables those, and cipher_suites chooses TLS 1.2 suites only", name)
			}
		}
	}
	if lo, ok := Version(t.MinVersion); ok && lo < tls.VersionTLS12 {
		v.warnf(p+".tls.min_version", "TLS %s is below Mozilla's intermediate profile (TLS 1.2): keep it only for clients that cannot do TLS 1.2", t.MinVersion)
	}
	for _, name := range t.Curves {
		if _, ok := Curve(name); !ok {
			v.errorf(p+".tls.curves", "unknown curve %q (want X25519MLKEM768, X25519, P256, P384 or P521)", name)
		}
	}
	if t.TicketRotation < 0 {
		v.errorf(p+".tls.ticket_rotation", "must not be negative")
	}
	switch t.ClientAuth {
	case "", "none":
		if t.ClientCA != "" || len(t.CRL) > 0 || !isZeroAllow(&t.Allow) {
			v.errorf(p+".tls.client_auth", "client_ca, crl and allow rules need client_auth = \"require\" or \"request\"")
		}
	case "request", "require":
		if t.ClientCA == "" {
			v.errorf(p+".tls.client_ca", "missing: client_auth = %q needs the CA bundle that issues client certificates", t.ClientAuth)
		}
		// Allow rules judge a certificate; "request" lets a client that
		// presents none through, so the rules would stop only clients
		// that do show one.
		if t.ClientAuth == "request" && !isZeroAllow(&t.Allow) {
			v.errorf(p+".tls.client_auth", "client_auth = \"request\" admits clients without a certificate, which the allow rules never see: use client_auth = \"require\" with allow rules, or remove [listener.tls.allow]")
		}
	default:
		v.errorf(p+".tls.client_auth", "unknown client_auth %q (want none, request or require)", t.ClientAuth)
	}
	v.allowValues(p+".tls.allow", &t.Allow)
	for _, pin := range t.Allow.SPKI {
		if b, err := base64.StdEncoding.DecodeString(pin); err != nil || len(b) != 32 {
			v.errorf(p+".tls.allow.spki", "pin %q is not the base64 of a SHA-256 digest", pin)
		}
	}
	v.listenerRevocation(c, p+".tls", t, l.HandshakeTimeout)
	if l.Mode == ModeConnect && t.ClientAuth != "require" {
		v.errorf(p+".tls.client_auth", "mode connect needs client_auth = \"require\": only authenticated clients may open tunnels")
	}

	u := &l.Upstream
	if !tlsOut && !isZeroUpstream(u) {
		v.errorf(p+".upstream", "[listener.upstream] applies only to modes bridge and encrypt")
	}
	if tlsOut {
		if u.MinVersion == "" {
			u.MinVersion = DefaultMinVersion
		}
		v.versions(p+".upstream", u.MinVersion, u.MaxVersion)
		if u.ServerName == "" {
			for _, b := range l.BackendList() {
				if strings.HasPrefix(b, "unix:") {
					v.errorf(p+".upstream.server_name", "missing: the name to verify a TLS backend on a unix socket (%s) against", b)
					break
				}
			}
		}
		if u.ClientKey != "" && !keys[u.ClientKey] {
			v.errorf(p+".upstream.client_key", "unknown key %q (no [[key]] has this name)", u.ClientKey)
		}
	}
	if l.Mode == ModeConnect && len(l.Connect.Allow) == 0 {
		v.errorf(p+".connect.allow", "missing: mode connect needs the destinations clients may reach (host:port, *.example.com:443)")
	}
	if l.Mode != ModeConnect && len(l.Connect.Allow) > 0 {
		v.errorf(p+".connect", "[listener.connect] applies only to mode connect")
	}
	for _, d := range l.Connect.Allow {
		host, port, err := net.SplitHostPort(d)
		if err != nil || host == "" || (port != "*" && !validPort(port)) {
			v.errorf(p+".connect.allow", "destination %q: want host:port, the port may be *", d)
		} else if h := strings.ToLower(strings.TrimSuffix(host, ".")); h == "localhost" || strings.HasSuffix(h, ".localhost") {
			v.warnf(p+".connect.allow", "destination %q resolves to loopback, which connect refuses unless an entry names the address: write 127.0.0.1:%s or [::1]:%s", d, port, port)
		}
	}
}

func (v *validator) address(path, addr string) {
	if rest, ok := strings.CutPrefix(addr, "unix:"); ok {
		if rest == "" {
			v.errorf(path, "unix: needs a socket path")
		}
		return
	}
	if rest, ok := strings.CutPrefix(addr, SystemdPrefix); ok {
		if rest == "" || strings.ContainsAny(rest, ": \t") {
			v.errorf(path, "%q: want systemd:NAME, NAME being the socket unit's FileDescriptorName", addr)
		}
		return
	}
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		v.errorf(path, "address %q: want host:port or unix:PATH", addr)
		return
	}
	if !validPort(port) {
		v.errorf(path, "address %q: bad port", addr)
	}
}

func (v *validator) versions(path, min, max string) {
	lo, ok := Version(min)
	if !ok {
		v.errorf(path+".min_version", "unknown TLS version %q (want 1.0, 1.1, 1.2 or 1.3)", min)
	}
	if max == "" {
		return
	}
	hi, ok2 := Version(max)
	if !ok2 {
		v.errorf(path+".max_version", "unknown TLS version %q (want 1.0, 1.1, 1.2 or 1.3)", max)
	}
	if ok && ok2 && hi < lo {
		v.errorf(path+".max_version", "%s is below min_version %s", max, min)
	}
}

func (v *validator) unlock(u *Unlock) {
	for _, d := range []struct {
		path string
		v    *time.Duration
		def  time.Duration
	}{
		{"unlock.timeout", &u.Timeout, DefaultUnlockTimeout},
		{"unlock.retry_backoff", &u.RetryBackoff, DefaultRetryBackoff},
		{"unlock.retry_backoff_max", &u.RetryBackoffMax, DefaultRetryBackoffMax},
	} {
		switch {
		case *d.v < 0:
			v.errorf(d.path, "must not be negative")
		case *d.v == 0:
			*d.v = d.def
		}
	}
	if u.RetryBackoffMax < u.RetryBackoff {
		v.errorf("unlock.retry_backoff_max", "%v is below retry_backoff %v", u.RetryBackoffMax, u.RetryBackoff)
	}
}

func (v *validator) sandbox(s *Sandbox) {
	if s.Landlock == "" {
		s.Landlock = DefaultLandlock
	} else if !oneOf(s.Landlock, "best-effort", "off", "required") {
		v.errorf("sandbox.landlock", "unknown mode %q (want best-effort, off or required)", s.Landlock)
	}
	for _, list := range []struct {
		name  string
		paths []string
	}{{"sandbox.read", s.Read}, {"sandbox.write", s.Write}} {
		for _, p := range list.paths {
			if p == "" {
				v.errorf(list.name, "empty path")
			}
		}
	}
}

// Loopback reports whether addr can be reached only from this host: a
// unix socket, or a TCP address on a loopback IP or "localhost".
func Loopback(addr string) bool {
	if strings.HasPrefix(addr, "unix:") {
		return true
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.IsLoopback()
}

// ephemeral reports a TCP address with port 0 (any free port), which
// may appear more than once.
func ephemeral(addr string) bool {
	_, port, err := net.SplitHostPort(addr)
	return err == nil && port == "0" && !strings.HasPrefix(addr, "unix:")
}

func validPort(s string) bool {
	n, err := strconv.Atoi(s)
	return err == nil && n >= 0 && n <= 65535
}

func oneOf(s string, set ...string) bool {
	for _, x := range set {
		if s == x {
			return true
		}
	}
	return false
}

func isZeroAllow(a *Allow) bool {
	return len(a.CN)+len(a.DNS)+len(a.URI)+len(a.OU)+len(a.SPKI) == 0
}

func isZeroTLS(t *TLS) bool {
	return t.MinVersion == "" && t.MaxVersion == "" && len(t.ALPN) == 0 && len(t.CipherSuites) == 0 &&
		len(t.Curves) == 0 && t.SessionTickets == nil && t.TicketRotation == 0 && t.ClientAuth == "" && t.ClientCA == "" && len(t.CRL) == 0 && isZeroAllow(&t.Allow) &&
		t.ListenerRevocation == (ListenerRevocation{})
}

func isZeroUpstream(u *Upstream) bool {
	return u.CA == "" && u.ServerName == "" && u.ClientKey == "" && len(u.ALPN) == 0 && u.MinVersion == "" && u.MaxVersion == ""
}

// ParsePrefix parses a CIDR network or a single address.
func ParsePrefix(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		return p.Masked(), err
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, err
	}
	return netip.PrefixFrom(a, a.BitLen()), nil
}

// Version maps "1.0".."1.3" to crypto/tls constants.
func Version(s string) (uint16, bool) {
	switch s {
	case "1.0":
		return tls.VersionTLS10, true
	case "1.1":
		return tls.VersionTLS11, true
	case "1.2":
		return tls.VersionTLS12, true
	case "1.3":
		return tls.VersionTLS13, true
	}
	return 0, false
}

// CipherSuite maps a Go cipher suite name to its ID; insecure suites are
// refused.
func CipherSuite(name string) (uint16, bool) {
	for _, cs := range tls.CipherSuites() {
		if cs.Name == name {
			return cs.ID, true
		}
	}
	return 0, false
}

// Curve maps a curve name to its ID.
func Curve(name string) (tls.CurveID, bool) {
	switch name {
	case "X25519MLKEM768":
		return tls.X25519MLKEM768, true
	case "X25519":
		return tls.X25519, true
	case "P256", "P-256", "CurveP256":
		return tls.CurveP256, true
	case "P384", "P-384", "CurveP384":
		return tls.CurveP384, true
	case "P521", "P-521", "CurveP521":
		return tls.CurveP521, true
	}
	return 0, false
}
