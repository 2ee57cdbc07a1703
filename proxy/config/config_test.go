package config

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
)

func TestExampleFromIssue(t *testing.T) {
	cfg, err := Load("testdata/example.toml")
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Keys) != 1 || cfg.Keys[0].Source != "sealed:web.key.jwe" {
		t.Fatalf("keys = %+v", cfg.Keys)
	}
	l := cfg.Listeners[0]
	if l.Mode != ModeOffload || l.Backend != "127.0.0.1:9000" || l.Keys[0] != "web" {
		t.Fatalf("listener = %+v", l)
	}
	if got, want := cfg.Resolve(cfg.Keys[0].Cert), filepath.Join("testdata", "web.crt"); got != want {
		t.Errorf("Resolve = %q, want %q (relative to the config file)", got, want)
	}
	if l.HandshakeTimeout != DefaultHandshakeTimeout || l.TLS.MinVersion != "1.2" {
		t.Errorf("defaults not applied: %+v", l)
	}
	if cfg.Admin.Listen != "127.0.0.1:9090" {
		t.Errorf("admin = %+v", cfg.Admin)
	}
	if cfg.Sandbox.Landlock != DefaultLandlock {
		t.Errorf("sandbox.landlock = %q, want the default %q", cfg.Sandbox.Landlock, DefaultLandlock)
	}
}

const base = `[[key]]
name = "web"
cert = "web.crt"
source = "sealed:web.key.jwe"

[[listener]]
name = "web"
listen = "127.0.0.1:8443"
mode = "offload"
keys = ["web"]
backend = "127.0.0.1:9000"
`

