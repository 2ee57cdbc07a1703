package gate

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"mime"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sealproxy/sealproxy/unlock/tang"
)

// fuzzGate is a gate over a fresh key directory with one operator; it
// returns the gate, the exchange key's kid, a valid /rec body for it and
// the operator's token.
func fuzzGate(f *testing.F) (g *Gate, kid string, body []byte, token string) {
	dir := f.TempDir()
	if _, err := tang.Keygen(dir); err != nil {
		f.Fatal(err)
	}
	keys, err := tang.OpenKeyDir(dir)
	if err != nil {
		f.Fatal(err)
	}
	ops := OpenOperators(filepath.Join(dir, OperatorsFile))
	if token, err = ops.Add("alice"); err != nil {
		f.Fatal(err)
	}
	g = New(Config{Keys: keys, Operators: ops, Hold: time.Minute})
	ks, err := keys.Keys()
	if err != nil {
		f.Fatal(err)
	}
	raw, err := ks.Advertisement("")
	if err != nil {
		f.Fatal(err)
	}
	adv, err := tang.ParseAdvertisement(raw)
	if err != nil {
		f.Fatal(err)
	}
	srv, err := adv.ExchangeKey()
	if err != nil {
		f.Fatal(err)
	}
	epk, _, err := tang.Bind(srv)
	if err != nil {
		f.Fatal(err)
	}
	b, err := tang.NewBlind(srv, epk)
	if err != nil {
		f.Fatal(err)
	}
	if body, err = json.Marshal(b.Request()); err != nil {
		f.Fatal(err)
	}
	return g, srv.Thumbprint(), body, token
}

// FuzzParseRecovery fuzzes what a client controls in POST /rec/{kid}:
// the kid, the JWK body and the Sealgate-Session, Sealgate-Host,
// Sealgate-Keys and Prefer headers. Properties: no panic; a refusal is a
// 4xx (the keys are fine, so a client cannot cause a 5xx); an accepted
// request has a point on the key's curve, a session id of 1-64 base64url
// characters or none, a printable host label of at most 64 bytes (none
// without a session), a key count from 1 to 64 (1 without a session) and
// a wait no longer than the gate's hold. An empty kid stands for the
// gate's exchange key (which is made afresh for each run).
func FuzzParseRecovery(f *testing.F) {
	g, gateKid, body, _ := fuzzGate(f)
	kid := ""
	f.Add(kid, body, "", "", "", "")
	f.Add(kid, body, "c2Vzc2lvbi0x", "web-1", "3", "respond-async, wait=45")
	f.Add(kid, body, strings.Repeat("A", 64), strings.Repeat("h", 64), "64", "wait=0")
	f.Add(kid, body, strings.Repeat("A", 65), "h", "1", "")
	f.Add(kid, body, "s", "web\x00", "0", "wait=-1")
	f.Add(kid, body, "s", "web\x7f", "65", "wait=99999999999999999999")
	f.Add(kid, body, "s/../x", "web", "+1", "RESPOND-ASYNC")
	f.Add(kid, body, "s", "h\u00e9", " 2", "wait=1,wait=2")
	f.Add("unknown", body, "", "", "", "")
	f.Add(kid, []byte(`{"kty":"EC","crv":"P-521","x":"AA","y":"AA"}`), "", "", "", "")
	f.Add(kid, []byte(`{"kty":"EC","crv":"P-521","x":"AA","y":"AA","d":"AA"}`), "", "", "", "")
	f.Add(kid, []byte(`{"kty":"EC","crv":"P-521","alg":"ES512"}`), "", "", "", "")
	f.Add(kid, []byte(`null`), "", "", "", "")
	f.Add(kid, bytes.Repeat([]byte(" "), 5000), "", "", "", "")
	f.Fuzz(func(t *testing.T, kid string, body []byte, session, host, keys, prefer string) {
		if kid == "" {
			kid = gateKid
		}
		r := httptest.NewRequest(http.MethodPost, "/rec/x", bytes.NewReader(body))
		set := func(k, v string) {
			if v != "" {
				r.Header[k] = []string{v}
			}
		}
		set(tang.HeaderSession, session)
		set(tang.HeaderHost, host)
		set(tang.HeaderKeys, keys)
		set("Prefer", prefer)
		rec, status, err := g.parseRecovery(httptest.NewRecorder(), r, kid)
		if err != nil {
			if status < 400 || status >= 500 {
				t.Fatalf("refused with status %d: %v", status, err)
			}
			return
		}
		if status != 0 || rec == nil {
			t.Fatalf("accepted with status %d", status)
		}
		if rec.kid != kid || rec.x == nil {
			t.Fatalf("recovery %+v for kid %q", rec, kid)
		}
		if pt, err := rec.x.Point(); err != nil || !bytes.Equal(pt, rec.point) {
			t.Fatalf("point %x of %+v: %v", rec.point, rec.x, err)
		}
		if rec.session == "" {
			if rec.host != "" || rec.keys != 1 {
				t.Fatalf("no session but host %q keys %d", rec.host, rec.keys)
			}
		} else {
			if len(rec.session) > tang.MaxSessionID || strings.Trim(rec.session, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_") != "" {
				t.Fatalf("session %q", rec.session)
			}
			if len(rec.host) > tang.MaxHostLabel || strings.IndexFunc(rec.host, func(c rune) bool { return c < 0x20 || c > 0x7e }) >= 0 {
				t.Fatalf("host %q", rec.host)
			}
			if rec.keys < 1 || rec.keys > tang.MaxSessionKey {
				t.Fatalf("keys %d", rec.keys)
			}
		}
		if rec.wait < 0 || rec.wait > g.cfg.Hold {
			t.Fatalf("wait %v, hold %v", rec.wait, g.cfg.Hold)
		}
	})
}

