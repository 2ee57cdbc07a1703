package config

import (
	"fmt"
	"net/url"
	"strings"
	"time"
)

// Revocation settings: what the CRL and OCSP checks of client
// certificates do when their sources are stale or unreachable
// (docs/threat-model.md, "Revocation").
const (
	// CRLStaleRefuse refuses client certificates of a CA whose CRL is
	// past its NextUpdate (fail closed, the default); CRLStaleWarn
	// accepts them, logs and counts.
	CRLStaleRefuse = "refuse"
	CRLStaleWarn   = "warn"

	// ClientOCSPOff does not ask OCSP responders about client
	// certificates (the default); ClientOCSPSoft accepts a certificate
	// whose responder cannot be reached (counted), ClientOCSPHard refuses it.
	ClientOCSPOff  = "off"
	ClientOCSPSoft = "soft"
	ClientOCSPHard = "hard"

	// DefaultClientOCSPTimeout bounds one client OCSP query, inside the
	// handshake: it must stay well below handshake_timeout.
	DefaultClientOCSPTimeout = 3 * time.Second
	// DefaultCRLFetchTimeout bounds one download of a CRL URL.
	DefaultCRLFetchTimeout = 10 * time.Second
)

// ListenerRevocation is the revocation policy of a listener's client
// certificates ([listener.tls]).
type ListenerRevocation struct {
	// CRLStale is what a CRL past its NextUpdate means: refuse (default)
	// or warn.
	CRLStale string `toml:"crl_stale"`
	// ClientOCSP asks each client certificate's OCSP responder (its AIA
	// URL, or ClientOCSPResponder): off (default), soft or hard.
	ClientOCSP          string        `toml:"client_ocsp"`
	ClientOCSPResponder string        `toml:"client_ocsp_responder"`
	ClientOCSPTimeout   time.Duration `toml:"client_ocsp_timeout"`
}

// Revocation is the [revocation] table: what all listeners' CRL
// downloads share.
type Revocation struct {
	// CacheDir keeps the last good copy of every CRL fetched from a URL,
	// so that a restart does not depend on the network. Required when a
	// crl entry is a URL.
	CacheDir string `toml:"cache_dir"`
	// FetchTimeout bounds one CRL download (default 10s).
	FetchTimeout time.Duration `toml:"fetch_timeout"`
}

// IsURL reports whether a crl entry names an http(s) URL rather than a
// file.
func IsURL(s string) bool {
	return strings.HasPrefix(s, "http://") || strings.HasPrefix(s, "https://")
}

func validHTTPURL(s string) bool {
	u, err := url.Parse(s)
	return err == nil && (u.Scheme == "http" || u.Scheme == "https") && u.Host != ""
}

func (v *validator) revocation(c *Config) {
	r := &c.Revocation
	switch {
	case r.FetchTimeout < 0:
		v.errorf("revocation.fetch_timeout", "must not be negative")
	case r.FetchTimeout == 0:
		r.FetchTimeout = DefaultCRLFetchTimeout
	}
}

func (v *validator) listenerRevocation(c *Config, p string, t *TLS, handshake time.Duration) {
	r := &t.ListenerRevocation
	switch r.CRLStale {
	case "":
		if len(t.CRL) > 0 {
			r.CRLStale = CRLStaleRefuse
		}
	case CRLStaleRefuse, CRLStaleWarn:
		if len(t.CRL) == 0 {
			v.errorf(p+".crl_stale", "applies to crl entries, and this listener has none")
		}
	default:
		v.errorf(p+".crl_stale", "unknown value %q (want refuse or warn)", r.CRLStale)
	}
	if r.CRLStale == CRLStaleWarn {
		v.warnf(p+".crl_stale", "warn accepts client certificates whose CRL is past its NextUpdate, when a revocation may be missing from it: keep it only while the CRL's publisher is being fixed")
	}
	for _, crl := range t.CRL {
		switch {
		case strings.Contains(crl, "://") && !IsURL(crl):
			v.errorf(p+".crl", "%q: only http:// and https:// URLs are fetched; other entries are files", crl)
		case IsURL(crl) && !validHTTPURL(crl):
			v.errorf(p+".crl", "%q: not a valid URL", crl)
		case IsURL(crl) && c.Revocation.CacheDir == "":
			v.errorf(p+".crl", "%q is a URL and needs [revocation] cache_dir, where the last good copy is kept for restarts without the network", crl)
		}
	}
	switch r.ClientOCSP {
	case "":
		r.ClientOCSP = ClientOCSPOff
	case ClientOCSPOff:
	case ClientOCSPSoft, ClientOCSPHard:
		if t.ClientAuth != "request" && t.ClientAuth != "require" {
			v.errorf(p+".client_ocsp", "checks client certificates and needs client_auth = \"require\" or \"request\"")
		}
	default:
		v.errorf(p+".client_ocsp", "unknown value %q (want off, soft or hard)", r.ClientOCSP)
	}
	if r.ClientOCSPResponder != "" {
		if !validHTTPURL(r.ClientOCSPResponder) {
			v.errorf(p+".client_ocsp_responder", "want an http:// or https:// URL")
		}
		if r.ClientOCSP == ClientOCSPOff {
			v.errorf(p+".client_ocsp_responder", "needs client_ocsp = \"soft\" or \"hard\"")
		}
	}
	switch {
	case r.ClientOCSPTimeout < 0:
		v.errorf(p+".client_ocsp_timeout", "must not be negative")
	case r.ClientOCSPTimeout == 0:
		r.ClientOCSPTimeout = min(DefaultClientOCSPTimeout, handshake/2)
	case r.ClientOCSP != ClientOCSPOff && r.ClientOCSPTimeout >= handshake:
		// The query runs inside the handshake: a longer one would let a
		// slow responder spend every handshake's whole deadline.
		v.errorf(p+".client_ocsp_timeout", "%v is not below the listener's handshake_timeout %v", r.ClientOCSPTimeout, handshake)
	}
}

// Warn adds a warning found after parsing (a certificate close to
// expiry, a stale CRL), at the position of path when it is known.
func (c *Config) Warn(path, format string, args ...any) {
	line := 0
	if c.loc != nil {
		line = c.loc.line(path)
	}
	c.Warnings = append(c.Warnings, &Error{File: c.Path, Line: line, Path: path, Msg: fmt.Sprintf(format, args...)})
}
