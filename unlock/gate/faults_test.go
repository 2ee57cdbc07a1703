//go:build linux

package gate_test

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sealproxy/sealproxy/testenv"
	"github.com/sealproxy/sealproxy/unlock/gate"
	"github.com/sealproxy/sealproxy/unlock/tang"
)

// Fault injection for the gate's audit log: a disk that is full. Writes to
// /dev/full fail with ENOSPC, as on a full file system, and need no
// privileges. OpenAudit accepts it (it opens with O_APPEND|O_CREATE, which
// a character device allows).

// TestFaultAuditDiskFullAtStart: the audit log is a symlink to /dev/full
// from the start. A recovery cannot even be recorded as a request, so the
// gate refuses to hold it (HTTP 500, which clients treat as a server
// fault and retry): nothing waits for a decision, nothing is released,
// and the gate's log says the audit log failed and why.
func TestFaultAuditDiskFullAtStart(t *testing.T) {
	link := filepath.Join(t.TempDir(), "audit.jsonl")
	if err := os.Symlink("/dev/full", link); err != nil {
		t.Fatal(err)
	}
	full, err := gate.OpenAudit(link)
	if err != nil {
		t.Fatalf("OpenAudit on a symlink to /dev/full: %v", err)
	}
	t.Cleanup(func() { full.Close() })
	f := newFixture(t, func(c *gate.Config) { c.Audit = full })
	secret := []byte("never without a record")
	jwe := seal(t, "tang", f.Config(), secret)

	start := time.Now()
	done, _ := decryptAsync(testCtx(t), jwe, nil)
	r := wait(t, done)
	took := time.Since(start)
	if r.err == nil || r.plain != nil {
		t.Fatalf("the key was released with a full audit log: %q", r.plain)
	}
	// A 5xx is a server fault: sealproxy retries it until [unlock] timeout.
	var te *tang.Error
	if !errors.Is(r.err, tang.ErrUnreachable) || !errors.As(r.err, &te) || te.Status != http.StatusInternalServerError {
		t.Fatalf("recovery with a full audit log: %v, want HTTP 500 (tang.ErrUnreachable)", r.err)
	}
	pending, err := f.Operator(f.Token).Pending(testCtx(t))
	if err != nil {
		t.Fatalf("operator API after the audit failure: %v", err)
	}
	if len(pending) != 0 {
		t.Fatalf("a request is pending although it could not be recorded: %+v", pending)
	}
	logs := f.Logs.String()
	for _, want := range []string{"audit log failed", "writing audit log " + link, "no space left on device"} {
		if !strings.Contains(logs, want) {
			t.Errorf("gate log lacks %q:\n%s", want, logs)
		}
	}
	t.Logf("FAULT %s: recovery refused with HTTP 500 in %v, 0 requests pending, 0 keys released, gate log names %s and ENOSPC",
		"audit disk full at start", took.Round(time.Millisecond), link)
}