// FuzzOperatorAPI sends an Authorization header, a Content-Type, a
// Sec-Fetch-Site and a body to POST /gate/approve and /gate/deny with no
// request pending. Properties: no panic; only the operator's own token
// (as "Bearer TOKEN", spaces around it trimmed) passes, anything else is
// 401; an authorized call answers 403 when the browser says it comes
// from another origin (Sec-Fetch-Site other than same-origin or none),
// 415 when it is not application/json, 400 for a body that is not
// {"code":"..."} or {"id":"..."}, 404 for an unknown code or id, 429 for
// an approval once wrong codes locked the operator, or 413 for a body over
// 1 KiB; every answer is a JSON object.
func FuzzOperatorAPI(f *testing.F) {
	g, _, _, token := fuzzGate(f)
	const js = "application/json"
	for _, auth := range []string{"Bearer " + token, "Bearer  " + token + " ", "bearer " + token, "Bearer " + token[:len(token)-1], "Bearer ", "Basic YWxpY2U6eA==", ""} {
		f.Add(auth, js, "", []byte(`{"code":"ABCD-EFGH"}`), false)
	}
	for _, body := range []string{`{"code":"abcd efgh"}`, `{"code":""}`, `{"code":"A","x":1}`, `{"code":"A"}{}`, `{"code":"A"} `, `{"Code":"A"}`, `{"code":1}`, `{"id":"x"}`, `{"id":"x","code":"A"}`, `{"id":""}`, `[]`, `null`, ``, `{"code":"` + strings.Repeat("A", 1100) + `"}`} {
		f.Add("Bearer "+token, js, "", []byte(body), true)
	}
	for _, ct := range []string{"text/plain", "", "application/json; charset=utf-8", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", "application/json;;", "APPLICATION/JSON"} {
		f.Add("Bearer "+token, ct, "", []byte(`{"code":"ABCD-EFGH"}`), false)
	}
	for _, site := range []string{"cross-site", "same-site", "same-origin", "none", "Cross-Site"} {
		f.Add("Bearer "+token, js, site, []byte(`{"code":"ABCD-EFGH"}`), false)
	}
	f.Fuzz(func(t *testing.T, auth, ctype, site string, body []byte, deny bool) {
		target := "/gate/approve"
		if deny {
			target = "/gate/deny"
		}
		r := httptest.NewRequest(http.MethodPost, target, bytes.NewReader(body))
		if auth != "" {
			r.Header.Set("Authorization", auth)
		}
		if ctype != "" {
			r.Header.Set("Content-Type", ctype)
		}
		if site != "" {
			r.Header.Set("Sec-Fetch-Site", site)
		}
		w := httptest.NewRecorder()
		g.ServeHTTP(w, r)
		var answer map[string]any
		if err := json.Unmarshal(w.Body.Bytes(), &answer); err != nil {
			t.Fatalf("status %d answer %q is not a JSON object", w.Code, w.Body.Bytes())
		}
		got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		authorized := ok && strings.TrimSpace(got) == token
		mt, _, mterr := mime.ParseMediaType(r.Header.Get("Content-Type"))
		site = r.Header.Get("Sec-Fetch-Site")
		switch {
		case !authorized:
			if w.Code != http.StatusUnauthorized {
				t.Fatalf("Authorization %q got status %d", auth, w.Code)
			}
		case site != "" && site != "same-origin" && site != "none":
			if w.Code != http.StatusForbidden {
				t.Fatalf("Sec-Fetch-Site %q got status %d", site, w.Code)
			}
		case mterr != nil || mt != "application/json":
			if w.Code != http.StatusUnsupportedMediaType {
				t.Fatalf("Content-Type %q got status %d", ctype, w.Code)
			}
		case len(body) > maxOperatorRequest:
			if w.Code != http.StatusRequestEntityTooLarge {
				t.Fatalf("%d-byte body got status %d", len(body), w.Code)
			}
		case w.Code == http.StatusTooManyRequests && !deny:
			// Locked after wrong codes (the gate outlives one input).
		case w.Code != http.StatusBadRequest && w.Code != http.StatusNotFound:
			t.Fatalf("body %q got status %d with nothing pending", body, w.Code)
		}
	})
}

