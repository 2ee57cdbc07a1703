package control

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/sealproxy/sealproxy/proxy/config"
	"github.com/sealproxy/sealproxy/testenv"
)

// harness is a control API over a real unix socket, with the daemon's
// parts faked: Stage refuses sources whose path contains "deny", Reload
// reads the configuration file again and applies the state as the
// daemon's loader does (failing while failReload is set).
type harness struct {
	t          *testing.T
	dir, path  string
	sock       string
	srv        *Server
	uid        atomic.Uint32
	logs       *testenv.SyncBuffer
	staged     atomic.Int32 // keys staged and not discarded
	failReload atomic.Bool
}

func newHarness(t *testing.T, stateFile bool, users ...string) *harness {
	t.Helper()
	if runtime.GOOS == "windows" {
		t.Skip("the control API is served on unix sockets with SO_PEERCRED")
	}
	h := &harness{t: t, dir: t.TempDir(), logs: &testenv.SyncBuffer{}}
	ca := testenv.NewCA(t, "ctl CA")
	for _, n := range []string{"web", "api", "web2"} {
		leaf := ca.Server(t, n+".test")
		if err := os.WriteFile(filepath.Join(h.dir, n+".crt"), leaf.ChainPEM(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	h.uid.Store(uint32(os.Getuid()))
	sockDir, err := os.MkdirTemp("", "ctl")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(sockDir) })
	h.sock = filepath.Join(sockDir, "admin.sock")
	h.writeConfig("")
	o := Options{
		Users: users,
		Log:   slog.New(slog.NewTextHandler(h.logs, nil)),
		Stage: func(ctx context.Context, cfg *config.Config, k *config.Key) (func(), error) {
			if strings.Contains(k.Source, "deny") {
				return nil, errors.New("an operator denied the recovery")
			}
			h.staged.Add(1)
			return func() { h.staged.Add(-1) }, nil
		},
		Reload: func(ctx context.Context) error {
			if h.failReload.Load() {
				return errors.New("reload failed, the previous configuration stays: test")
			}
			return h.load()
		},
		PeerUID: func(c *net.UnixConn) (uint32, error) {
			real, err := peerUID(c)
			if err != nil && runtime.GOOS == "linux" {
				return 0, err
			}
			if runtime.GOOS == "linux" && real != uint32(os.Getuid()) {
				return 0, fmt.Errorf("SO_PEERCRED says %d, want our own uid", real)
			}
			return h.uid.Load(), nil // the test plays another caller
		},
	}
	if stateFile {
		o.StateFile = filepath.Join(h.dir, "state.json")
	}
	srv, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	h.srv = srv
	if err := h.load(); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("unix", h.sock)
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: srv.Handler(), ConnContext: ConnContext}
	go hs.Serve(ln)
	t.Cleanup(func() { hs.Close() })
	return h
}

// writeConfig writes a configuration with keys web and api (web used by
// listener "web"), plus extra.
func (h *harness) writeConfig(extra string) {
	h.t.Helper()
	cfg := fmt.Sprintf(`[[key]]
name = "web"
cert = "web.crt"
source = "sealed:web.jwe"

[[key]]
name = "api"
cert = "api.crt"
source = "sealed:api.jwe"
%s
[[listener]]
name = "web"
listen = "127.0.0.1:0"
mode = "offload"
keys = ["web"]
backend = "127.0.0.1:1"

[admin]
listen = "unix:%s"
`, extra, h.sock)
	h.path = filepath.Join(h.dir, "sealproxy.toml")
	if err := os.WriteFile(h.path, []byte(cfg), 0o644); err != nil {
		h.t.Fatal(err)
	}
}

// load is what the daemon's loader and Applied do.
func (h *harness) load() error {
	base, err := config.Load(h.path)
	if err != nil {
		return err
	}
	cfg, err := h.srv.Apply(base)
	if err != nil {
		return err
	}
	h.srv.Applied(cfg)
	return nil
}

func (h *harness) call(verb string, req *Request) (json.RawMessage, error) {
	h.t.Helper()
	return Call(context.Background(), "unix:"+h.sock, verb, req, nil)
}

func (h *harness) keys() map[string]KeyInfo {
	h.t.Helper()
	res, err := h.call("keys", &Request{})
	if err != nil {
		h.t.Fatal(err)
	}
	var list []KeyInfo
	if err := json.Unmarshal(res, &list); err != nil {
		h.t.Fatal(err)
	}
	out := map[string]KeyInfo{}
	for _, k := range list {
		out[k.Name+"/"+k.Origin] = k
	}
	return out
}

