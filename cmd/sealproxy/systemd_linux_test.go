package main

import (
	"bytes"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sealproxy/sealproxy/proxy/config"
	"github.com/sealproxy/sealproxy/testenv"
)

// unitDir holds the systemd units we ship.
const unitDir = "../../docs/packaging/systemd"

// TestUnitsVerify checks the shipped units with systemd-analyze verify
// (skipped where systemd is not installed) and that their hardening is
// there.
func TestUnitsVerify(t *testing.T) {
	units := []string{"sealproxy.service", "sealgate.service", "sealproxy-web.socket"}
	for _, u := range units[:2] {
		data, err := os.ReadFile(filepath.Join(unitDir, u))
		if err != nil {
			t.Fatal(err)
		}
		for _, want := range []string{
			"NoNewPrivileges=yes", "ProtectSystem=strict", "ProtectHome=yes", "PrivateTmp=yes", "PrivateDevices=yes",
			"LimitCORE=0", "MemoryDenyWriteExecute=yes", "LockPersonality=yes", "RestrictAddressFamilies=",
			"SystemCallFilter=@system-service", "DynamicUser=yes", "\nCapabilityBoundingSet=\n",
		} {
			if !bytes.Contains(data, []byte(want)) {
				t.Errorf("%s lacks %q", u, want)
			}
		}
	}
	checkReloadUnit(t)
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("systemd-analyze is not installed; the units were not verified")
	}
	// Verify copies whose programs exist here: verify checks ExecStart.
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	var paths []string
	for _, u := range units {
		data, err := os.ReadFile(filepath.Join(unitDir, u))
		if err != nil {
			t.Fatal(err)
		}
		data = bytes.ReplaceAll(data, []byte("/usr/bin/sealproxy"), []byte(exe))
		data = bytes.ReplaceAll(data, []byte("/usr/bin/sealgate"), []byte(exe))
		p := filepath.Join(dir, u)
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
		paths = append(paths, p)
	}
	cmd := exec.Command(analyze, append([]string{"verify", "--man=no"}, paths...)...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
}

// checkReloadUnit: the unit reloads through `sealproxy reload` on the
// admin socket that the packaged example configuration serves with
// reload = true, and keeps Type=notify (systemd 252 refuses
// notify-reload and then ignores `systemctl reload`).
func checkReloadUnit(t *testing.T) {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(unitDir, "sealproxy.service"))
	if err != nil {
		t.Fatal(err)
	}
	unit := string(data)
	const sock = "unix:/run/sealproxy/admin.sock"
	if !strings.Contains(unit, "\nExecReload=/usr/bin/sealproxy reload --admin "+sock+"\n") {
		t.Errorf("sealproxy.service: ExecReload does not run sealproxy reload --admin %s", sock)
	}
	if !strings.Contains(unit, "\nType=notify\n") {
		t.Errorf("sealproxy.service: want Type=notify (systemd 252 has no notify-reload)")
	}
	cfg, err := config.Load("../../docs/packaging/sealproxy.toml")
	if err != nil {
		t.Fatalf("the packaged example configuration: %v", err)
	}
	if !cfg.Admin.Upgrade || !strings.Contains(unit, "\nNotifyAccess=main\n") {
		t.Errorf("the packaged example configuration: upgrade = %v; want true, with NotifyAccess=main in the unit", cfg.Admin.Upgrade)
	}
	// An upgrade's successor becomes the main process through PIDFile=
	// (read when the old one exits, by then its parent no more), in the
	// directory the unit makes writable for it.
	if !strings.Contains(unit, "\nPIDFile=/run/sealproxy/sealproxy.pid\n") || !strings.Contains(unit, "\nRuntimeDirectory=sealproxy\n") {
		t.Errorf("sealproxy.service: want PIDFile=/run/sealproxy/sealproxy.pid with RuntimeDirectory=sealproxy")
	}
	if cfg.Admin.Listen != sock || !cfg.Admin.Reload {
		t.Errorf("the packaged example configuration: [admin] listen = %q, reload = %v; the unit's ExecReload needs %q and true",
			cfg.Admin.Listen, cfg.Admin.Reload, sock)
	}
}