// FuzzParsePolicy parses policy files. Properties: no panic; a refusal
// wraps ErrBadPolicy; reserved sources are masked prefixes; accepted
// rules are well formed (an action, an approve rule with sources or else
// any_source, masked source prefixes, valid host patterns, a window of two distinct times
// of day, max and per together and for approvals only) and can be
// matched against any request.
func FuzzParsePolicy(f *testing.F) {
	for _, s := range []string{
		"[[rule]]\nname = \"office hours\"\naction = \"approve\"\nsources = [\"10.1.0.0/16\", \"192.0.2.7\", \"2001:db8::/32\"]\nhosts = [\"web-*\"]\nwindow = \"08:00-18:00\"\nmax = 10\nper = \"1h\"\n",
		"[[rule]]\naction = \"deny\"\nhosts = [\"*\"]\nwindow = \"22:00-06:00\"\n",
		"[[rule]]\naction = \"approve\"\n[[rule]]\naction = \"deny\"\nsources = [\"::ffff:10.0.0.1\"]\n",
		"[[rule]]\naction = \"deny\"\nmax = 1\nper = \"1h\"\n",
		"[[rule]]\naction = \"approve\"\nmax = 1\n",
		"[[rule]]\naction = \"approve\"\nper = \"-1h\"\nmax = 1\n",
		"[[rule]]\naction = \"approve\"\nwindow = \"08:00-08:00\"\n",
		"[[rule]]\naction = \"approve\"\nwindow = \"24:00-01:00\"\n",
		"[[rule]]\naction = \"approve\"\nhosts = [\"[\"]\n",
		"[[rule]]\naction = \"approve\"\nsources = [\"10.0.0.1/33\"]\n",
		"[[rule]]\naction = \"approve\"\nunknown = 1\n",
		"[[rule]]\naction = \"approve\"\nany_source = true\nhosts = [\"web-*\"]\n",
		"[[rule]]\naction = \"approve\"\nany_source = true\nsources = [\"10.0.0.0/8\"]\n",
		"[[rule]]\naction = \"deny\"\nany_source = true\n",
		"reserved_sources = [\"10.0.0.0/8\", \"::1\"]\n[[rule]]\naction = \"deny\"\n",
		"[rule]\naction = \"approve\"\n",
		"",
	} {
		f.Add([]byte(s))
	}
	reqs := []*request{
		{source: "10.1.2.3", host: "web-1"},
		{source: "::ffff:10.1.2.3", host: ""},
		{source: "2001:db8::1", host: "db"},
		{source: "not an address", host: "[x"},
	}
	times := []time.Time{
		time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC),
		time.Date(2026, 1, 1, 12, 30, 0, 0, time.UTC),
		time.Date(2026, 1, 1, 23, 59, 59, 0, time.UTC),
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		policy, err := ParsePolicyFile(data)
		if err != nil {
			if !errors.Is(err, ErrBadPolicy) {
				t.Fatalf("error %v does not wrap ErrBadPolicy", err)
			}
			return
		}
		for _, p := range policy.Reserved {
			if !p.IsValid() || p != p.Masked() {
				t.Fatalf("reserved source %v", p)
			}
		}
		for _, rule := range policy.Rules {
			if rule.Action == StateApproved && (len(rule.Sources) > 0) == rule.AnySource {
				t.Fatalf("approve rule with sources %v and any_source %v", rule.Sources, rule.AnySource)
			}
			if rule.Action != StateApproved && rule.AnySource {
				t.Fatalf("any_source on a %v rule", rule.Action)
			}
			if rule.Name == "" || (rule.Action != StateApproved && rule.Action != StateDenied) {
				t.Fatalf("rule %+v", rule)
			}
			for _, p := range rule.Sources {
				if !p.IsValid() || p != p.Masked() {
					t.Fatalf("source %v", p)
				}
			}
			for _, h := range rule.Hosts {
				if _, err := path.Match(h, "x"); err != nil {
					t.Fatalf("host pattern %q: %v", h, err)
				}
			}
			if w := rule.Window; w != nil && (w.From < 0 || w.From >= 24*60 || w.To < 0 || w.To >= 24*60 || w.From == w.To) {
				t.Fatalf("window %+v", *w)
			}
			if rule.Max < 0 || (rule.Max > 0) != (rule.Per > 0) || rule.Per < 0 || (rule.Per > 0 && rule.Action != StateApproved) {
				t.Fatalf("max %d per %v action %v", rule.Max, rule.Per, rule.Action)
			}
			for _, r := range reqs {
				for _, now := range times {
					_, perr := netip.ParseAddr(r.source)
					if rule.matches(r, now) && len(rule.Sources) > 0 && perr != nil {
						t.Fatalf("rule %+v with sources matched source %q", rule, r.source)
					}
				}
			}
		}
	})
}

