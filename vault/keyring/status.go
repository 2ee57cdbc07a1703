package keyring

import (
	"fmt"
	"slices"
	"strings"
	"sync"

	"github.com/sealproxy/sealproxy/unlock/tang"
)

// status keeps the one-line state of an unlock for the service manager
// (systemd STATUS=, the Windows SCM's log).
type status struct {
	report func(string) // nil: nobody listens

	mu    sync.Mutex
	total int
	open  int
	keys  map[string]string // key → what it waits for
}

func newStatus(report func(string)) *status {
	return &status{report: report, keys: map[string]string{}}
}

func (st *status) begin(n int) {
	st.mu.Lock()
	st.total, st.open = n, 0
	clear(st.keys)
	st.mu.Unlock()
	st.publish()
}

func (st *status) set(key, state string) {
	st.mu.Lock()
	st.keys[key] = state
	st.mu.Unlock()
	st.publish()
}

// pending reports a recovery held at a gate for an operator's approval,
// for a key not open yet.
func (st *status) pending(key, url, code string) {
	st.mu.Lock()
	_, unlocking := st.keys[key]
	if unlocking {
		st.keys[key] = fmt.Sprintf("waiting for approval (code %s) at %s", tang.Printable(code), tang.Printable(url))
	}
	st.mu.Unlock()
	if unlocking {
		st.publish()
	}
}

func (st *status) done(key string) {
	st.mu.Lock()
	delete(st.keys, key)
	st.open++
	st.mu.Unlock()
	st.publish()
}

// line is e.g. "unlocking keys: 1 of 2 open; web: http://tang:7500
// unreachable (attempt 3), retrying".
func (st *status) line() string {
	st.mu.Lock()
	defer st.mu.Unlock()
	var b strings.Builder
	fmt.Fprintf(&b, "unlocking keys: %d of %d open", st.open, st.total)
	names := make([]string, 0, len(st.keys))
	for k := range st.keys {
		names = append(names, k)
	}
	slices.Sort(names)
	for _, k := range names {
		fmt.Fprintf(&b, "; %s: %s", k, st.keys[k])
	}
	return b.String()
}

func (st *status) publish() {
	if st != nil && st.report != nil {
		st.report(st.line())
	}
}

// Printable makes text that came from a gate, a Tang server or a file
// safe for a terminal, a log line or an sd_notify STATUS= line: control
// characters and invalid UTF-8 are escaped (it is tang.Printable).
func Printable(s string) string { return tang.Printable(s) }