func mustCall(t *testing.T, h *harness, verb string, req *Request) {
	t.Helper()
	if _, err := h.call(verb, req); err != nil {
		t.Fatalf("%s %+v: %v", verb, req, err)
	}
}

// TestVerbs runs every verb and follows each in `keys`: origin, the
// listeners using a key, the certificate's SANs, and the state file.
func TestVerbs(t *testing.T) {
	h := newHarness(t, true)
	k := h.keys()
	if w := k["web/config"]; len(w.Listeners) != 1 || w.Listeners[0] != "web" || w.SANs[0] != "web.test" || w.Source != "sealed:web.jwe" {
		t.Fatalf("keys: web = %+v", w)
	}
	// A new key: staged, not yet usable.
	mustCall(t, h, "set-key", &Request{Key: "new", Cert: filepath.Join(h.dir, "web2.crt"), Source: "sealed:web2.jwe"})
	if _, ok := h.keys()["new/staged"]; !ok || h.staged.Load() != 1 {
		t.Fatalf("set-key: not staged: %v", h.keys())
	}
	if _, err := h.call("attach", &Request{Listener: "web", Key: "new"}); err == nil || !strings.Contains(err.Error(), "staged, not committed") {
		t.Fatalf("attach of a staged key = %v", err)
	}
	mustCall(t, h, "abort", &Request{Key: "new"})
	if _, ok := h.keys()["new/staged"]; ok || h.staged.Load() != 0 {
		t.Fatalf("abort: still staged")
	}
	mustCall(t, h, "set-key", &Request{Key: "new", Cert: filepath.Join(h.dir, "web2.crt"), Source: "sealed:web2.jwe"})
	mustCall(t, h, "commit", &Request{Key: "new"})
	mustCall(t, h, "attach", &Request{Listener: "web", Key: "new"})
	k = h.keys()
	if n := k["new/state"]; len(n.Listeners) != 1 || n.SANs[0] != "web2.test" {
		t.Fatalf("after commit and attach: %+v", k)
	}
	// Replace a key of the configuration.
	mustCall(t, h, "set-key", &Request{Key: "web", Cert: filepath.Join(h.dir, "web2.crt"), Source: "sealed:web-new.jwe"})
	mustCall(t, h, "commit", &Request{Key: "web"})
	if w := h.keys()["web/state"]; w.Source != "sealed:web-new.jwe" || w.SANs[0] != "web2.test" {
		t.Fatalf("replaced web = %+v", w)
	}
	mustCall(t, h, "detach", &Request{Listener: "web", Key: "new"})
	mustCall(t, h, "remove-key", &Request{Key: "new"})
	if _, ok := h.keys()["new/state"]; ok {
		t.Fatal("remove-key: still listed")
	}
	// What persisted: the replaced web and the listener's list.
	st, _, err := readState(filepath.Join(h.dir, "state.json"))
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Keys) != 1 || st.Keys[0].Name != "web" || st.Keys[0].Replaces == nil || st.Keys[0].Replaces.Source != "sealed:web.jwe" {
		t.Fatalf("state: %+v", st)
	}
	fi, err := os.Stat(filepath.Join(h.dir, "state.json"))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("state file mode: %v %v", fi.Mode(), err)
	}
}

// TestRefusals: callers and requests the API turns away, each with the
// reason, and each call audited with the caller's uid.
func TestRefusals(t *testing.T) {
	h := newHarness(t, false)
	h.uid.Store(4242)
	_, err := h.call("keys", &Request{})
	if err == nil || !strings.Contains(err.Error(), "uid 4242 may not use the control API") {
		t.Fatalf("uid 4242: %v", err)
	}
	if !strings.Contains(h.logs.String(), "uid=4242") {
		t.Fatalf("refusal not audited with the uid:\n%s", h.logs.String())
	}
	h.uid.Store(0) // root may
	mustCall(t, h, "keys", &Request{})

	cases := []struct {
		verb string
		req  Request
		want string
	}{
		{"remove-key", Request{Key: "web"}, `key "web" is used by listener(s) web`},
		{"remove-key", Request{Key: "api"}, "is defined in the configuration (" + h.path + ":6)"},
		{"commit", Request{Key: "web"}, `nothing staged for key "web"`},
		{"abort", Request{Key: "web"}, `nothing staged for key "web"`},
		{"detach", Request{Listener: "web", Key: "web"}, "listener \"web\"'s only key"},
		{"attach", Request{Listener: "nope", Key: "web"}, `no listener "nope"`},
		{"attach", Request{Listener: "web", Key: "web"}, "already uses"},
		{"set-key", Request{Key: "x", Cert: filepath.Join(h.dir, "web.crt"), Source: "sealed:deny.jwe"}, "an operator denied the recovery"},
		{"set-key", Request{Key: "x", Cert: filepath.Join(h.dir, "missing.crt"), Source: "sealed:x.jwe"}, "--cert"},
		{"set-key", Request{Key: "x", Cert: filepath.Join(h.dir, "web.crt"), Source: "bogus:x"}, "--source"},
		{"set-key", Request{Key: "bad\nname", Cert: filepath.Join(h.dir, "web.crt"), Source: "sealed:x.jwe"}, `key name "bad\nname"`},
		{"frobnicate", Request{}, "unknown verb"},
	}
	for _, c := range cases {
		_, err := h.call(c.verb, &c.req)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s %+v = %v, want %q", c.verb, c.req, err, c.want)
		}
	}
	if h.staged.Load() != 0 {
		t.Errorf("a refused set-key left %d key(s) staged", h.staged.Load())
	}
	// Text from the request reaches the log escaped: one record per line.
	for _, line := range strings.Split(strings.TrimSpace(h.logs.String()), "\n") {
		if !strings.HasPrefix(line, "time=") {
			t.Errorf("a log record was split by request text: %q", line)
		}
	}
	if !strings.Contains(h.logs.String(), `uid=0`) {
		t.Errorf("calls not audited with uid=0:\n%s", h.logs.String())
	}
}