// FuzzOperatorsFile reads a hand-edited or damaged operators.json.
// Properties: no panic; Names fails exactly when the file is not JSON of
// the right shape; Authenticate accepts a token only when exactly one
// entry holds its SHA-256, and returns that entry's name; Has agrees
// with Names; after Add, the new token authenticates as the new name.
func FuzzOperatorsFile(f *testing.F) {
	tok := "sgt_" + strings.Repeat("A", 43)
	sum := tokenHash(tok)
	f.Add([]byte(`{"operators":[{"name":"alice","token_sha256":"`+sum+`","added":"2026-01-01T00:00:00Z"}]}`), tok)
	f.Add([]byte(`{"operators":[{"name":"alice","token_sha256":"`+strings.ToUpper(sum)+`"}]}`), tok)
	f.Add([]byte(`{"operators":[{"name":"a","token_sha256":"`+sum+`"},{"name":"b","token_sha256":"`+sum+`"}]}`), tok)
	f.Add([]byte(`{"operators":[{"name":"","token_sha256":"`+sum+`"}]}`), tok)
	f.Add([]byte(`{"operators":[{"name":"alice","token_sha256":""}]}`), "")
	f.Add([]byte(`{"operators":[{"name":"alice","token_sha256":"`+sum[:62]+`"}]}`), tok)
	f.Add([]byte(`{"operators":null}`), tok)
	f.Add([]byte(`{"operators":[{"name":"alice","added":"yesterday"}]}`), tok)
	f.Add([]byte(`[]`), tok)
	f.Add([]byte(``), tok)
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, data []byte, token string) {
		p := filepath.Join(dir, OperatorsFile)
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		o := OpenOperators(p)
		var want operatorFile
		wantErr := json.Unmarshal(data, &want)
		names, err := o.Names()
		if (err != nil) != (wantErr != nil) {
			t.Fatalf("Names error %v, json.Unmarshal error %v", err, wantErr)
		}
		if err != nil {
			if _, ok := o.Authenticate(token); ok {
				t.Fatalf("a damaged file authenticated %q", token)
			}
			return
		}
		if len(names) != len(want.Operators) {
			t.Fatalf("names %q of %d entries", names, len(want.Operators))
		}
		h := sha256.Sum256([]byte(token))
		var matched []string
		for _, e := range want.Operators {
			if b, err := hex.DecodeString(e.TokenSHA256); err == nil && bytes.Equal(b, h[:]) {
				matched = append(matched, e.Name)
			}
		}
		name, ok := o.Authenticate(token)
		if token == "" {
			if ok {
				t.Fatalf("the empty token authenticated as %q", name)
			}
		} else if ok != (len(matched) == 1) || (ok && name != matched[0]) {
			t.Fatalf("Authenticate(%q) = %q, %v; entries with its hash: %q", token, name, ok, matched)
		}
		for _, n := range append(names, "alice", "") {
			has := n != "" && slices.Contains(names, n)
			if o.Has(n) != has {
				t.Fatalf("Has(%q) = %v, names %q", n, !has, names)
			}
		}
		newName := "op" + strconv.Itoa(len(names))
		if slices.Contains(names, newName) {
			return
		}
		newTok, err := o.Add(newName)
		if err != nil {
			t.Fatalf("Add to a readable file: %v", err)
		}
		if got, ok := o.Authenticate(newTok); !ok || got != newName {
			t.Fatalf("new token authenticates as %q, %v", got, ok)
		}
	})
}

