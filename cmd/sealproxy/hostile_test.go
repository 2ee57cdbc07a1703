package main

import (
	"strings"
	"syscall"
	"testing"

	"github.com/sealproxy/sealproxy/cmd/internal/cli"
	"github.com/sealproxy/sealproxy/testenv"
)

// hostileTang is an embedded Tang server behind testenv.HostileFront,
// which answers every recovery with status and body; it returns the pin
// configuration to seal to the front.
func hostileTang(t *testing.T, status int, body string) string {
	t.Helper()
	real := testenv.EmbeddedTang(t)
	return strings.Replace(real.Config(), real.URL, testenv.HostileFront(t, real.URL, status, body), 1)
}

// TestNotifyHostileDenial: a reload whose new key a "gate" denies with an
// operator name full of line breaks and escapes: the failure reaches
// systemd's STATUS= escaped, as one line, and adds no assignment of its
// own (READY=1, STATUS=, MAINPID=...).
func TestNotifyHostileDenial(t *testing.T) {
	f := newFixture(t)
	f.sealed("web", testenv.EmbeddedTang(t))
	pin := hostileTang(t, 403, `{"status":"denied","code":"AAAA-AAAA","operator":"eve\nMAINPID=1\nSTATUS=all keys open\u001b[2J"}`)
	f.sealedTo("api", pin)
	cfg := key("web") + f.listener("web", "127.0.0.1:0")
	path := f.write(cfg)
	n := listenNotify(t)
	r := startDaemon(t, &daemon{}, path)
	n.expect(t, "READY=1", "serving 1 listener(s)")

	f.write(cfg + key("api") + f.listener("api", "127.0.0.1:0"))
	r.sigs <- syscall.SIGHUP
	seen := n.expect(t, "last reload failed")
	msg := seen[len(seen)-1]
	if !strings.Contains(msg, `by operator "eve\nMAINPID=1\nSTATUS=all keys open\x1b[2J"`) {
		t.Errorf("the denial is not in the status, escaped: %q", msg)
	}
	for _, m := range seen {
		for _, line := range strings.Split(m, "\n") {
			if strings.HasPrefix(line, "MAINPID=") || line == "STATUS=all keys open" || strings.ContainsAny(line, "\x1b") {
				t.Fatalf("a notify message carries the gate's text raw: %q", m)
			}
		}
	}
	f.roundTrip(r.addr("web"), "web", "still serving")
}

// TestStartGateFull: a gate that refuses new requests because it is full
// is retried, reported as full (not as an unreachable server), and the
// start-up's failure says so.
func TestStartGateFull(t *testing.T) {
	f := newFixture(t)
	f.sealedTo("web", hostileTang(t, 503, `{"error":"too many pending requests"}`))
	path := f.write(key("web") + f.listener("web", "127.0.0.1:0") +
		"[unlock]\ntimeout = \"1s\"\nretry_backoff = \"10ms\"\nretry_backoff_max = \"50ms\"\n")
	_, stderr, code := runCLI(t, "run", "--config", path)
	if code != exitUnlock || code == cli.ExitDenied {
		t.Fatalf("exit %d, stderr:\n%s", code, stderr)
	}
	for _, want := range []string{
		"the gate refuses new requests: it is full (flooded?); retrying",
		"too many are pending (HTTP 503): too many pending requests",
		"sealproxy: hint: the gate is refusing new requests because too many are pending",
	} {
		if !strings.Contains(stderr, want) {
			t.Errorf("stderr lacks %q:\n%s", want, stderr)
		}
	}
	if strings.Contains(stderr, "Tang server unreachable") {
		t.Errorf("a full gate is reported as unreachable:\n%s", stderr)
	}
}
