package testenv

import (
	"bytes"
	"context"
	"errors"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// ClevisTimeout bounds one clevis run. A clevis call takes ~70 ms; the
// bound only keeps a hung curl from hanging the test binary.
const ClevisTimeout = 30 * time.Second

// ToolResult is what one run of an external program produced. Check Code
// before trusting Stdout: `clevis decrypt` can print the plaintext and
// still exit 1.
type ToolResult struct {
	Args   []string
	Stdout []byte
	Stderr string
	Code   int // the exit status; -1 if it was killed or never ran
}

// RunTool runs the program at path with args, stdin as its standard input
// and no terminal, under ClevisTimeout. It fails the test only if the
// program cannot be started or times out; a non-zero exit is reported in
// Code for the caller to judge.
func RunTool(t testing.TB, path string, stdin []byte, args ...string) ToolResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), ClevisTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, path, args...)
	cmd.Stdin = bytes.NewReader(stdin)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	// clevis pipes through jose and curl; do not let a straggler holding
	// the pipes keep Wait from returning after a kill.
	cmd.WaitDelay = 2 * time.Second
	err := cmd.Run()
	r := ToolResult{Args: append([]string{path}, args...), Stdout: stdout.Bytes(), Stderr: stderr.String(), Code: 0}
	var exit *exec.ExitError
	switch {
	case err == nil:
	case ctx.Err() != nil:
		t.Fatalf("%s timed out after %v; stderr:\n%s", strings.Join(r.Args, " "), ClevisTimeout, r.Stderr)
	case errors.As(err, &exit):
		r.Code = exit.ExitCode()
	default:
		t.Fatalf("running %s: %v", strings.Join(r.Args, " "), err)
	}
	return r
}

// Clevis runs `clevis ARGS...` with stdin (see RunTool). It skips, or
// fails under SEALPROXY_REQUIRE_INTEROP=1, when clevis is not installed.
func Clevis(t testing.TB, stdin []byte, args ...string) ToolResult {
	t.Helper()
	path := LookTool(t, "clevis", "clevis")
	// The pins run jose and curl; a missing one shows up as an obscure
	// failure inside clevis, so name it here.
	LookTool(t, "jose", "jose")
	LookTool(t, "curl", "curl")
	return RunTool(t, path, stdin, args...)
}

// ClevisEncrypt seals plaintext with `clevis encrypt PIN CONFIG` and fails
// the test unless clevis exits 0 with a JWE on stdout.
func ClevisEncrypt(t testing.TB, pin, config string, plaintext []byte) []byte {
	t.Helper()
	r := Clevis(t, plaintext, "encrypt", pin, config)
	if r.Code != 0 {
		t.Fatalf("clevis encrypt %s %s: exit status %d; stderr:\n%s", pin, config, r.Code, r.Stderr)
	}
	if len(r.Stdout) == 0 {
		t.Fatalf("clevis encrypt %s %s: exit status 0 but no output; stderr:\n%s", pin, config, r.Stderr)
	}
	return r.Stdout
}

// ClevisDecrypt opens jwe with `clevis decrypt` and fails the test unless
// clevis exits 0; only then is its output returned.
func ClevisDecrypt(t testing.TB, jwe []byte) []byte {
	t.Helper()
	r := Clevis(t, jwe, "decrypt")
	if r.Code != 0 {
		t.Fatalf("clevis decrypt: exit status %d (stdout %d bytes, not trusted); stderr:\n%s", r.Code, len(r.Stdout), r.Stderr)
	}
	return r.Stdout
}