// FuzzCommitHeaders fuzzes the code exchange's headers of a session's
// POST /rec: Sealgate-Commit and Sealgate-Reveal. Properties: no panic; a
// refusal is a 400; an accepted request has a commitment of exactly
// tang.NonceSize bytes or none, and a revealed nonce of that size only
// with a commitment.
func FuzzCommitHeaders(f *testing.F) {
	g, kid, body, _ := fuzzGate(f)
	x := tang.NewExchange([]byte("point"))
	f.Add(x.Commitment(), "")
	f.Add(x.Commitment(), x.Reveal())
	f.Add("", x.Reveal())
	f.Add(x.Commitment()+"=", "AAAA")
	f.Add(strings.Repeat("A", 44), strings.Repeat("_", 43))
	f.Add("\x00", "\u202e")
	f.Fuzz(func(t *testing.T, commit, reveal string) {
		r := httptest.NewRequest(http.MethodPost, "/rec/x", bytes.NewReader(body))
		r.Header.Set(tang.HeaderSession, "c2Vzc2lvbi0x")
		if commit != "" {
			r.Header[tang.HeaderCommit] = []string{commit}
		}
		if reveal != "" {
			r.Header[tang.HeaderReveal] = []string{reveal}
		}
		rec, status, err := g.parseRecovery(httptest.NewRecorder(), r, kid)
		if err != nil {
			if status != http.StatusBadRequest {
				t.Fatalf("refused with status %d: %v", status, err)
			}
			return
		}
		if rec.commit != nil && len(rec.commit) != tang.NonceSize || (rec.commit == nil) != (commit == "") {
			t.Fatalf("commitment %x from %q", rec.commit, commit)
		}
		if rec.reveal != nil && (len(rec.reveal) != tang.NonceSize || rec.commit == nil) || (rec.reveal == nil) != (reveal == "") {
			t.Fatalf("reveal %x from %q, commitment %x", rec.reveal, reveal, rec.commit)
		}
	})
}
