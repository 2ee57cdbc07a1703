package testenv

import (
	"bytes"
	"context"
	"strings"
	"sync"
	"testing"
	"time"
)

// SyncBuffer is a bytes.Buffer that one goroutine (a server's log
// handler, a command's stderr) writes while the test reads it. The zero
// value is ready to use.
type SyncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *SyncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// String returns what was written so far.
func (b *SyncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// Len returns how many bytes were written so far.
func (b *SyncBuffer) Len() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Len()
}

// Reset empties the buffer.
func (b *SyncBuffer) Reset() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf.Reset()
}

// WaitFor waits up to timeout until the buffer holds want (a log line a
// process prints once it reached a state), and fails the test with what
// it holds otherwise.
func (b *SyncBuffer) WaitFor(t testing.TB, timeout time.Duration, want string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if !Poll(ctx, func() bool { return strings.Contains(b.String(), want) }) {
		t.Fatalf("no %q after %v in:\n%s", want, timeout, b.String())
	}
}