func TestErrors(t *testing.T) {
	tests := []struct {
		name string
		toml string
		want []string // substrings of the error, in order
	}{
		{"unknown top-level key", base + "bogus = 1\n", []string{"c.toml:12: listener[0].bogus: unknown setting"}},
		{"unknown key in table", base + "[admin]\nlisten = \"127.0.0.1:1\"\nport = 3\n", []string{"c.toml:14: admin.port: unknown setting"}},
		{"sandbox mode", base + "[sandbox]\nlandlock = \"on\"\n", []string{"c.toml:13: sandbox.landlock: unknown mode \"on\" (want best-effort, off or required)"}},
		{"sandbox key", base + "[sandbox]\nlandlok = \"off\"\n", []string{"c.toml:13: sandbox.landlok: unknown setting"}},
		{"unknown table", base + "[listener.tlss]\nmin_version = \"1.2\"\n", []string{"c.toml:12: listener[0].tlss: unknown setting"}},
		{"unknown key second listener", base + "\n[[listener]]\nname = \"b\"\nlisten = \"127.0.0.1:1\"\nmode = \"offload\"\nkeys = [\"web\"]\nbackend = \"x:1\"\nbakend = \"y:1\"\n",
			[]string{"c.toml:19: listener[1].bakend: unknown setting"}},
		{"type error", strings.Replace(base, `keys = ["web"]`, `keys = "web"`, 1), []string{"c.toml:10: listener[0].keys: incompatible types"}},
		{"type error duration", base + "handshake_timeout = 10\nidle_timeout = \"ten\"\n", []string{"c.toml:13", "idle_timeout", "invalid duration"}},
		{"syntax error", base + "name = \n", []string{"c.toml:12"}},
		{"unknown key name", strings.Replace(base, `keys = ["web"]`, `keys = ["web", "api"]`, 1), []string{`c.toml:10: listener[0].keys: unknown key "api"`}},
		{"duplicate key", base + "[[key]]\nname = \"web\"\ncert = \"a\"\nsource = \"sealed:b\"\n", []string{`c.toml:13: key[1].name: duplicate key name "web"`}},
		{"bad mode", strings.Replace(base, `"offload"`, `"offlaod"`, 1), []string{`c.toml:9: listener[0].mode: unknown mode "offlaod"`}},
		{"missing backend", strings.Replace(base, "backend = \"127.0.0.1:9000\"\n", "", 1), []string{"listener[0].backend: missing"}},
		{"plaintext refused", strings.Replace(base, "sealed:", "file:", 1), []string{"key[0].source", "allow_plaintext_keys"}},
		{"bad pin-source", strings.Replace(base, "sealed:web.key.jwe", "pkcs11:token=t;object=k?module-path=/m.so&pin-source=/run/pin", 1),
			[]string{"c.toml:", "key[0].source: bad key reference: pkcs11 pin-source must be file:PATH or sealed:PATH"}},
		{"no listener", "[admin]\nlisten = \"127.0.0.1:9\"\n", []string{"no [[listener]]"}},
		{"duplicate listener", base + "\n[[listener]]\nname = \"web\"\nlisten = \"127.0.0.1:8443\"\nmode = \"offload\"\nkeys = [\"web\"]\nbackend = \"x:1\"\n",
			[]string{"2 problems", `c.toml:14: listener[1].name: duplicate listener name "web"`, `c.toml:15: listener[1].listen: 127.0.0.1:8443 is also`}},
		{"bad version", base + "[listener.tls]\nmin_version = \"1.3\"\nmax_version = \"1.2\"\n", []string{"c.toml:14: listener[0].tls.max_version: 1.2 is below"}},
		{"connect needs mTLS", strings.Replace(strings.Replace(base, `"offload"`, `"connect"`, 1), "backend = \"127.0.0.1:9000\"\n", "[listener.connect]\nallow = [\"db:5432\"]\n", 1),
			[]string{"client_auth", "only authenticated clients"}},
		{"encrypt with keys", strings.Replace(base, `"offload"`, `"encrypt"`, 1), []string{"listener[0].keys: mode encrypt"}},
		{"unix TLS backend without name", strings.Replace(strings.Replace(base, `"offload"`, `"bridge"`, 1), `"127.0.0.1:9000"`, `"unix:/run/db.sock"`, 1),
			[]string{"listener[0].upstream.server_name: missing"}},
		{"reload on a public admin", base + "[admin]\nlisten = \"0.0.0.0:9090\"\nreload = true\n", []string{"c.toml:14: admin.reload: POST /reload needs a loopback"}},
		{"reload on an activated admin", base + "[admin]\nlisten = \"systemd:admin\"\nreload = true\n", []string{"admin.reload: POST /reload needs a loopback"}},
		{"reload without admin", base + "[admin]\nreload = true\n", []string{"admin.reload: needs admin.listen"}},
		{"upgrade on a public admin", base + "[admin]\nlisten = \"0.0.0.0:9090\"\nupgrade = true\n", []string{"c.toml:14: admin.upgrade: POST /upgrade needs a loopback"}},
		{"upgrade without admin", base + "[admin]\nupgrade = true\n", []string{"admin.upgrade: needs admin.listen"}},
		{"state file on a TCP admin", base + "[admin]\nlisten = \"127.0.0.1:9090\"\nstate_file = \"s.json\"\n", []string{"c.toml:14: admin.state_file: the control API (sealproxy ctl) is served only on a unix: admin.listen"}},
		{"ctl users on a TCP admin", base + "[admin]\nlisten = \"127.0.0.1:9090\"\nctl_users = [\"deploy\"]\n", []string{"c.toml:14: admin.ctl_users: the control API (sealproxy ctl) is served only on a unix: admin.listen"}},
		{"bad systemd name", strings.Replace(base, `"127.0.0.1:8443"`, `"systemd:"`, 1), []string{"listener[0].listen", "want systemd:NAME"}},
		{"unlock unknown key", base + "[unlock]\ntimout = \"1m\"\n", []string{"c.toml:13: unlock.timout: unknown setting"}},
		{"unlock negative", base + "[unlock]\ntimeout = \"-1m\"\n", []string{"c.toml:13: unlock.timeout: must not be negative"}},
		{"unlock backoff order", base + "[unlock]\nretry_backoff = \"1m\"\nretry_backoff_max = \"10s\"\n", []string{"c.toml:14: unlock.retry_backoff_max: 10s is below retry_backoff 1m0s"}},
		// A client without a certificate passes client_auth = "request";
		// allow rules would never see it (issue 11).
		{"request with allow rules", base + "[listener.tls]\nclient_auth = \"request\"\nclient_ca = \"ca.pem\"\n[listener.tls.allow]\ncn = [\"alice\"]\n",
			[]string{`c.toml:13: listener[0].tls.client_auth: client_auth = "request" admits clients without a certificate`, `use client_auth = "require" with allow rules`}},
		{"empty allow cn", base + "[listener.tls]\nclient_auth = \"require\"\nclient_ca = \"ca.pem\"\nallow = { cn = [\"alice\", \"\"] }\n",
			[]string{`c.toml:15: listener[0].tls.allow.cn: empty value: it would match certificates that have no cn at all`}},
		{"empty allow ou", base + "[listener.tls]\nclient_auth = \"require\"\nclient_ca = \"ca.pem\"\n[listener.tls.allow]\nou = [\" \"]\n",
			[]string{`c.toml:16: listener[0].tls.allow.ou: empty value`}},
		{"bare dns wildcard", base + "[listener.tls]\nclient_auth = \"require\"\nclient_ca = \"ca.pem\"\n[listener.tls.allow]\ndns = [\"*.\"]\n",
			[]string{`listener[0].tls.allow.dns: pattern "*." names no domain`}},
		{"client key unknown", strings.Replace(base, `"offload"`, `"bridge"`, 1) + "[listener.upstream]\nclient_key = \"nope\"\n", []string{"c.toml:13: listener[0].upstream.client_key: unknown key"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse("c.toml", []byte(tt.toml))
			if err == nil {
				t.Fatal("no error")
			}
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("error %v does not match ErrInvalid", err)
			}
			msg := err.Error()
			rest := msg
			for _, w := range tt.want {
				i := strings.Index(rest, w)
				if i < 0 {
					t.Fatalf("error\n%s\nlacks %q", msg, w)
				}
				rest = rest[i+len(w):]
			}
		})
	}
}