// TestCtlUsers: [admin] ctl_users admits another uid.
func TestCtlUsers(t *testing.T) {
	h := newHarness(t, false, "4242")
	h.uid.Store(4242)
	mustCall(t, h, "keys", &Request{})
	h.uid.Store(4243)
	if _, err := h.call("keys", &Request{}); err == nil {
		t.Fatal("uid 4243 was let in")
	}
	if _, err := New(Options{Users: []string{"no-such-user-here"}}); err == nil || !strings.Contains(err.Error(), "ctl_users") {
		t.Fatalf("unknown user: %v", err)
	}
}

// TestTCPRefused: the API answers nothing but a refusal on a TCP admin
// listener, whoever calls.
func TestTCPRefused(t *testing.T) {
	h := newHarness(t, false)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: h.srv.Handler(), ConnContext: ConnContext}
	go hs.Serve(ln)
	defer hs.Close()
	for _, verb := range []string{"keys", "remove-key"} {
		_, err := Call(context.Background(), ln.Addr().String(), verb, &Request{Key: "api"}, nil)
		if err == nil || !strings.Contains(err.Error(), "served only on a unix admin socket") {
			t.Fatalf("%s over TCP: %v", verb, err)
		}
	}
	if h.srv.runningConfig().Key("api") == nil {
		t.Fatal("a TCP call removed a key")
	}
}

// TestReloadRefusedKeepsState: a change whose reload is refused leaves
// the state file as it was.
func TestReloadRefusedKeepsState(t *testing.T) {
	h := newHarness(t, true)
	mustCall(t, h, "set-key", &Request{Key: "new", Cert: filepath.Join(h.dir, "web2.crt"), Source: "sealed:web2.jwe"})
	mustCall(t, h, "commit", &Request{Key: "new"})
	before, err := os.ReadFile(filepath.Join(h.dir, "state.json"))
	if err != nil {
		t.Fatal(err)
	}
	h.failReload.Store(true)
	if _, err := h.call("attach", &Request{Listener: "web", Key: "new"}); err == nil {
		t.Fatal("attach applied although the reload failed")
	}
	after, _ := os.ReadFile(filepath.Join(h.dir, "state.json"))
	if string(after) != string(before) {
		t.Fatalf("state file changed by a refused change:\n%s\nwas\n%s", after, before)
	}
	if len(h.srv.current().Listeners) != 0 {
		t.Fatal("state in memory kept a refused change")
	}
}