// TestProcessUnderSupervision runs the built binary the way systemd does:
// its listener socket passed by name (systemd-socket-activate where
// installed, else LISTEN_FDS set up here), NOTIFY_SOCKET a socket this
// test owns, real signals. SIGHUP reloads; SIGTERM drains a connection in
// flight and exits 0.
func TestProcessUnderSupervision(t *testing.T) {
	bin := testenv.BuildCommand(t, "sealproxy")
	f := newFixture(t)
	tangSrv := testenv.EmbeddedTang(t)
	f.sealed("web", tangSrv)
	path := f.write("shutdown_timeout = \"1m\"\n" + key("web") + f.listener("web", "systemd:web"))
	n := listenNotify(t)
	notifyPath := os.Getenv("NOTIFY_SOCKET")

	var cmd *exec.Cmd
	var addr string
	if tool, err := exec.LookPath("systemd-socket-activate"); err == nil {
		addr = testenv.FreeAddr(t)
		cmd = exec.Command(tool, "-l", addr, "--fdname=web", "-E", "NOTIFY_SOCKET="+notifyPath,
			bin, "run", "--config", path)
	} else {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr = ln.Addr().String()
		file, err := ln.(*net.TCPListener).File()
		if err != nil {
			t.Fatal(err)
		}
		ln.Close()
		defer file.Close()
		// LISTEN_PID must be the daemon's own: the shell's, kept by exec.
		cmd = exec.Command("/bin/sh", "-c", `LISTEN_PID=$$ LISTEN_FDS=1 LISTEN_FDNAMES=web exec "$0" "$@"`,
			bin, "run", "--config", path)
		cmd.ExtraFiles = []*os.File{file}
		cmd.Env = append(os.Environ(), "NOTIFY_SOCKET="+notifyPath)
	}
	p := startProcess(t, cmd)
	stderr := p.logs

	// systemd-socket-activate starts the daemon at the first connection:
	// make one; it is served once the keys are open.
	first := make(chan error, 1)
	go func() {
		deadline := time.Now().Add(time.Minute)
		for {
			// Refused until systemd-socket-activate has bound the port.
			c, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: f.ca.Pool(), ServerName: "web.test"})
			if err == nil {
				c.Close()
			}
			if !errors.Is(err, syscall.ECONNREFUSED) || time.Now().After(deadline) {
				first <- err
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
	}()
	n.expect(t, "READY=1")
	if err := <-first; err != nil {
		t.Fatalf("first connection: %v\n%s", err, stderr.String())
	}
	f.roundTrip(addr, "web", "activated process")
	inflight, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: f.ca.Pool(), ServerName: "web.test"})
	if err != nil {
		t.Fatal(err)
	}
	defer inflight.Close()
	echo := func(msg string) {
		t.Helper()
		io.WriteString(inflight, msg)
		buf := make([]byte, len(msg))
		if _, err := io.ReadFull(inflight, buf); err != nil || string(buf) != msg {
			t.Fatalf("in-flight echo %q: %q, %v\n%s", msg, buf, err, stderr.String())
		}
	}
	echo("one")

	p.signal(syscall.SIGHUP)
	n.expect(t, "RELOADING=1", "MONOTONIC_USEC=")
	n.expect(t, "READY=1")
	f.roundTrip(addr, "web", "after reload") // the passed socket is still served
	echo("two")

	p.signal(syscall.SIGTERM)
	n.expect(t, "STOPPING=1")
	echo("three")
	inflight.CloseWrite()
	if rest, err := io.ReadAll(inflight); err != nil || len(rest) != 0 {
		t.Fatalf("end of the in-flight connection: %q, %v", rest, err)
	}
	p.waitExit(time.Minute, "SIGTERM and the drain")
	logs := stderr.String()
	for _, want := range []string{"msg=ready", `msg="stopping: no new connections; draining" why=terminated`, "msg=stopped"} {
		if !strings.Contains(logs, want) {
			t.Errorf("logs lack %q:\n%s", want, logs)
		}
	}
	if strings.Count(logs, `msg="key unlocked"`) != 1 {
		t.Errorf("want one unlock (the reload keeps the key):\n%s", logs)
	}
}
