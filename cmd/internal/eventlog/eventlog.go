// Package eventlog writes a daemon's log/slog records to the Windows Event
// Log at each record's own level, formatted as the daemon's text log.
//
// It is portable: the Event Log is a Sink, which golang.org/x/sys's
// *eventlog.Log satisfies on Windows and a test's recorder elsewhere.
package eventlog

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"strings"
	"sync"

	"github.com/sealproxy/sealproxy/cmd/internal/cli"
)

// Event IDs by severity, as the service has always written them.
const (
	idError   = 1
	idWarning = 2
	idInfo    = 3
)

// Sink is an Event Log source: one event per call, at that severity.
type Sink interface {
	Error(eid uint32, msg string) error
	Warning(eid uint32, msg string) error
	Info(eid uint32, msg string) error
}

// Handler is a slog.Handler that formats each record with the handler
// format makes (the daemon's text or JSON handler) and writes it to the
// Event Log as one event: records at slog.LevelError and above are
// errors, at slog.LevelWarn and above warnings, the rest information.
type Handler struct {
	sink Sink
	out  *line        // where format's handler writes; shared by WithAttrs and WithGroup
	h    slog.Handler // format's handler, with this Handler's attributes and groups
}

// line is one record's formatted text, shared by a Handler and those it
// derives, under one lock because they share the buffer.
type line struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *line) Write(p []byte) (int, error) { return l.buf.Write(p) }

// NewHandler returns a Handler writing to sink; format makes the handler
// that turns a record into text (slog.NewTextHandler, with the daemon's
// options).
func NewHandler(sink Sink, format func(io.Writer) slog.Handler) *Handler {
	out := &line{}
	return &Handler{sink: sink, out: out, h: format(out)}
}

func (h *Handler) Enabled(ctx context.Context, level slog.Level) bool {
	return h.h.Enabled(ctx, level)
}

func (h *Handler) Handle(ctx context.Context, r slog.Record) error {
	h.out.mu.Lock()
	defer h.out.mu.Unlock()
	h.out.buf.Reset()
	if err := h.h.Handle(ctx, r); err != nil {
		return err
	}
	text := strings.TrimSpace(h.out.buf.String())
	switch {
	case r.Level >= slog.LevelError:
		return h.sink.Error(idError, text)
	case r.Level >= slog.LevelWarn:
		return h.sink.Warning(idWarning, text)
	}
	return h.sink.Info(idInfo, text)
}

func (h *Handler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return &Handler{sink: h.sink, out: h.out, h: h.h.WithAttrs(attrs)}
}

func (h *Handler) WithGroup(name string) slog.Handler {
	return &Handler{sink: h.sink, out: h.out, h: h.h.WithGroup(name)}
}

// Report writes a command's final error to the Event Log as cli.Report
// prints it: the error line as an error, each hint line as a warning. It
// returns the exit code.
func Report(sink Sink, name string, err error) int {
	errLine, hints, code := cli.Explain(name, err)
	if errLine != "" {
		_ = sink.Error(idError, errLine)
	}
	for _, h := range hints {
		_ = sink.Warning(idWarning, h)
	}
	return code
}
