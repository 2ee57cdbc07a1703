package eventlog

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"

	"github.com/sealproxy/sealproxy/cmd/internal/cli"
)

// event is one call to a Sink.
type event struct {
	severity string
	id       uint32
	msg      string
}

// recorder is a Sink that keeps what it is given.
type recorder struct {
	mu     sync.Mutex
	events []event
}

func (r *recorder) add(severity string, id uint32, msg string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, event{severity, id, msg})
	return nil
}

func (r *recorder) Error(id uint32, msg string) error   { return r.add("error", id, msg) }
func (r *recorder) Warning(id uint32, msg string) error { return r.add("warning", id, msg) }
func (r *recorder) Info(id uint32, msg string) error    { return r.add("info", id, msg) }

func text(opts *slog.HandlerOptions) func(io.Writer) slog.Handler {
	return func(w io.Writer) slog.Handler {
		return slog.NewTextHandler(w, &slog.HandlerOptions{Level: opts.Level, ReplaceAttr: noTime})
	}
}

func noTime(groups []string, a slog.Attr) slog.Attr {
	if a.Key == slog.TimeKey && len(groups) == 0 {
		return slog.Attr{}
	}
	return a
}

func TestHandlerLevels(t *testing.T) {
	var rec recorder
	log := slog.New(NewHandler(&rec, text(&slog.HandlerOptions{Level: slog.LevelDebug})))
	log.Error("unlocking key failed", "key", "web")
	log.Warn("waiting for approval", "key", "web")
	log.Info("ready", "listeners", 1)
	// The severity is the record's, whatever its text says.
	log.Info("connection closed", "err", "level=ERROR in a value: error: x")
	log.Debug("detail")
	log.Log(t.Context(), slog.LevelError+4, "above error")
	want := []event{
		{"error", 1, `level=ERROR msg="unlocking key failed" key=web`},
		{"warning", 2, `level=WARN msg="waiting for approval" key=web`},
		{"info", 3, `level=INFO msg=ready listeners=1`},
		{"info", 3, `level=INFO msg="connection closed" err="level=ERROR in a value: error: x"`},
		{"info", 3, `level=DEBUG msg=detail`},
		{"error", 1, `level=ERROR+4 msg="above error"`},
	}
	if fmt.Sprint(rec.events) != fmt.Sprint(want) {
		t.Errorf("events:\n%v\nwant:\n%v", rec.events, want)
	}
}

func TestHandlerLevelFilter(t *testing.T) {
	var rec recorder
	log := slog.New(NewHandler(&rec, text(&slog.HandlerOptions{Level: slog.LevelWarn})))
	log.Info("hidden")
	log.Warn("shown")
	if len(rec.events) != 1 || rec.events[0].msg != "level=WARN msg=shown" {
		t.Errorf("events = %v, want only the warning", rec.events)
	}
}

func TestHandlerAttrsAndGroups(t *testing.T) {
	var rec recorder
	log := slog.New(NewHandler(&rec, text(&slog.HandlerOptions{})))
	log.With("listener", "web").WithGroup("tls").Warn("handshake", "sni", "a\nb")
	log.Info("plain")
	want := []event{
		{"warning", 2, `level=WARN msg=handshake listener=web tls.sni="a\nb"`},
		{"info", 3, `level=INFO msg=plain`},
	}
	if fmt.Sprint(rec.events) != fmt.Sprint(want) {
		t.Errorf("events:\n%v\nwant:\n%v", rec.events, want)
	}
}

func TestHandlerJSON(t *testing.T) {
	var rec recorder
	log := slog.New(NewHandler(&rec, func(w io.Writer) slog.Handler {
		return slog.NewJSONHandler(w, &slog.HandlerOptions{ReplaceAttr: noTime})
	}))
	log.Error("failed", "key", "web")
	want := []event{{"error", 1, `{"level":"ERROR","msg":"failed","key":"web"}`}}
	if fmt.Sprint(rec.events) != fmt.Sprint(want) {
		t.Errorf("events = %v, want %v", rec.events, want)
	}
}

// Records logged at once from many goroutines, through derived handlers
// that share one buffer, each arrive whole (run with -race).
func TestHandlerConcurrent(t *testing.T) {
	var rec recorder
	log := slog.New(NewHandler(&rec, text(&slog.HandlerOptions{})))
	var wg sync.WaitGroup
	for i := range 8 {
		l := log.With("worker", i)
		wg.Go(func() {
			for j := range 50 {
				l.Info("tick", "n", j)
			}
		})
	}
	wg.Wait()
	if len(rec.events) != 400 {
		t.Fatalf("%d events, want 400", len(rec.events))
	}
	for _, e := range rec.events {
		if !strings.HasPrefix(e.msg, "level=INFO msg=tick worker=") || strings.Count(e.msg, "msg=") != 1 {
			t.Fatalf("event %q is not one whole record", e.msg)
		}
	}
}

func TestReport(t *testing.T) {
	var rec recorder
	err := cli.WithHint(errors.New("1 key(s) still locked"), 5, "check the Tang servers\nor the gate")
	if code := Report(&rec, "sealproxy", err); code != 5 {
		t.Errorf("code %d, want 5", code)
	}
	want := []event{
		{"error", 1, "sealproxy: error: 1 key(s) still locked"},
		{"warning", 2, "sealproxy: hint: check the Tang servers"},
		{"warning", 2, "sealproxy: hint: or the gate"},
	}
	if fmt.Sprint(rec.events) != fmt.Sprint(want) {
		t.Errorf("events:\n%v\nwant:\n%v", rec.events, want)
	}
	rec.events = nil
	if code := Report(&rec, "sealproxy", nil); code != 0 || len(rec.events) != 0 {
		t.Errorf("nil error: code %d, events %v; want 0 and none", code, rec.events)
	}
}
