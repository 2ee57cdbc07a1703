package config

import (
	"runtime"
	"strings"
	"testing"
)

const poolOnly = `[[key]]
name = "web"
cert = "web.crt"
source = "sealed:web.key.jwe"

[pool]
listen = "unix:/run/sealproxy/pool.sock"
mode = "0660"
group = "0"

[[pool.service]]
name = "web"
role = "server"
keys = ["web"]
users = ["root", "4242"]
tls = { client_auth = "require", client_ca = "clients.pem", allow = { cn = ["bob"] } }

[[pool.service]]
name = "out"
role = "client"
groups = ["0"]
ca = "ca.pem"
server_name = "api.example"
key = "web"
tls = { min_version = "1.3", allow = { dns = ["api.example"] } }
`

// TestPoolOnly: [pool] without [[listener]] is valid, names resolve to
// ids, and the tls table gets a listener's defaults.
func TestPoolOnly(t *testing.T) {
	skipOnWindows(t)
	cfg, err := Parse("c.toml", []byte(poolOnly))
	if err != nil {
		t.Fatal(err)
	}
	p := cfg.Pool
	if p.FileMode != 0o660 || p.GID != 0 || p.MaxConnections != DefaultPoolMaxConnections || p.HandshakeTimeout != DefaultHandshakeTimeout {
		t.Errorf("pool %+v", p)
	}
	web := p.Services[0]
	if len(web.UIDs) != 2 || web.UIDs[0] != 0 || web.UIDs[1] != 4242 || web.TLS.MinVersion != DefaultMinVersion {
		t.Errorf("web %+v", web)
	}
	out := p.Services[1]
	if len(out.GIDs) != 1 || out.TLS.MinVersion != "1.3" || len(out.TLS.Allow.DNS) != 1 {
		t.Errorf("out %+v", out)
	}
	if len(cfg.Warnings) != 0 {
		t.Errorf("warnings %v", cfg.Warnings)
	}
}

func TestPoolErrors(t *testing.T) {
	skipOnWindows(t)
	for _, tc := range []struct {
		name, old, new, want string
	}{
		{"tcp listen", `listen = "unix:/run/sealproxy/pool.sock"`, `listen = "127.0.0.1:9"`, `c.toml:7: pool.listen: "127.0.0.1:9": the pool listens on a unix socket only`},
		{"mode", `mode = "0660"`, `mode = "rw"`, `c.toml:8: pool.mode: "rw": want octal permissions`},
		{"unknown user", `users = ["root", "4242"]`, `users = ["no-such-user-here"]`, `c.toml:15: pool.service[0].users: unknown user "no-such-user-here" on this system`},
		{"unknown group", `groups = ["0"]`, `groups = ["no-such-group-here"]`, `c.toml:21: pool.service[1].groups: unknown group "no-such-group-here"`},
		{"role", `role = "server"`, `role = "both"`, `c.toml:13: pool.service[0].role: unknown role "both" (want server or client)`},
		{"unknown key", `keys = ["web"]`, `keys = ["nope"]`, `c.toml:14: pool.service[0].keys: unknown key "nope"`},
		{"tls like a listener", `client_ca = "clients.pem", `, ``, `c.toml:16: pool.service[0].tls.client_ca: missing: client_auth = "require" needs the CA bundle`},
		{"client role with client_auth", `tls = { min_version = "1.3",`, `tls = { client_auth = "require", min_version = "1.3",`, `c.toml:25: pool.service[1].tls.client_auth: client_auth, client_ca and crl are for role = "server"`},
		{"client key", `key = "web"`, `key = "zz"`, `c.toml:24: pool.service[1].key: unknown key "zz"`},
		{"server with ca", `keys = ["web"]`, "keys = [\"web\"]\nca = \"x.pem\"", `pool.service[0].ca: ca, server_name and key are for role = "client"`},
		{"duplicate", `name = "out"`, `name = "web"`, `c.toml:19: pool.service[1].name: duplicate service name "web"`},
		{"unknown setting", `role = "client"`, "role = \"client\"\nport = 1", `c.toml:21: pool.service[1].port: unknown setting`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if !strings.Contains(poolOnly, tc.old) {
				t.Fatalf("%q not in the base", tc.old)
			}
			_, err := Parse("c.toml", []byte(strings.Replace(poolOnly, tc.old, tc.new, 1)))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v\nwant %s", err, tc.want)
			}
		})
	}
}

// TestPoolNobody: a service that names no users or groups is valid but
// serves nobody, and check warns.
func TestPoolNobody(t *testing.T) {
	skipOnWindows(t)
	cfg, err := Parse("c.toml", []byte(strings.Replace(poolOnly, `users = ["root", "4242"]`, ``, 1)))
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Warnings) != 1 || !strings.Contains(cfg.Warnings[0].Error(), "nobody may use it") {
		t.Fatalf("warnings %v", cfg.Warnings)
	}
	if len(cfg.Pool.Services[0].UIDs)+len(cfg.Pool.Services[0].GIDs) != 0 {
		t.Errorf("ids %+v", cfg.Pool.Services[0])
	}
}

// TestPoolRefusedOnWindows: the Windows build refuses [pool] with a
// clear error instead of starting without it.
func TestPoolRefusedOnWindows(t *testing.T) {
	old := poolUnavailable
	poolUnavailable = true
	defer func() { poolUnavailable = old }()
	_, err := Parse("c.toml", []byte(poolOnly))
	if err == nil || !strings.Contains(err.Error(), "c.toml:6: pool: the TLS pool is not available on Windows yet") {
		t.Fatalf("got %v", err)
	}
}

// skipOnWindows skips a test of [pool] settings where the pool is
// refused as a whole (TestPoolRefusedOnWindows checks that refusal).
func skipOnWindows(t *testing.T) {
	t.Helper()
	if runtime.GOOS == "windows" {
		t.Skip("Windows refuses [pool] before its settings: TestPoolRefusedOnWindows")
	}
}
