//go:build linux

package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sealproxy/sealproxy/cmd/internal/sandbox"
	"github.com/sealproxy/sealproxy/testenv"
	"github.com/sealproxy/sealproxy/unlock"
	"github.com/sealproxy/sealproxy/unlock/tang"
)

// TestServeSandboxed runs the built sealgate with --landlock required:
// a key is recovered through it (a policy approves, the audit log
// records it), the keys are rotated (new files in the key directory) and
// the new key is advertised and recovers, and the audit log is still
// appended.
func TestServeSandboxed(t *testing.T) {
	testenv.NeedLandlock(t)
	bin := testenv.BuildCommand(t, "sealgate")
	tmp := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	dir := filepath.Join(tmp, "db")
	var out bytes.Buffer
	if err := run(ctx, []string{"keygen", "--dir", dir}, nil, &out, io.Discard); err != nil {
		t.Fatal(err)
	}
	thp := strings.TrimSpace(out.String())
	policy := filepath.Join(tmp, "etc", "policy.toml")
	audit := filepath.Join(tmp, "log", "audit.jsonl")
	for _, d := range []string{filepath.Dir(policy), filepath.Dir(audit)} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(policy, []byte("[[rule]]\nname = \"all\"\naction = \"approve\"\nany_source = true\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	probe, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := probe.Addr().String()
	probe.Close()

	cmd := exec.Command(bin, "serve", "--dir", dir, "--listen", addr, "--approval", "required",
		"--policy", policy, "--audit", audit, "--landlock", "required")
	var logs testenv.SyncBuffer
	cmd.Stderr = &logs
	cmd.WaitDelay = 10 * time.Second
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			<-exited
		}
	}()
	url := "http://" + addr
	for !strings.Contains(logs.String(), `msg="landlock sandbox applied" landlock_abi=`) {
		select {
		case err := <-exited:
			t.Fatalf("sealgate exited: %v\n%s", err, logs.String())
		case <-ctx.Done():
			t.Fatalf("no sandbox applied:\n%s", logs.String())
		case <-time.After(20 * time.Millisecond):
		}
	}

	recoverThrough := func(thp, secret string) {
		t.Helper()
		jwe, err := unlock.Encrypt(ctx, "tang", []byte(`{"url":"`+url+`","thp":"`+thp+`"}`), []byte(secret), nil)
		if err != nil {
			t.Fatalf("encrypting to %s: %v\n%s", thp, err, logs.String())
		}
		buf, err := unlock.Decrypt(ctx, jwe, &unlock.Options{Startup: unlock.NewStartup("sandbox-host")})
		if err != nil {
			t.Fatalf("recovering through the confined gate: %v\n%s", err, logs.String())
		}
		defer buf.Destroy()
		if string(buf.Bytes()) != secret {
			t.Fatalf("recovered %q, want %q", buf.Bytes(), secret)
		}
	}
	auditLines := func() int {
		t.Helper()
		data, err := os.ReadFile(audit)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(data), `"operator":"policy:all"`) {
			t.Fatalf("the audit log lacks the policy's approval:\n%s", data)
		}
		return bytes.Count(data, []byte("\n"))
	}
	recoverThrough(thp, "before rotation")
	first := auditLines()

	out.Reset()
	if err := run(ctx, []string{"rotate", "--dir", dir}, nil, &out, io.Discard); err != nil {
		t.Fatal(err)
	}
	rotated := strings.TrimSpace(out.String())
	if rotated == thp {
		t.Fatal("rotate kept the thumbprint")
	}
	if _, err := (&tang.Client{}).Advertisement(ctx, url, rotated); err != nil {
		t.Fatalf("the new key is not advertised: %v\n%s", err, logs.String())
	}
	recoverThrough(rotated, "after rotation")
	if n := auditLines(); n <= first {
		t.Errorf("the audit log did not grow after the rotation: %d lines, was %d", n, first)
	}

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("exit: %v\n%s", err, logs.String())
		}
	case <-ctx.Done():
		t.Fatalf("no exit after SIGTERM:\n%s", logs.String())
	}
}

// gateChildEnv names the key directory a re-executed test binary
// confines itself to (never the test process: a sandbox cannot be left).
const gateChildEnv = "SEALGATE_SANDBOX_TEST_DIR"

// TestServePolicyConfines applies serve's policy in a child process: the
// key directory stays readable, new files in it too, the audit log
// writable; the TLS key beside it and /etc/shadow are refused.
func TestServePolicyConfines(t *testing.T) {
	if dir := os.Getenv(gateChildEnv); dir != "" {
		servePolicyChild(t, dir)
		return
	}
	testenv.NeedLandlock(t)
	tmp := t.TempDir()
	for _, f := range []string{"db/a.jwk", "tls.key", "audit.jsonl"} {
		os.MkdirAll(filepath.Join(tmp, filepath.Dir(f)), 0o755)
		if err := os.WriteFile(filepath.Join(tmp, f), []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	testenv.RunConfinedChild(t, []string{gateChildEnv + "=" + tmp}, "confined child: checks done")
}

func servePolicyChild(t *testing.T, tmp string) {
	sc := &serveConfig{audit: filepath.Join(tmp, "audit.jsonl"), tlsKey: filepath.Join(tmp, "tls.key"), landlock: "required"}
	db := filepath.Join(tmp, "db")
	if _, err := sandbox.Apply(servePolicy(db, sc), sandbox.Required); err != nil {
		t.Fatal(err)
	}
	if _, err := os.ReadFile(filepath.Join(db, "a.jwk")); err != nil {
		t.Errorf("reading a key: %v", err)
	}
	if _, err := os.ReadDir(db); err != nil {
		t.Errorf("listing the key directory: %v", err)
	}
	f, err := os.OpenFile(sc.audit, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Errorf("opening the audit log: %v", err)
	} else {
		f.Close()
	}
	for _, p := range []string{sc.tlsKey, "/etc/shadow"} {
		if _, err := os.ReadFile(p); !errors.Is(err, fs.ErrPermission) {
			t.Errorf("reading %s: %v, want a permission error", p, err)
		}
	}
	if err := os.WriteFile(filepath.Join(db, "b.jwk"), nil, 0o600); !errors.Is(err, fs.ErrPermission) {
		t.Errorf("writing in the key directory: %v, want a permission error", err)
	}
	if !t.Failed() {
		// testscript.Main would now remove its temporary directory, which
		// the sandbox forbids: leave before it tries.
		fmt.Println("confined child: checks done")
		os.Exit(0)
	}
}