func TestFullConfig(t *testing.T) {
	data, err := os.ReadFile("testdata/full.toml")
	if err != nil {
		t.Fatal(err)
	}
	// Windows refuses [pool] (TestPoolRefusedOnWindows); the rest of the
	// file must still parse there.
	pool := runtime.GOOS != "windows"
	if !pool {
		data = data[:bytes.Index(data, []byte("\n[pool]"))+1]
	}
	cfg, err := Parse("testdata/full.toml", data)
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Listeners) != 4 {
		t.Fatalf("%d listeners", len(cfg.Listeners))
	}
	if u := cfg.Unlock; u.Timeout != 10*time.Minute || u.RetryBackoff != 2*time.Second || u.RetryBackoffMax != time.Minute {
		t.Errorf("unlock = %+v", u)
	}
	if !cfg.Admin.Reload {
		t.Error("admin.reload not read")
	}
	if a := cfg.Key("acme").ACME; a == nil || a.Challenge != ChallengeHTTP || a.HTTPListen != "0.0.0.0:80" || a.SealPin != "sss" || a.EABKID != "kid-1" || len(a.Names) != 2 {
		t.Errorf("key.acme = %+v", a)
	}
	if p := cfg.Pool; pool && (p.MaxConnections != 256 || p.FileMode != 0o660 || p.MaxLifetime != time.Hour || len(p.Services) != 2 || p.Services[1].ServerName != "api.example.com") {
		t.Errorf("pool = %+v", p)
	}
	if s := cfg.Sandbox; s.Landlock != "best-effort" || len(s.Read) != 1 || len(s.Write) != 1 {
		t.Errorf("sandbox = %+v", s)
	}
	if r := cfg.Listeners[0].TLS.ListenerRevocation; r.ClientOCSP != ClientOCSPSoft || r.ClientOCSPTimeout != 2*time.Second ||
		r.CRLStale != CRLStaleRefuse || r.ClientOCSPResponder != "http://ocsp.example.com/" || cfg.Revocation.FetchTimeout != 5*time.Second {
		t.Errorf("revocation = %+v, %+v", r, cfg.Revocation)
	}
}

