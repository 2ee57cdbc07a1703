package config

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"strings"

	"github.com/sealproxy/sealproxy/vault/keyref"
)

// ACME is a [[key]]'s [key.acme] table: the key's certificate is issued
// and renewed by an ACME CA, its private key generated in custody and
// written only sealed (to the key's sealed: source).
type ACME struct {
	Directory  string   `toml:"directory"` // the CA's directory URL (https://)
	CA         string   `toml:"ca"`        // optional PEM bundle trusted for the directory's TLS
	Email      string   `toml:"email"`
	Account    string   `toml:"account"` // sealed:PATH, created and sealed on first use
	Names      []string `toml:"names"`
	Challenge  string   `toml:"challenge"`   // tls-alpn-01 (default) or http-01
	HTTPListen string   `toml:"http_listen"` // http-01: host:port answering /.well-known/acme-challenge/
	KeyType    string   `toml:"key_type"`    // ecdsa-p256 (default), ecdsa-p384, rsa-2048
	Seal       string   `toml:"seal"`        // the pin's JSON configuration, as `seal encrypt` takes it
	SealPin    string   `toml:"seal_pin"`    // tang (default) or sss
	EABKID     string   `toml:"eab_kid"`
	EABKey     string   `toml:"eab_key"` // sealed:PATH holding the MAC key (base64url, as CAs hand it out)
	Profile    string   `toml:"profile"` // optional: the CA's issuance profile
}

// ACME challenge types and key types.
const (
	ChallengeTLSALPN = "tls-alpn-01"
	ChallengeHTTP    = "http-01"
)

// ACMEKeyTypes are the key types [key.acme] key_type accepts.
var ACMEKeyTypes = []string{"ecdsa-p256", "ecdsa-p384", "rsa-2048"}

// Pending reports whether k is an ACME key not issued yet: its
// certificate or its sealed key file does not exist. Listeners serve
// without it (answering its tls-alpn-01 challenges) until the first
// issue swaps it in.
func (c *Config) Pending(k *Key) bool {
	if k == nil || k.ACME == nil {
		return false
	}
	if _, err := os.Stat(c.Resolve(k.Cert)); errors.Is(err, fs.ErrNotExist) {
		return true
	}
	r, err := keyref.Parse(k.Source)
	if err != nil {
		return false
	}
	_, err = os.Stat(c.Resolve(r.Path))
	return errors.Is(err, fs.ErrNotExist)
}

// ACMEKeys returns the keys with a [key.acme] table.
func (c *Config) ACMEKeys() []*Key {
	var out []*Key
	for i := range c.Keys {
		if c.Keys[i].ACME != nil {
			out = append(out, &c.Keys[i])
		}
	}
	return out
}

