package tang_test

import (
	"bytes"
	"encoding/base32"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/sealproxy/sealproxy/unlock/tang"
)

func TestApprovalCode(t *testing.T) {
	a, b := bytes.Repeat([]byte{4}, 133), bytes.Repeat([]byte{5}, 133)
	code := tang.ApprovalCode(a)
	if len(code) != 9 || code[4] != '-' {
		t.Fatalf("code %q is not XXXX-XXXX", code)
	}
	if _, err := base32.StdEncoding.DecodeString(strings.Replace(code, "-", "", 1)); err != nil {
		t.Fatalf("code %q is not base32: %v", code, err)
	}
	if tang.ApprovalCode(a, b) != tang.ApprovalCode(b, a) {
		t.Fatal("a session's code depends on the order its points arrived in")
	}
	for _, other := range []string{tang.ApprovalCode(b), tang.ApprovalCode(a, b), tang.ApprovalCode(a, a)} {
		if other == code {
			t.Fatalf("different points, same code %s", code)
		}
	}
	// Known answer: the code is part of the protocol (docs/approval.md).
	if got := tang.ApprovalCode([]byte("point")); got != "3HAU-43VT" {
		t.Fatalf("ApprovalCode(\"point\") = %s; if the derivation changed on purpose, update docs/approval.md and this value", got)
	}
}

func TestNormalizeCode(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"ABCD-EFGH", "ABCD-EFGH"}, {"abcdefgh", "ABCD-EFGH"}, {" abcd efgh ", "ABCD-EFGH"}, {"AB2D-EF7H", "AB2D-EF7H"},
		{"ABCD-EFG", ""}, {"ABCD-EFG1", ""}, {"ABCD-EFGHI", ""}, {"", ""}, {"ABCD_EFGH", ""},
	} {
		got, err := tang.NormalizeCode(tc.in)
		if (err != nil) != (tc.want == "") || got != tc.want {
			t.Errorf("NormalizeCode(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
}

func FuzzNormalizeCode(f *testing.F) {
	f.Add("ABCD-EFGH")
	f.Add("abcd efgh")
	f.Fuzz(func(t *testing.T, in string) {
		got, err := tang.NormalizeCode(in)
		if err != nil {
			return
		}
		again, err := tang.NormalizeCode(got)
		if err != nil || again != got || len(got) != 9 {
			t.Fatalf("NormalizeCode(%q) = %q, and again %q, %v", in, got, again, err)
		}
	})
}

// TestClientGateAnswers: how the client reads a gate's 202 and 403.
func TestClientGateAnswers(t *testing.T) {
	_, kp := newKeyDir(t)
	for _, tc := range []struct {
		name   string
		status int
		body   string
		want   error
		text   string
	}{
		{"denied", 403, `{"status":"denied","code":"ABCD-EFGH","operator":"alice","time":"2026-01-02T10:42:00Z"}`, tang.ErrDenied, "recovery denied by operator alice at 10:42 UTC (code ABCD-EFGH)"},
		{"403 from tangd", 403, ``, tang.ErrWrongKeyUse, "403"},
		{"403 other JSON", 403, `{"status":"pending"}`, tang.ErrWrongKeyUse, "403"},
		{"202 not pending", 202, `{"status":"ok"}`, tang.ErrBadResponse, "202"},
		{"202 not JSON", 202, `x`, tang.ErrBadResponse, "202"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.WriteHeader(tc.status)
				w.Write([]byte(tc.body))
			}))
			defer srv.Close()
			_, err := (&tang.Client{}).Recover(testCtx(t), srv.URL, kp.exc.Thumbprint(), testBlind(t, kp))
			te := tangErr(t, err, srv.URL, tc.want)
			if !strings.Contains(err.Error(), tc.text) || te.Status != tc.status {
				t.Fatalf("err = %v (status %d), want it to say %q", err, te.Status, tc.text)
			}
			if tc.want != tang.ErrDenied && errors.Is(err, tang.ErrDenied) {
				t.Fatal("a plain 403 reads as a denial")
			}
		})
	}
}
