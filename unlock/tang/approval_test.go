package tang_test

import (
	"bytes"
	"encoding/base32"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
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

// TestClientHostileGateText: what a gate (or anyone on the plain-HTTP path
// to it) sends never reaches the host's screen, logs or sd_notify raw. A
// "code" that is not XXXX-XXXX stops the attempt and is never reported;
// a code before the committed exchange, or another code than the host's,
// stops it too; a denial's operator and code are escaped; a full gate is
// ErrGateFull, not an unreachable server.
func TestClientHostileGateText(t *testing.T) {
	_, kp := newKeyDir(t)
	const esc = "\r\x1b[0m\x1b[2Kseal: waiting for approval of code AAAA-AAAA at http://gate:7500\x1b[8m"
	nonce := b64.EncodeToString(bytes.Repeat([]byte{7}, 32))
	pending := func(code, nonce string) string {
		return mustMarshal(t, tang.Status{Status: "pending", Code: code, Nonce: nonce, Keys: 1, Arrived: 1})
	}
	for _, tc := range []struct {
		name    string
		answers func(revealed bool) (int, string)
		want    error
		text    string
	}{
		{"escapes as the code", func(bool) (int, string) { return 202, pending(esc, "") }, tang.ErrBadResponse, "not XXXX-XXXX"},
		{"escapes as the code after the exchange", func(r bool) (int, string) {
			if r {
				return 202, pending(esc, nonce)
			}
			return 202, pending("", nonce)
		}, tang.ErrBadResponse, "not XXXX-XXXX"},
		{"newline in the code", func(bool) (int, string) { return 202, pending("ABCD-EFGH\nSTATUS=ready", "") }, tang.ErrBadResponse, "not XXXX-XXXX"},
		{"lower case code", func(bool) (int, string) { return 202, pending("abcd-efgh", "") }, tang.ErrBadResponse, "not XXXX-XXXX"},
		{"code without the exchange", func(bool) (int, string) { return 202, pending("ABCD-EFGH", "") }, tang.ErrCodeMismatch, "without the committed exchange"},
		{"another code", func(r bool) (int, string) {
			if r {
				return 202, pending("ABCD-EFGH", nonce)
			}
			return 202, pending("", nonce)
		}, tang.ErrCodeMismatch, "the gate shows code ABCD-EFGH, this host "},
		{"bad nonce", func(bool) (int, string) { return 202, pending("", "AAAA") }, tang.ErrBadResponse, "nonce"},
		{"nonce refused", func(r bool) (int, string) {
			if r {
				return 409, `{"error":"does not open\u001b[2J"}`
			}
			return 202, pending("", nonce)
		}, tang.ErrCodeMismatch, `refused this host's nonce`},
		{"hostile denial", func(bool) (int, string) {
			return 403, `{"status":"denied","code":"\u001b[2JAAAA","operator":"eve\nSTATUS=READY=1\u001b]0;x\u0007\u202e","time":"2026-01-02T10:42:00Z"}`
		}, tang.ErrDenied, `by operator "eve\nSTATUS=READY=1\x1b]0;x\a\u202e"`},
		{"gate full", func(bool) (int, string) { return 503, `{"error":"too many pending requests"}` }, tang.ErrGateFull, "HTTP 503): too many pending requests"},
		{"source full", func(bool) (int, string) { return 429, `{"error":"8 requests from this source are already pending"}` }, tang.ErrGateFull, "HTTP 429"},
		{"503 of a proxy", func(bool) (int, string) { return 503, `<html>down</html>` }, tang.ErrUnreachable, "HTTP 503"},
		{"hostile 400", func(bool) (int, string) { return 400, `{"error":"bad\r\u001b[1Aseal: key recovered"}` }, tang.ErrRejected, `"bad\r\x1b[1Aseal: key recovered"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.Header.Get(tang.HeaderCommit) == "" || r.Header.Get(tang.HeaderSession) == "" {
					t.Errorf("request without the committed exchange's headers: %v", r.Header)
				}
				status, body := tc.answers(r.Header.Get(tang.HeaderReveal) != "")
				w.WriteHeader(status)
				w.Write([]byte(body))
			}))
			defer srv.Close()
			var shown []tang.Pending
			_, err := (&tang.Client{}).RecoverWith(testCtx(t), srv.URL, kp.exc.Thumbprint(), testBlind(t, kp),
				&tang.RecoverOptions{OnPending: func(p tang.Pending) { shown = append(shown, p) }})
			tangErr(t, err, srv.URL, tc.want)
			if !strings.Contains(err.Error(), tc.text) {
				t.Fatalf("err = %v, want it to say %q", err, tc.text)
			}
			if strings.ContainsAny(err.Error(), "\x1b\r\n\a\u202e") {
				t.Fatalf("err = %q carries control characters from the gate", err)
			}
			if len(shown) != 0 {
				t.Fatalf("reported %+v from a gate that failed the exchange", shown)
			}
		})
	}
}

// TestClientCommittedExchange: against a gate that plays the exchange
// honestly, the client commits to its point, reveals its nonce only once
// the gate's arrived, and reports the one code both compute.
func TestClientCommittedExchange(t *testing.T) {
	dir, kp := newKeyDir(t)
	keys := loadKeys(t, dir)
	ng := bytes.Repeat([]byte{9}, 32)
	var commit []byte
	var reported atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var x tang.JWK
		json.NewDecoder(r.Body).Decode(&x)
		c, err := tang.DecodeNonce(r.Header.Get(tang.HeaderCommit))
		if err != nil || (commit != nil && !bytes.Equal(c, commit)) {
			t.Errorf("commitment %q changed or malformed", r.Header.Get(tang.HeaderCommit))
		}
		commit = c
		reveal := r.Header.Get(tang.HeaderReveal)
		if reveal == "" {
			w.WriteHeader(202)
			w.Write([]byte(mustMarshal(t, tang.Status{Status: "pending", Nonce: b64.EncodeToString(ng), Keys: 1, Arrived: 1})))
			return
		}
		nh, _ := tang.DecodeNonce(reveal)
		pt, _ := x.Point()
		if !bytes.Equal(tang.Commitment(nh, pt), commit) {
			t.Error("the nonce does not open the commitment over the point sent")
		}
		if reported.Load() == 0 {
			w.WriteHeader(202)
			w.Write([]byte(mustMarshal(t, tang.Status{Status: "pending", Code: tang.SessionCode(nh, ng, commit), Nonce: b64.EncodeToString(ng), Keys: 1, Arrived: 1})))
			return
		}
		y, err := keys.Recover(kp.exc.Thumbprint(), &x)
		if err != nil {
			t.Error(err)
		}
		w.Write([]byte(mustMarshal(t, y)))
	}))
	defer srv.Close()
	var code string
	z, err := (&tang.Client{}).RecoverWith(testCtx(t), srv.URL, kp.exc.Thumbprint(), testBlind(t, kp),
		&tang.RecoverOptions{OnPending: func(p tang.Pending) { code = p.Code; reported.Add(1) }})
	if err != nil || len(z) == 0 {
		t.Fatalf("RecoverWith: %v", err)
	}
	if !tang.IsCode(code) || reported.Load() != 1 {
		t.Fatalf("reported %q %d times, want one code", code, reported.Load())
	}
}

func TestPrintable(t *testing.T) {
	for in, want := range map[string]string{
		"http://gate:7500":  "http://gate:7500",
		"héllo":             "héllo",
		"a\x1b[2Jb":         `"a\x1b[2Jb"`,
		"cr\rlf\n":          `"cr\rlf\n"`,
		"rtl\u202eoverride": `"rtl\u202eoverride"`,
		"c1 \x9b2J":         `"c1 \x9b2J"`,
	} {
		if got := tang.Printable(in); got != want {
			t.Errorf("Printable(%q) = %s, want %s", in, got, want)
		}
	}
}

// TestClientNonceChanged: a gate that sends another nonce after the host
// revealed its own (restarted, or the request expired) ends the attempt:
// the host never takes a second nonce for one commitment, which would let
// whoever saw the first reveal grind the code.
func TestClientNonceChanged(t *testing.T) {
	_, kp := newKeyDir(t)
	var n atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		nonce := b64.EncodeToString(bytes.Repeat([]byte{byte(n.Add(1))}, 32))
		w.WriteHeader(202)
		w.Write([]byte(mustMarshal(t, tang.Status{Status: "pending", Nonce: nonce, Keys: 1, Arrived: 1})))
	}))
	defer srv.Close()
	_, err := (&tang.Client{}).RecoverWith(testCtx(t), srv.URL, kp.exc.Thumbprint(), testBlind(t, kp), nil)
	tangErr(t, err, srv.URL, tang.ErrSessionLost)
	if n.Load() != 2 {
		t.Fatalf("%d requests, want 2: the nonce, then the reveal", n.Load())
	}
}

// FuzzIsCode: what IsCode lets through from a gate is exactly a normalized
// code, nine printable ASCII bytes; DecodeNonce gives NonceSize bytes or
// an error.
func FuzzIsCode(f *testing.F) {
	f.Add("ABCD-EFGH")
	f.Add("abcd-efgh")
	f.Add("ABCD-EFG\x1b")
	f.Add(b64.EncodeToString(bytes.Repeat([]byte{1}, 32)))
	f.Fuzz(func(t *testing.T, s string) {
		if tang.IsCode(s) {
			norm, err := tang.NormalizeCode(s)
			if err != nil || norm != s || tang.Printable(s) != s {
				t.Fatalf("IsCode(%q) but NormalizeCode = %q, %v", s, norm, err)
			}
		}
		if b, err := tang.DecodeNonce(s); err == nil && len(b) != tang.NonceSize {
			t.Fatalf("DecodeNonce(%q) = %d bytes", s, len(b))
		}
	})
}
