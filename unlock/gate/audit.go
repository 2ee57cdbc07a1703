package gate

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"
)

// Event is one line of the audit log.
//
// Events: "request" (a recovery arrived and waits; for a session, each of
// its keys), "refuse" (a recovery refused before it could wait: too many
// pending, a session conflict), "approve" and "deny" (an operator's
// decision, or an attempt at one that failed, with the reason in outcome),
// "release" (an approved recovery answered), "abandon" (a recovery whose
// client went away before it was answered), "expire" (a pending request
// or an unused approval lapsed), "code" (a committed session's codes
// agreed), "lock" (an operator's approvals locked after wrong codes),
// "unauthorized" (an operator API call without a valid token), "forbidden"
// (a valid credential whose role may not make this call), "cross-site" (a
// call that changes state refused because it was not JSON from the gate's
// own origin; the operator is whose credential the browser sent).
type Event struct {
	Time  time.Time `json:"time"`
	Event string    `json:"event"`
	// ID is the request's id. No event carries a request's code: whoever
	// reads the log must still read the code on the host.
	ID       string   `json:"id,omitempty"`
	Session  bool     `json:"session,omitempty"`
	Host     string   `json:"host,omitempty"`
	Source   string   `json:"source,omitempty"`
	Kids     []string `json:"kids,omitempty"`
	Keys     int      `json:"keys,omitempty"`
	Operator string   `json:"operator,omitempty"`
	Outcome  string   `json:"outcome,omitempty"`
}

// Auditor records events. A gate refuses a decision it could not record.
type Auditor interface {
	Record(Event) error
}

// FileAudit appends events as JSON lines to a file and syncs each one to
// disk before Record returns.
type FileAudit struct {
	mu   sync.Mutex
	f    *os.File
	path string
}

// OpenAudit opens (or creates, 0600) an append-only audit log.
func OpenAudit(path string) (*FileAudit, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("opening the audit log: %w", err)
	}
	return &FileAudit{f: f, path: path}, nil
}

// Record appends e and syncs it.
func (a *FileAudit) Record(e Event) error {
	line, err := json.Marshal(e)
	if err != nil {
		return err
	}
	line = append(line, '\n')
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.f == nil {
		return errors.New("audit log " + a.path + " is closed")
	}
	if _, err := a.f.Write(line); err != nil {
		return fmt.Errorf("writing audit log %s: %w", a.path, err)
	}
	if err := a.f.Sync(); err != nil {
		return fmt.Errorf("syncing audit log %s: %w", a.path, err)
	}
	return nil
}

// Close closes the file; later records fail.
func (a *FileAudit) Close() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.f == nil {
		return nil
	}
	err := a.f.Close()
	a.f = nil
	return err
}