// TestFaultAuditDiskFills: a recovery waits for approval; then the disk
// of the audit log fills up (the log's file descriptor is made to point
// at /dev/full, so every later write fails with ENOSPC). The operator's
// approval is refused with an error naming the audit log and the cause,
// the request stays pending, the client keeps waiting and gets nothing;
// the gate keeps serving. Once the disk has room again (the descriptor
// points back at the log), the same request is approved and released,
// and the log holds exactly the events that happened.
func TestFaultAuditDiskFills(t *testing.T) {
	f := newFixture(t, func(c *gate.Config) { c.Hold = 100 * time.Millisecond })
	secret := []byte("approved only on the record")
	jwe := seal(t, "tang", f.Config(), secret)
	done, _ := decryptAsync(testCtx(t), jwe, nil)
	req := f.next(t)
	f.wantEvents(t, "request:pending")

	fd := openFD(t, f.Audit)
	saved, err := unix.Dup(fd) // the log's open file, for when there is room again
	if err != nil {
		t.Fatal(err)
	}
	devFull, err := os.OpenFile("/dev/full", os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer devFull.Close()
	restored := false
	restore := func() {
		if !restored {
			restored = true
			if err := unix.Dup3(saved, fd, unix.O_CLOEXEC); err != nil {
				t.Fatalf("pointing the audit descriptor back at the log: %v", err)
			}
			unix.Close(saved)
		}
	}
	t.Cleanup(restore) // before the fixture closes the log
	if err := unix.Dup3(int(devFull.Fd()), fd, unix.O_CLOEXEC); err != nil {
		t.Fatalf("pointing the audit descriptor at /dev/full: %v", err)
	}
	before, _ := os.ReadFile(f.Audit)

	op := f.Operator(f.Token)
	_, err = op.Approve(testCtx(t), req.Code)
	var apiErr *gate.APIError
	if !errors.As(err, &apiErr) || apiErr.Status != http.StatusInternalServerError {
		t.Fatalf("approval with a full disk: %v, want HTTP 500", err)
	}
	for _, want := range []string{"audit log failed: not approved", "writing audit log " + f.Audit, "no space left on device"} {
		if !strings.Contains(apiErr.Message, want) {
			t.Errorf("the operator is told %q, which lacks %q", apiErr.Message, want)
		}
	}
	// Not released: the request is still pending for the operator, and
	// the client, polling, is still told to wait.
	polls := strings.Count(f.Logs.String(), `"status":202`)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if !testenv.Poll(ctx, func() bool { return strings.Count(f.Logs.String(), `"status":202`) >= polls+2 }) {
		t.Fatalf("the client stopped polling:\n%s", f.Logs.String())
	}
	select {
	case r := <-done:
		t.Fatalf("the client got an answer after a refused approval: %q, %v", r.plain, r.err)
	default:
	}
	list, err := op.Pending(testCtx(t))
	if err != nil {
		t.Fatalf("operator API with a full disk: %v", err)
	}
	if len(list) != 1 || list[0].ID != req.ID || list[0].State != gate.StatePending {
		t.Fatalf("pending after the refused approval: %+v, want %s pending", list, req.Code)
	}
	if after, _ := os.ReadFile(f.Audit); !bytes.Equal(after, before) {
		t.Fatalf("the audit log changed while the disk was full:\n%s", after)
	}

	restore()
	recovered := time.Now()
	if _, err := op.Approve(testCtx(t), req.Code); err != nil {
		t.Fatalf("approval once the disk has room: %v", err)
	}
	r := wait(t, done)
	if r.err != nil || !bytes.Equal(r.plain, secret) {
		t.Fatalf("recovery after the approval: %q, %v", r.plain, r.err)
	}
	took := time.Since(recovered)
	events := f.wantEvents(t, "request:pending", "code:agreed", "approve:approved", "release:answered")
	if len(events) != 4 {
		t.Errorf("audit log has %d events, want exactly request, code, approve and release: %+v", len(events), events)
	}
	t.Logf("FAULT %s: approval refused with HTTP 500 naming %s and ENOSPC, request still pending, client still waiting after %d more polls, 0 audit bytes written; once there was room: approved and key released in %v, audit log %d events",
		"audit disk fills while pending", filepath.Base(f.Audit), 2, took.Round(time.Millisecond), len(events))
}

// openFD finds this process's descriptor open on path.
func openFD(t *testing.T, path string) int {
	t.Helper()
	want, err := filepath.EvalSymlinks(path)
	if err != nil {
		t.Fatal(err)
	}
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("no /proc/self/fd: %v", err)
	}
	for _, e := range entries {
		target, err := os.Readlink("/proc/self/fd/" + e.Name())
		if err != nil || target != want {
			continue
		}
		fd, err := strconv.Atoi(e.Name())
		if err != nil {
			t.Fatal(err)
		}
		return fd
	}
	t.Fatalf("no descriptor open on %s", path)
	return -1
}
