package config

import (
	"errors"
	"strings"
	"testing"
	"time"
)

const mtls = "[listener.tls]\nclient_auth = \"require\"\nclient_ca = \"ca.pem\"\n"

func TestRevocationSettings(t *testing.T) {
	tests := []struct {
		name string
		toml string
		want string // substring of the error; "" for valid
	}{
		{"stale default", base + mtls + "crl = [\"a.crl\"]\n", ""},
		{"stale warn", base + mtls + "crl = [\"a.crl\"]\ncrl_stale = \"warn\"\n", ""},
		{"stale bogus", base + mtls + "crl = [\"a.crl\"]\ncrl_stale = \"ignore\"\n", `listener[0].tls.crl_stale: unknown value "ignore" (want refuse or warn)`},
		{"stale without crl", base + mtls + "crl_stale = \"warn\"\n", "listener[0].tls.crl_stale: applies to crl entries"},
		{"crl url needs cache", base + mtls + "crl = [\"http://crl.example.com/a.crl\"]\n", "needs [revocation] cache_dir"},
		{"crl url", base + mtls + "crl = [\"https://crl.example.com/a.crl\"]\n[revocation]\ncache_dir = \"/var/cache/sealproxy\"\n", ""},
		{"crl ldap", base + mtls + "crl = [\"ldap://crl.example.com/a.crl\"]\n", "only http:// and https:// URLs are fetched"},
		{"crl bad url", base + mtls + "crl = [\"http://\"]\n[revocation]\ncache_dir = \"c\"\n", "not a valid URL"},
		{"fetch timeout", base + "[revocation]\nfetch_timeout = \"-1s\"\n", "revocation.fetch_timeout: must not be negative"},
		{"ocsp soft", base + mtls + "client_ocsp = \"soft\"\n", ""},
		{"ocsp bogus", base + mtls + "client_ocsp = \"strict\"\n", `unknown value "strict" (want off, soft or hard)`},
		{"ocsp without client auth", base + "[listener.tls]\nclient_ocsp = \"hard\"\n", "needs client_auth"},
		{"ocsp responder needs ocsp", base + mtls + "client_ocsp_responder = \"http://ocsp.example.com/\"\n", "needs client_ocsp = \"soft\" or \"hard\""},
		{"ocsp responder scheme", base + mtls + "client_ocsp = \"hard\"\nclient_ocsp_responder = \"file:///x\"\n", "client_ocsp_responder: want an http:// or https:// URL"},
		{"ocsp timeout above handshake", base + "handshake_timeout = \"2s\"\n" + mtls + "client_ocsp = \"hard\"\nclient_ocsp_timeout = \"2s\"\n", "is not below the listener's handshake_timeout"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse("c.toml", []byte(tt.toml))
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("unexpected error: %v", err)
			case tt.want != "" && (err == nil || !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tt.want)):
				t.Fatalf("err = %v, want %q", err, tt.want)
			}
		})
	}
}

func TestRevocationDefaults(t *testing.T) {
	cfg, err := Parse("c.toml", []byte(base+mtls+"crl = [\"a.crl\"]\n"))
	if err != nil {
		t.Fatal(err)
	}
	r := cfg.Listeners[0].TLS.ListenerRevocation
	if r.CRLStale != CRLStaleRefuse || r.ClientOCSP != ClientOCSPOff || r.ClientOCSPTimeout != DefaultClientOCSPTimeout {
		t.Errorf("defaults: %+v", r)
	}
	if cfg.Revocation.FetchTimeout != DefaultCRLFetchTimeout {
		t.Errorf("fetch_timeout default %v", cfg.Revocation.FetchTimeout)
	}
	// A short handshake_timeout shortens the OCSP default below it.
	cfg, err = Parse("c.toml", []byte(base+"handshake_timeout = \"2s\"\n"+mtls+"client_ocsp = \"soft\"\n"))
	if err != nil {
		t.Fatal(err)
	}
	if got := cfg.Listeners[0].TLS.ClientOCSPTimeout; got != time.Second {
		t.Errorf("client_ocsp_timeout = %v with handshake_timeout 2s", got)
	}
	// warn is a weaker setting: check prints it.
	cfg, err = Parse("c.toml", []byte(base+mtls+"crl = [\"a.crl\"]\ncrl_stale = \"warn\"\n"))
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Warnings) != 1 || !strings.Contains(cfg.Warnings[0].Error(), "c.toml:16: listener[0].tls.crl_stale: warn accepts") {
		t.Errorf("warnings = %v", cfg.Warnings)
	}
	cfg.Warn("key[0].cert", "expires in %d days", 3)
	if w := cfg.Warnings[1].Error(); w != "c.toml:3: key[0].cert: expires in 3 days" {
		t.Errorf("Warn = %q", w)
	}
}