func TestDefaults(t *testing.T) {
	cfg, err := Parse("c.toml", []byte(base))
	if err != nil {
		t.Fatal(err)
	}
	want := Unlock{Timeout: DefaultUnlockTimeout, RetryBackoff: DefaultRetryBackoff, RetryBackoffMax: DefaultRetryBackoffMax}
	if cfg.Unlock != want || cfg.ShutdownTimeout != DefaultShutdownTimeout || cfg.Admin.Reload {
		t.Errorf("defaults: unlock %+v, shutdown_timeout %v, admin %+v", cfg.Unlock, cfg.ShutdownTimeout, cfg.Admin)
	}
	cfg, err = Parse("c.toml", []byte(strings.Replace(base, `"127.0.0.1:8443"`, `"systemd:web"`, 1)+"[admin]\nlisten = \"unix:/run/sealproxy/admin.sock\"\nreload = true\n"))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Listeners[0].Listen != "systemd:web" {
		t.Errorf("listen = %q", cfg.Listeners[0].Listen)
	}
}

// TestWarnings: settings weaker than Mozilla's intermediate profile are
// accepted, each with a warning at its line; the defaults warn nothing.
func TestWarnings(t *testing.T) {
	cfg, err := Parse("c.toml", []byte(base))
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Warnings) != 0 {
		t.Errorf("defaults warn: %v", cfg.Warnings)
	}
	cfg, err = Parse("c.toml", []byte(base+"[listener.tls]\nmin_version = \"1.0\"\ncipher_suites = [\"TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256\",\n  \"TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA\", \"TLS_AES_128_GCM_SHA256\"]\n"))
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"c.toml:14: listener[0].tls.cipher_suites: TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA is a CBC suite (MAC-then-encrypt: testssl.sh reports LUCKY13), outside Mozilla's intermediate profile",
		"c.toml:14: listener[0].tls.cipher_suites: TLS_AES_128_GCM_SHA256 is a TLS 1.3 suite",
		"c.toml:13: listener[0].tls.min_version: TLS 1.0 is below Mozilla's intermediate profile",
	}
	if len(cfg.Warnings) != len(want) {
		t.Fatalf("warnings %v, want %d", cfg.Warnings, len(want))
	}
	for i, w := range want {
		if got := cfg.Warnings[i].Error(); !strings.HasPrefix(got, w) {
			t.Errorf("warning %d = %q, want prefix %q", i, got, w)
		}
	}
}

// TestWarnsConnectLocalhost: a connect destination named localhost is
// always refused after resolution; check says how to allow it.
func TestWarnsConnectLocalhost(t *testing.T) {
	cfg, err := Parse("c.toml", []byte(strings.Replace(strings.Replace(base, `"offload"`, `"connect"`, 1), "backend = \"127.0.0.1:9000\"\n",
		"[listener.tls]\nclient_auth = \"require\"\nclient_ca = \"ca.pem\"\n[listener.connect]\nallow = [\"127.0.0.1:5432\", \"LocalHost:6379\"]\n", 1)))
	if err != nil {
		t.Fatal(err)
	}
	want := `c.toml:15: listener[0].connect.allow: destination "LocalHost:6379" resolves to loopback, which connect refuses unless an entry names the address: write 127.0.0.1:6379 or [::1]:6379`
	if len(cfg.Warnings) != 1 || cfg.Warnings[0].Error() != want {
		t.Errorf("warnings %v, want %q", cfg.Warnings, want)
	}
}

func TestLoopback(t *testing.T) {
	for addr, want := range map[string]bool{
		"127.0.0.1:9090": true, "[::1]:9090": true, "localhost:9090": true, "unix:/run/a.sock": true,
		"0.0.0.0:9090": false, "[::]:9090": false, "10.0.0.1:9090": false, "systemd:admin": false, ":9090": false,
	} {
		if got := Loopback(addr); got != want {
			t.Errorf("Loopback(%q) = %v", addr, got)
		}
	}
}

func FuzzConfig(f *testing.F) {
	for _, name := range []string{"example.toml", "full.toml"} {
		data, err := os.ReadFile(filepath.Join("testdata", name))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Add([]byte(base + "[listener.tls]\nalpn = [\n \"h2\",\n]\ncipher_suites = '''\n'''\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := Parse("fuzz.toml", data)
		if err != nil {
			if !errors.Is(err, ErrInvalid) && !strings.HasPrefix(err.Error(), "fuzz.toml") {
				t.Fatalf("error without position prefix: %v", err)
			}
			return
		}
		if len(cfg.Listeners) == 0 && cfg.Pool.Listen == "" {
			t.Fatal("valid config without listeners or a pool")
		}
	})
}