// acme validates k's [key.acme] table (p is "key[i]"). The key's source
// must be sealed: ACME keys are written only sealed.
func (v *validator) acme(p string, k *Key) {
	a := k.ACME
	if a == nil {
		return
	}
	p += ".acme"
	if r, err := keyref.Parse(k.Source); err == nil && !r.IsSealed() {
		v.errorf(p, "an ACME key is generated in custody and written only sealed: set the key's source = \"sealed:PATH\"")
	}
	switch u, err := url.Parse(a.Directory); {
	case a.Directory == "":
		v.errorf(p+".directory", "missing: the CA's ACME directory URL (https://acme-v02.api.letsencrypt.org/directory)")
	case err != nil || u.Scheme != "https" || u.Host == "":
		v.errorf(p+".directory", "want an https:// URL: ACME directories are served over TLS")
	}
	if len(a.Names) == 0 {
		v.errorf(p+".names", "missing: the DNS names to certify, e.g. names = [\"www.example.com\"]")
	}
	for i, n := range a.Names {
		if err := checkDNSName(n); err != nil {
			v.errorf(fmt.Sprintf("%s.names[%d]", p, i), "%q: %v", printableName(n), err)
		}
	}
	switch a.Challenge {
	case "":
		a.Challenge = ChallengeTLSALPN
	case ChallengeTLSALPN, ChallengeHTTP:
	default:
		v.errorf(p+".challenge", "%q: want %q (answered by the listeners using this key) or %q (with http_listen)", printableName(a.Challenge), ChallengeTLSALPN, ChallengeHTTP)
	}
	switch {
	case a.Challenge == ChallengeHTTP && a.HTTPListen == "":
		v.errorf(p+".http_listen", "missing: http-01 is answered on port 80 of the names; set http_listen = \"0.0.0.0:80\"")
	case a.Challenge == ChallengeHTTP:
		v.address(p+".http_listen", a.HTTPListen)
	case a.HTTPListen != "":
		v.errorf(p+".http_listen", "only http-01 uses http_listen; set challenge = \"http-01\" or remove it")
	}
	switch a.KeyType {
	case "":
		a.KeyType = ACMEKeyTypes[0]
	case ACMEKeyTypes[0], ACMEKeyTypes[1], ACMEKeyTypes[2]:
	default:
		v.errorf(p+".key_type", "%q: want %s", printableName(a.KeyType), strings.Join(ACMEKeyTypes, ", "))
	}
	switch a.SealPin {
	case "":
		a.SealPin = "tang"
	case "tang", "sss":
	default:
		v.errorf(p+".seal_pin", "%q: want \"tang\" or \"sss\"", printableName(a.SealPin))
	}
	if a.Seal == "" {
		v.errorf(p+".seal", "missing: the pin configuration new keys are sealed with, as `seal encrypt %s` takes it ('{\"url\":\"http://tang:7500\",\"thp\":\"...\"}')", a.SealPin)
	} else if !json.Valid([]byte(a.Seal)) || !strings.HasPrefix(strings.TrimSpace(a.Seal), "{") {
		v.errorf(p+".seal", "want a JSON object, the pin configuration `seal encrypt %s` takes", a.SealPin)
	}
	v.sealedRef(p+".account", a.Account, "the ACME account key, created and sealed on first use (account = \"sealed:acme-account.jwe\")", true)
	if (a.EABKID == "") != (a.EABKey == "") {
		v.errorf(p+".eab_kid", "external account binding needs both eab_kid and eab_key (sealed:PATH)")
	}
	if a.EABKey != "" {
		v.sealedRef(p+".eab_key", a.EABKey, "", false)
	}
	if a.CA != "" && strings.TrimSpace(a.CA) == "" {
		v.errorf(p+".ca", "empty: name a PEM file or remove ca")
	}
}

func (v *validator) sealedRef(path, ref, what string, required bool) {
	if ref == "" {
		if required {
			v.errorf(path, "missing: %s", what)
		}
		return
	}
	r, err := keyref.Parse(ref)
	switch {
	case err != nil:
		v.errorf(path, "%v", err)
	case !r.IsSealed() || r.PKCS11() != nil:
		v.errorf(path, "want sealed:PATH (a JWE written by seal or sealproxy)")
	}
}

// checkDNSName accepts the names a CA certifies: DNS names of letters,
// digits and hyphens, optionally one leading wildcard label.
func checkDNSName(n string) error {
	if n == "" || len(n) > 253 {
		return errors.New("want a DNS name of 1 to 253 characters")
	}
	labels := strings.Split(strings.TrimPrefix(n, "*."), ".")
	if len(labels) < 1 {
		return errors.New("want a DNS name")
	}
	for _, l := range labels {
		if l == "" || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' {
			return errors.New("want a DNS name: labels of 1 to 63 letters, digits and inner hyphens")
		}
		for _, r := range l {
			if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-') {
				return errors.New("want a DNS name: labels of 1 to 63 letters, digits and inner hyphens")
			}
		}
	}
	return nil
}

// printableName quotes s for an error only as far as it is printable
// ASCII: configuration errors reach terminals.
func printableName(s string) string {
	if len(s) > 64 {
		s = s[:64] + "..."
	}
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r > 0x7e {
			return '?'
		}
		return r
	}, s)
}
