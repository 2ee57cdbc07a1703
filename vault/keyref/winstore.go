package keyref

import (
	"crypto/sha1"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"slices"
	"strings"
	"time"
)

// WinstoreQuery selects a certificate, and through it a (typically
// non-exportable CNG) private key, in the Windows certificate store:
//
//	winstore:location=LocalMachine;store=My;cn=proxy.example.com;issuer=Example%20CA
//	winstore:thumbprint=3F1A...9C
//
// location is LocalMachine (default) or CurrentUser; store defaults to My.
// cn matches the subject common name exactly (case-insensitively, as
// Windows does; the store's own lookups match substrings, which could pick
// "www.example.com.evil" for "example.com"). issuer matches the issuer's
// common name or full distinguished name. thumbprint is the SHA-1 of the
// certificate in hex (spaces and colons ignored). Give cn or thumbprint.
type WinstoreQuery struct {
	Location   string // LocalMachine or CurrentUser
	Store      string // system store name, e.g. My
	CN         string
	Issuer     string
	Thumbprint []byte // SHA-1, 20 bytes
}

// ParseWinstoreRef parses the part of a winstore: reference after the
// scheme.
func ParseWinstoreRef(s string) (*WinstoreQuery, error) {
	s = strings.TrimPrefix(s, SchemeWinstore+":")
	q := &WinstoreQuery{Location: "LocalMachine", Store: "My"}
	seen := map[string]bool{}
	for _, part := range splitNonEmpty(s, ";") {
		name, raw, ok := strings.Cut(part, "=")
		if !ok {
			return nil, fmt.Errorf("%w: winstore attribute %q has no value", ErrBadRef, safeName(name))
		}
		name = strings.ToLower(name)
		if seen[name] {
			return nil, fmt.Errorf("%w: winstore attribute %q given twice", ErrBadRef, safeName(name))
		}
		seen[name] = true
		v, err := pctDecode(raw)
		if err != nil {
			return nil, fmt.Errorf("%w: winstore attribute %q: %v", ErrBadRef, safeName(name), err)
		}
		switch name {
		case "location":
			switch strings.ToLower(string(v)) {
			case "localmachine":
				q.Location = "LocalMachine"
			case "currentuser":
				q.Location = "CurrentUser"
			default:
				return nil, fmt.Errorf("%w: winstore location must be LocalMachine or CurrentUser", ErrBadRef)
			}
		case "store":
			q.Store = string(v)
		case "cn":
			q.CN = string(v)
		case "issuer":
			q.Issuer = string(v)
		case "thumbprint":
			h := strings.NewReplacer(" ", "", ":", "").Replace(string(v))
			tp, err := hex.DecodeString(h)
			if err != nil || len(tp) != sha1.Size {
				return nil, fmt.Errorf("%w: winstore thumbprint must be 40 hex digits (the certificate's SHA-1)", ErrBadRef)
			}
			q.Thumbprint = tp
		default:
			return nil, fmt.Errorf("%w: unknown winstore attribute %q (location, store, cn, issuer, thumbprint)", ErrBadRef, safeName(name))
		}
	}
	if q.CN == "" && q.Thumbprint == nil {
		return nil, fmt.Errorf("%w: winstore reference selects no certificate (give cn or thumbprint)", ErrBadRef)
	}
	if q.Store == "" {
		return nil, fmt.Errorf("%w: winstore store is empty", ErrBadRef)
	}
	return q, nil
}

// String is the canonical form of the query.
func (q *WinstoreQuery) String() string {
	parts := []string{"location=" + q.Location, "store=" + pctEncode([]byte(q.Store), false)}
	if q.CN != "" {
		parts = append(parts, "cn="+pctEncode([]byte(q.CN), false))
	}
	if q.Issuer != "" {
		parts = append(parts, "issuer="+pctEncode([]byte(q.Issuer), false))
	}
	if q.Thumbprint != nil {
		parts = append(parts, "thumbprint="+strings.ToUpper(hex.EncodeToString(q.Thumbprint)))
	}
	return Format(SchemeWinstore, strings.Join(parts, ";"))
}

var winstoreScheme = Scheme{
	Name: SchemeWinstore, Form: "winstore:...",
	Parse: func(v string) (any, error) { return ParseWinstoreRef(v) },
}

// matches reports whether c is selected by the query, ignoring validity.
func (q *WinstoreQuery) matches(c *x509.Certificate) bool {
	if q.Thumbprint != nil {
		sum := sha1.Sum(c.Raw)
		if string(sum[:]) != string(q.Thumbprint) {
			return false
		}
	}
	if q.CN != "" && !strings.EqualFold(c.Subject.CommonName, q.CN) {
		return false
	}
	if q.Issuer != "" && !strings.EqualFold(c.Issuer.CommonName, q.Issuer) && !strings.EqualFold(c.Issuer.String(), q.Issuer) {
		return false
	}
	return true
}

// Select picks, from the store's certificates, the one the query
// names: among the matches valid at now, the most recently issued (so a
// renewed certificate added to the store is taken at the next start). It
// returns its index, or an error saying why nothing fits.
func (q *WinstoreQuery) Select(certs []*x509.Certificate, now time.Time) (int, error) {
	var matched, valid []int
	for i, c := range certs {
		if !q.matches(c) {
			continue
		}
		matched = append(matched, i)
		if !now.Before(c.NotBefore) && !now.After(c.NotAfter) {
			valid = append(valid, i)
		}
	}
	if len(matched) == 0 {
		return -1, fmt.Errorf("no certificate in %s\\%s matches (%d certificates searched)", q.Location, q.Store, len(certs))
	}
	if len(valid) == 0 {
		c := certs[matched[0]]
		return -1, fmt.Errorf("%d matching certificates in %s\\%s, none valid now (e.g. %q valid %s to %s)",
			len(matched), q.Location, q.Store, c.Subject.String(), c.NotBefore.Format(time.DateOnly), c.NotAfter.Format(time.DateOnly))
	}
	return slices.MaxFunc(valid, func(a, b int) int {
		if c := certs[a].NotBefore.Compare(certs[b].NotBefore); c != 0 {
			return c
		}
		return strings.Compare(string(certs[b].Raw), string(certs[a].Raw)) // deterministic tie-break
	}), nil
}
