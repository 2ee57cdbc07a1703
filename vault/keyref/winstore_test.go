package keyref

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha1"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"errors"
	"math/big"
	"strings"
	"testing"
	"time"
)

func TestParseWinstoreRef(t *testing.T) {
	q, err := ParseWinstoreRef("location=currentuser;store=WebHosting;cn=proxy.example.com;issuer=Example%20CA")
	if err != nil {
		t.Fatal(err)
	}
	if q.Location != "CurrentUser" || q.Store != "WebHosting" || q.CN != "proxy.example.com" || q.Issuer != "Example CA" {
		t.Fatalf("parsed %+v", q)
	}
	if got, want := q.String(), "winstore:location=CurrentUser;store=WebHosting;cn=proxy.example.com;issuer=Example%20CA"; got != want {
		t.Errorf("String() = %s, want %s", got, want)
	}
	q, err = ParseWinstoreRef("thumbprint=3f:1a 00112233445566778899aabbccddeeff0011")
	if err != nil {
		t.Fatal(err)
	}
	if q.Location != "LocalMachine" || q.Store != "My" || len(q.Thumbprint) != 20 {
		t.Fatalf("parsed %+v", q)
	}
	for _, s := range []string{"", "store=My", "cn=x;cn=y", "cn=x;location=Elsewhere", "thumbprint=abc",
		"cn=x;frob=1", "cn", "cn=%zz", "cn=x;store="} {
		if _, err := ParseWinstoreRef(s); !errors.Is(err, ErrBadRef) {
			t.Errorf("ParseWinstoreRef(%q) = %v, want ErrBadRef", s, err)
		}
	}
	if _, err := Parse("winstore:frob=1"); !errors.Is(err, ErrBadRef) {
		t.Errorf("ParseRef does not validate winstore references: %v", err)
	}
}

func TestWinstoreSelect(t *testing.T) {
	now := time.Date(2026, 6, 1, 0, 0, 0, 0, time.UTC)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial := int64(0)
	mk := func(cn, issuer string, from, to time.Time) *x509.Certificate {
		serial++
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: cn},
			NotBefore: from, NotAfter: to}
		parent := &x509.Certificate{Subject: pkix.Name{CommonName: issuer, Organization: []string{"Example"}}}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, key.Public(), key)
		if err != nil {
			t.Fatal(err)
		}
		c, err := x509.ParseCertificate(der)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	year := 365 * 24 * time.Hour
	certs := []*x509.Certificate{
		0: mk("proxy.example.com", "Example CA", now.Add(-2*year), now.Add(-year)),        // expired
		1: mk("proxy.example.com", "Example CA", now.Add(-year/2), now.Add(year/2)),       // valid
		2: mk("proxy.example.com", "Example CA", now.Add(-time.Hour), now.Add(year)),      // valid, newer
		3: mk("proxy.example.com.evil", "Example CA", now.Add(-time.Hour), now.Add(year)), // substring trap
		4: mk("proxy.example.com", "Other CA", now.Add(-time.Minute), now.Add(year)),      // other issuer
		5: mk("old.example.com", "Example CA", now.Add(-2*year), now.Add(-year)),          // only expired
	}
	tp := func(i int) string { s := sha1.Sum(certs[i].Raw); return hex.EncodeToString(s[:]) }
	cases := []struct {
		ref     string
		want    int
		wantErr string
	}{
		{"cn=proxy.example.com;issuer=Example CA", 2, ""},
		{"cn=PROXY.example.com;issuer=example ca", 2, ""},
		{"cn=proxy.example.com", 4, ""}, // newest of any issuer
		{"cn=proxy.example.com;issuer=CN=Other CA,O=Example", 4, ""},
		{"thumbprint=" + tp(1), 1, ""},
		{"thumbprint=" + tp(0), -1, "none valid now"},
		{"cn=old.example.com", -1, "none valid now"},
		{"cn=example.com", -1, "no certificate"},
		{"cn=proxy.example.com;issuer=Nobody", -1, "no certificate"},
		{"cn=proxy.example.com;thumbprint=" + tp(3), -1, "no certificate"},
	}
	for _, c := range cases {
		q, err := ParseWinstoreRef(strings.ReplaceAll(c.ref, " ", "%20"))
		if err != nil {
			t.Fatalf("%s: %v", c.ref, err)
		}
		got, err := q.Select(certs, now)
		if c.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), c.wantErr) {
				t.Errorf("%s: got %d, %v; want error %q", c.ref, got, err, c.wantErr)
			}
			continue
		}
		if err != nil || got != c.want {
			t.Errorf("%s: got %d, %v; want %d", c.ref, got, err, c.want)
		}
	}
}

// FuzzParseWinstoreRef: parsing never panics, and a parsed query prints to
// a reference that parses to the same query.
func FuzzParseWinstoreRef(f *testing.F) {
	f.Add("location=CurrentUser;store=My;cn=proxy.example.com;issuer=Example%20CA")
	f.Add("thumbprint=3f1a00112233445566778899aabbccddeeff0011")
	f.Fuzz(func(t *testing.T, s string) {
		q, err := ParseWinstoreRef(s)
		if err != nil {
			return
		}
		r, err := ParseWinstoreRef(q.String())
		if err != nil {
			t.Fatalf("String() %q of %q does not parse: %v", q.String(), s, err)
		}
		if r.String() != q.String() {
			t.Fatalf("round trip: %q became %q", q.String(), r.String())
		}
	})
}
