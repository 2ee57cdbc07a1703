package handover

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

// FuzzParseNames: the successor's socket list is either refused or a
// list of distinct, non-empty names, at most maxNames, that encodes
// back to the same list.
func FuzzParseNames(f *testing.F) {
	f.Add(`["127.0.0.1:8443","unix:/run/sealproxy/admin.sock","systemd:web"]`)
	f.Add(`[]`)
	f.Add(`["a","a"]`)
	f.Add(`[""]`)
	f.Add(`{"a":1}`)
	f.Fuzz(func(t *testing.T, v string) {
		names, err := parseNames(v)
		if err != nil {
			if !strings.HasPrefix(err.Error(), Env+": ") {
				t.Fatalf("error %q does not name %s", err, Env)
			}
			return
		}
		if len(names) > maxNames {
			t.Fatalf("%d names", len(names))
		}
		seen := map[string]bool{}
		for _, n := range names {
			if n == "" || seen[n] {
				t.Fatalf("empty or repeated name %q in %q", n, names)
			}
			seen[n] = true
		}
		b, err := json.Marshal(names)
		if err != nil {
			t.Fatal(err)
		}
		again, err := parseNames(string(b))
		if err != nil || len(again) != len(names) {
			t.Fatalf("round trip of %q: %q, %v", names, again, err)
		}
	})
}

func TestParseNamesRefuses(t *testing.T) {
	many, _ := json.Marshal(make([]string, maxNames+1))
	for _, v := range []string{`["a","a"]`, `[""]`, `not json`, `{"a":"b"}`, string(many)} {
		if _, err := parseNames(v); err == nil {
			t.Errorf("parseNames(%.40q) accepted", v)
		}
	}
}

// FuzzReadStatus: ready only after a line that is exactly "ready";
// progress lines hold no newline; the reason never exceeds maxStatus.
func FuzzReadStatus(f *testing.F) {
	f.Add([]byte(msgReady))
	f.Add([]byte("status: waiting for approval (code ABCD-EFGH)\nready\n"))
	f.Add([]byte("ready"))
	f.Add([]byte("ready\nerror: x"))
	f.Add([]byte("status: a\nerror: bad configuration\nsecond line"))
	f.Fuzz(func(t *testing.T, b []byte) {
		var lines []string
		ready, reason := readStatus(bytes.NewReader(b), func(l string) { lines = append(lines, l) })
		if ready && (reason != "" || !bytes.Contains(b, []byte("\n"+msgReady)) && !bytes.HasPrefix(b, []byte(msgReady))) {
			t.Fatalf("readStatus(%q) ready with %q", b, reason)
		}
		if len(reason) > maxStatus {
			t.Fatalf("reason of %d bytes", len(reason))
		}
		for _, l := range lines {
			if strings.Contains(l, "\n") {
				t.Fatalf("progress line %q", l)
			}
		}
	})
}

func TestReadStatus(t *testing.T) {
	var lines []string
	ready, reason := readStatus(strings.NewReader("status: one\nstatus: two\nerror: bad\nconfiguration\n"), func(l string) { lines = append(lines, l) })
	if ready || reason != "bad\nconfiguration" || strings.Join(lines, "|") != "one|two" {
		t.Fatalf("ready %v, reason %q, lines %q", ready, reason, lines)
	}
	if ready, _ := readStatus(strings.NewReader("status: x\nready\n"), nil); !ready {
		t.Fatal("not ready")
	}
}

func TestFailedError(t *testing.T) {
	err := error(&FailedError{Pid: 42, Reason: "bad configuration"})
	if !errors.Is(err, ErrFailed) || err.Error() != "successor (pid 42) failed: bad configuration" {
		t.Fatalf("%v", err)
	}
}
