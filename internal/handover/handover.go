// Package handover passes a running daemon's listening sockets to a
// successor process (the binary at the same path, started again), which
// tells its predecessor when it serves: a zero-downtime upgrade.
//
// It is the design of cloudflare/tableflip (inherited descriptors named
// in the environment, a readiness pipe, the old process draining once the
// new one is ready), written for sealproxy: tableflip allows one
// Upgrader per process (sealproxy's tests run the daemon many times in
// one process), starts os.Args[0] rather than the executable's path now,
// keeps a duplicate of every socket ever opened (a listener a reload
// removed would stay bound, queueing connections nobody accepts), and
// reports a successor's failure only as its exit status.
package handover

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
)

// Env names the environment variable that marks a successor: the JSON
// list of the names of the sockets it inherits, as descriptors 4, 5, ...
// (descriptor 3 is the status socket to its predecessor).
const Env = "SEALPROXY_HANDOVER"

const (
	// maxStatus bounds what a successor may say (its error).
	maxStatus = 4096
	// maxNames bounds the sockets a successor takes.
	maxNames = 1024
)

var (
	// ErrInProgress refuses an upgrade while another one waits for its
	// successor.
	ErrInProgress = errors.New("an upgrade is already in progress: wait for its successor to be ready or to fail")
	// ErrUnsupported is the answer where sockets cannot be passed on.
	ErrUnsupported = errors.New("upgrades are not supported on this platform")
	// ErrFailed reports a successor that did not become ready; the
	// predecessor keeps serving.
	ErrFailed = errors.New("the successor failed; this process keeps serving")
)

// FailedError is a successor's failure: its own reason when it gave one.
type FailedError struct {
	Pid    int
	Reason string // as the successor said it, or how it exited: may hold any bytes
}

func (e *FailedError) Error() string {
	return fmt.Sprintf("successor (pid %d) failed: %s", e.Pid, e.Reason)
}

func (e *FailedError) Is(target error) bool { return target == ErrFailed }

// parseNames decodes the value of Env.
func parseNames(v string) ([]string, error) {
	var names []string
	if err := json.Unmarshal([]byte(v), &names); err != nil {
		return nil, fmt.Errorf("%s: %w", Env, err)
	}
	if len(names) > maxNames {
		return nil, fmt.Errorf("%s: %d sockets, at most %d", Env, len(names), maxNames)
	}
	seen := make(map[string]bool, len(names))
	for _, n := range names {
		if n == "" || seen[n] {
			return nil, fmt.Errorf("%s: empty or repeated socket name %q", Env, n)
		}
		seen[n] = true
	}
	return names, nil
}

// Status messages, successor to predecessor, on the status socket: any
// number of progress lines, then ready, or an error that runs to the end.
const (
	msgStatus = "status: "
	msgReady  = "ready\n"
	msgError  = "error: "
)

// readStatus reads what a successor says until it is ready or closes
// its end (at most maxStatus bytes a line, and for the error): each
// progress line goes to progress, then ready, or the successor's error
// (empty when it said none).
func readStatus(r io.Reader, progress func(string)) (ready bool, reason string) {
	br := bufio.NewReaderSize(r, maxStatus)
	for {
		line, err := br.ReadSlice('\n')
		switch {
		case err == nil && string(line) == msgReady:
			return true, ""
		case err == nil && bytes.HasPrefix(line, []byte(msgStatus)):
			if progress != nil {
				progress(string(bytes.TrimSpace(line[len(msgStatus):])))
			}
			continue
		case err == bufio.ErrBufferFull:
			return false, strings.TrimSpace(string(line)) // too long: cut
		}
		rest := line
		if err == nil {
			more, _ := io.ReadAll(io.LimitReader(br, int64(maxStatus-len(line))))
			rest = append(append([]byte(nil), line...), more...)
		}
		return false, strings.TrimSpace(strings.TrimPrefix(string(rest), msgError))
	}
}
