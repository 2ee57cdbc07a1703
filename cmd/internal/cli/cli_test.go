package cli

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"slices"
	"testing"
)

func TestParseInterleaved(t *testing.T) {
	tests := []struct {
		args    []string
		wantPos []string
		wantY   bool
		wantI   string
	}{
		{[]string{"tang", "{}", "-y"}, []string{"tang", "{}"}, true, ""},
		{[]string{"-y", "tang", "{}"}, []string{"tang", "{}"}, true, ""},
		{[]string{"tang", "-i", "in", "{}"}, []string{"tang", "{}"}, false, "in"},
		{[]string{"tang", "--", "-y"}, []string{"tang", "-y"}, false, ""},
		{nil, nil, false, ""},
	}
	for _, tt := range tests {
		fs := flag.NewFlagSet("t", flag.ContinueOnError)
		y := fs.Bool("y", false, "")
		in := fs.String("i", "", "")
		pos, err := Parse(fs, tt.args)
		if err != nil {
			t.Fatalf("Parse(%q): %v", tt.args, err)
		}
		if !slices.Equal(pos, tt.wantPos) || *y != tt.wantY || *in != tt.wantI {
			t.Errorf("Parse(%q) = %q y=%v i=%q, want %q y=%v i=%q", tt.args, pos, *y, *in, tt.wantPos, tt.wantY, tt.wantI)
		}
	}
}

func TestParseUnknownFlagIsUsageError(t *testing.T) {
	fs := flag.NewFlagSet("seal encrypt", flag.ContinueOnError)
	_, err := Parse(fs, []string{"tang", "--nope"})
	var ce *Error
	if !errors.As(err, &ce) || ce.Code != ExitUsage {
		t.Fatalf("Parse with an unknown flag: %v, want a usage error", err)
	}
}

func TestReport(t *testing.T) {
	var buf bytes.Buffer
	err := WithHint(fmt.Errorf("wrapped: %w", errors.New("cause")), ExitTrust, "first\nsecond")
	if code := Report("seal", err, &buf); code != ExitTrust {
		t.Errorf("exit code %d, want %d", code, ExitTrust)
	}
	want := "seal: error: wrapped: cause\nseal: hint: first\nseal: hint: second\n"
	if buf.String() != want {
		t.Errorf("Report printed %q, want %q", buf.String(), want)
	}
	buf.Reset()
	if code := Report("seal", errors.New("plain"), &buf); code != ExitFailure || buf.String() != "seal: error: plain\n" {
		t.Errorf("plain error: code %d, output %q", code, buf.String())
	}
	if code := Report("seal", nil, &buf); code != ExitOK {
		t.Errorf("nil error: code %d", code)
	}
}