// TestConflict: a configuration that contradicts the state file is
// refused, naming the configuration's file:line and the state file; one
// that agrees with it is not.
func TestConflict(t *testing.T) {
	h := newHarness(t, true)
	mustCall(t, h, "set-key", &Request{Key: "web", Cert: filepath.Join(h.dir, "web2.crt"), Source: "sealed:web2.jwe"})
	mustCall(t, h, "commit", &Request{Key: "web"})
	mustCall(t, h, "set-key", &Request{Key: "new", Cert: filepath.Join(h.dir, "web2.crt"), Source: "sealed:web2.jwe"})
	mustCall(t, h, "commit", &Request{Key: "new"})
	state := filepath.Join(h.dir, "state.json")

	// The configuration now defines "new" too, differently.
	h.writeConfig("\n[[key]]\nname = \"new\"\ncert = \"api.crt\"\nsource = \"sealed:other.jwe\"\n")
	err := h.load()
	if !errors.Is(err, ErrConflict) || !strings.Contains(err.Error(), h.path+":11") || !strings.Contains(err.Error(), state) {
		t.Fatalf("conflicting reload: %v", err)
	}
	// The same as the state says: no conflict.
	h.writeConfig("\n[[key]]\nname = \"new\"\ncert = \"" + filepath.Join(h.dir, "web2.crt") + "\"\nsource = \"sealed:web2.jwe\"\n")
	if err := h.load(); err != nil {
		t.Fatalf("agreeing reload: %v", err)
	}
	// web changed in the configuration after the API replaced it.
	cfg, _ := os.ReadFile(h.path)
	os.WriteFile(h.path, []byte(strings.Replace(string(cfg), "sealed:web.jwe", "sealed:web-edited.jwe", 1)), 0o644)
	err = h.load()
	if !errors.Is(err, ErrConflict) || !strings.Contains(err.Error(), h.path+":1") || !strings.Contains(err.Error(), `"web" was changed`) {
		t.Fatalf("edited web: %v", err)
	}
}

// TestStateFileHoldsNoSecrets: the state file holds references and
// paths, never key bytes; a reference carrying a PIN (pin-value) is
// refused rather than written out, and neither `keys` nor the audit log
// shows it.
func TestStateFileHoldsNoSecrets(t *testing.T) {
	h := newHarness(t, true)
	src := "pkcs11:token=t;object=k?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-value=s3cretPIN"
	_, err := h.call("set-key", &Request{Key: "hsm", Cert: filepath.Join(h.dir, "web2.crt"), Source: src})
	if err == nil || !strings.Contains(err.Error(), "pin-source=file:PATH") || strings.Contains(err.Error(), "s3cretPIN") {
		t.Fatalf("set-key with a pin-value: %v", err)
	}
	src = "pkcs11:token=t;object=k?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=file:/run/pin"
	mustCall(t, h, "set-key", &Request{Key: "hsm", Cert: filepath.Join(h.dir, "web2.crt"), Source: src})
	mustCall(t, h, "commit", &Request{Key: "hsm"})
	data, err := os.ReadFile(filepath.Join(h.dir, "state.json"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(data), "pin-source=file:/run/pin") {
		t.Fatalf("state file lacks the reference:\n%s", data)
	}
	for _, bad := range []string{"PRIVATE KEY", "BEGIN", "s3cretPIN"} {
		if strings.Contains(string(data), bad) {
			t.Fatalf("state file holds %q:\n%s", bad, data)
		}
	}
	if strings.Contains(h.logs.String(), "s3cretPIN") {
		t.Fatalf("the audit log shows the PIN:\n%s", h.logs.String())
	}
}

// FuzzParseState: whatever a state file holds, ParseState returns an
// error or a state that encodes and parses back to the same state.
func FuzzParseState(f *testing.F) {
	f.Add([]byte(`{"version":1,"keys":[{"name":"web","cert":"/etc/web.crt","source":"sealed:/etc/web.jwe","replaces":{"cert":"a","source":"sealed:b"}}],"listeners":[{"name":"l","keys":["web"],"was":["x"]}]}`))
	f.Add([]byte(`{"version":1}`))
	f.Add([]byte(`{"version":2}`))
	f.Add([]byte(`{"version":1,"keys":[{"name":"a\n","cert":"c","source":"sealed:x"}]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		st, err := ParseState(data)
		if err != nil {
			return
		}
		again, err := ParseState(st.encode())
		if err != nil {
			t.Fatalf("a parsed state does not parse again: %v\n%s", err, st.encode())
		}
		if string(again.encode()) != string(st.encode()) {
			t.Fatalf("round trip changed the state:\n%s\n%s", st.encode(), again.encode())
		}
	})
}

// TestKeysRedactsPIN: a configuration's pkcs11: key with a pin-value is
// listed with the PIN redacted.
func TestKeysRedactsPIN(t *testing.T) {
	h := newHarness(t, false)
	h.writeConfig("\n[[key]]\nname = \"hsm\"\ncert = \"web2.crt\"\nsource = \"pkcs11:token=t;object=k?module-path=/m.so&pin-value=s3cretPIN\"\n")
	if err := h.load(); err != nil {
		t.Fatal(err)
	}
	res, err := h.call("keys", &Request{})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(res), "s3cretPIN") || !strings.Contains(string(res), "pin-value=REDACTED") {
		t.Fatalf("keys: %s", res)
	}
}
