package config

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// acmeBase is base with an ACME key: the listener is line 5 onwards.
const acmeBase = `[[listener]]
name = "web"
listen = "127.0.0.1:8443"
mode = "offload"
keys = ["web"]
backend = "127.0.0.1:9000"

[[key]]
name = "web"
cert = "web.crt"
source = "sealed:web.key.jwe"

[key.acme]
directory = "https://acme.example/directory"
account = "sealed:acme-account.jwe"
names = ["web.example"]
seal = '{"url":"http://tang:7500","thp":"x"}'
`

func TestACMEValid(t *testing.T) {
	cfg, err := Parse("c.toml", []byte(acmeBase))
	if err != nil {
		t.Fatal(err)
	}
	a := cfg.Keys[0].ACME
	if a.Challenge != ChallengeTLSALPN || a.KeyType != "ecdsa-p256" || a.SealPin != "tang" {
		t.Errorf("defaults: challenge %q, key_type %q, seal_pin %q", a.Challenge, a.KeyType, a.SealPin)
	}
	if len(cfg.ACMEKeys()) != 1 {
		t.Errorf("ACMEKeys: %d", len(cfg.ACMEKeys()))
	}
	http := acmeBase + "challenge = \"http-01\"\nhttp_listen = \"0.0.0.0:80\"\nkey_type = \"rsa-2048\"\nseal_pin = \"sss\"\neab_kid = \"k\"\neab_key = \"sealed:eab.jwe\"\nprofile = \"shortlived\"\n"
	if _, err := Parse("c.toml", []byte(http)); err != nil {
		t.Fatal(err)
	}
}

// TestACMEErrors: every mistake in [key.acme] is reported at its line,
// naming the setting and the fix.
func TestACMEErrors(t *testing.T) {
	tests := []struct {
		name, toml string
		want       []string
	}{
		{"unknown setting", acmeBase + "dirctory = \"x\"\n", []string{"c.toml:18: key[0].acme.dirctory: unknown setting"}},
		{"http directory", strings.Replace(acmeBase, "https://acme", "http://acme", 1), []string{"c.toml:14: key[0].acme.directory: want an https:// URL"}},
		{"no directory", strings.Replace(acmeBase, "directory = \"https://acme.example/directory\"\n", "", 1), []string{"key[0].acme.directory: missing"}},
		{"no names", strings.Replace(acmeBase, "names = [\"web.example\"]\n", "", 1), []string{"key[0].acme.names: missing"}},
		{"bad name", strings.Replace(acmeBase, `"web.example"`, `"web.example", "bad_name\u001b[31m"`, 1), []string{`c.toml:16: key[0].acme.names[1]: "bad_name?[31m": want a DNS name`}},
		{"bad challenge", acmeBase + "challenge = \"dns-01\"\n", []string{`c.toml:18: key[0].acme.challenge: "dns-01": want "tls-alpn-01"`}},
		{"http-01 without listen", acmeBase + "challenge = \"http-01\"\n", []string{"c.toml:13: key[0].acme.http_listen: missing"}},
		{"listen without http-01", acmeBase + "http_listen = \"0.0.0.0:80\"\n", []string{"c.toml:18: key[0].acme.http_listen: only http-01 uses http_listen"}},
		{"bad http_listen", acmeBase + "challenge = \"http-01\"\nhttp_listen = \"80\"\n", []string{"c.toml:19: key[0].acme.http_listen: address \"80\""}},
		{"bad key type", acmeBase + "key_type = \"ed25519\"\n", []string{`c.toml:18: key[0].acme.key_type: "ed25519": want ecdsa-p256, ecdsa-p384, rsa-2048`}},
		{"bad seal pin", acmeBase + "seal_pin = \"tpm2\"\n", []string{`c.toml:18: key[0].acme.seal_pin: "tpm2"`}},
		{"no seal", strings.Replace(acmeBase, "seal = '{\"url\":\"http://tang:7500\",\"thp\":\"x\"}'\n", "", 1), []string{"key[0].acme.seal: missing"}},
		{"seal not JSON", strings.Replace(acmeBase, `'{"url":"http://tang:7500","thp":"x"}'`, `"http://tang:7500"`, 1), []string{"c.toml:17: key[0].acme.seal: want a JSON object"}},
		{"no account", strings.Replace(acmeBase, "account = \"sealed:acme-account.jwe\"\n", "", 1), []string{"key[0].acme.account: missing"}},
		{"plaintext account", strings.Replace(acmeBase, "sealed:acme-account", "file:acme-account", 1), []string{"c.toml:15: key[0].acme.account: want sealed:PATH"}},
		{"plaintext key", strings.Replace(acmeBase, "sealed:web.key", "pkcs11:token=t;object=k?module-path=/m.so&pin-source=file:/p", 1), []string{"key[0].acme: an ACME key is generated in custody and written only sealed"}},
		{"eab half", acmeBase + "eab_kid = \"kid\"\n", []string{"c.toml:18: key[0].acme.eab_kid: external account binding needs both"}},
		{"eab plaintext", acmeBase + "eab_kid = \"kid\"\neab_key = \"file:eab\"\n", []string{"c.toml:19: key[0].acme.eab_key: want sealed:PATH"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse("c.toml", []byte(tt.toml))
			if err == nil {
				t.Fatal("no error")
			}
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("error is not ErrInvalid: %v", err)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q\nwant it to contain %q", err, w)
				}
			}
		})
	}
}

// TestPending: an ACME key whose certificate or sealed key does not
// exist is pending; once both exist it is not, and a key without [key.acme]
// never is.
func TestPending(t *testing.T) {
	dir := t.TempDir()
	cfg, err := Parse(filepath.Join(dir, "c.toml"), []byte(acmeBase))
	if err != nil {
		t.Fatal(err)
	}
	k := &cfg.Keys[0]
	if !cfg.Pending(k) {
		t.Error("no files: want pending")
	}
	os.WriteFile(filepath.Join(dir, "web.crt"), []byte("x"), 0o644)
	if !cfg.Pending(k) {
		t.Error("no sealed key: want pending")
	}
	os.WriteFile(filepath.Join(dir, "web.key.jwe"), []byte("x"), 0o600)
	if cfg.Pending(k) {
		t.Error("both files: want not pending")
	}
	os.Remove(filepath.Join(dir, "web.crt"))
	plain := *k
	plain.ACME = nil
	if cfg.Pending(&plain) {
		t.Error("a key without [key.acme] is never pending")
	}
}

// FuzzDNSName: checkDNSName accepts only what a CA certifies (letters,
// digits, hyphens and dots, one leading wildcard label), never a byte
// that could reach a terminal or a log unescaped.
func FuzzDNSName(f *testing.F) {
	for _, s := range []string{"web.example", "*.example.com", "a", "-a.b", "a..b", "é.example", "a\x1b[31m", strings.Repeat("a", 64)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if checkDNSName(s) != nil {
			return
		}
		rest := strings.TrimPrefix(s, "*.")
		if len(s) > 253 || strings.Contains(rest, "*") || strings.HasPrefix(rest, ".") || strings.HasSuffix(rest, ".") || strings.Contains(rest, "..") {
			t.Fatalf("accepted %q", s)
		}
		for _, r := range rest {
			if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '.') {
				t.Fatalf("accepted %q with %q", s, r)
			}
		}
		if strings.Contains(printableName(s), "?") {
			t.Fatalf("an accepted name has bytes replaced when printed: %q", s)
		}
	})
}
