//go:build !windows

package gate_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sealproxy/sealproxy/testenv"
	"github.com/sealproxy/sealproxy/unlock"
)

// TestWebPageHeaders: the page is served under a strict content security
// policy and is never framed.
func TestWebPageHeaders(t *testing.T) {
	f := newFixture(t, nil)
	for _, path := range []string{"/gate/", "/gate/app.js", "/gate/app.css"} {
		resp, err := http.Get(f.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		csp := resp.Header.Get("Content-Security-Policy")
		if resp.StatusCode != 200 || len(body) == 0 || !strings.Contains(csp, "script-src 'self'") ||
			!strings.Contains(csp, "frame-ancestors 'none'") || resp.Header.Get("X-Content-Type-Options") != "nosniff" {
			t.Errorf("GET %s: %d, %d bytes, CSP %q", path, resp.StatusCode, len(body), csp)
		}
	}
	if resp, err := http.Get(f.URL + "/gate/nothing"); err != nil || resp.StatusCode != 404 {
		t.Errorf("GET /gate/nothing: %v %v", resp.StatusCode, err)
	}
}

// TestWebPageChromium drives the operator page in headless Chromium: a
// wrong token is refused; the list shows a host's hostile label as text
// and no code anywhere on the page; a wrong typed code approves nothing;
// the operator types the code the host shows into the one Approve form and
// the host gets its key; Deny by request id; the recent decisions list
// the outcomes, still without the code.
func TestWebPageChromium(t *testing.T) {
	f := newFixture(t, nil)
	b := startChromium(t)
	evil := `<img src=x onerror="document.title='pwned'">`
	secret := []byte("typed into the page")
	jwe := seal(t, "tang", f.Config(), secret)
	done, pending := decryptAsync(testCtx(t), jwe, &unlock.Options{Startup: unlock.NewStartup(evil)})
	req1 := f.next(t)
	code := (<-pending).Code
	kid, x2 := f.blind(t)
	f.postPoint(t, kid, x2, nil) // stock clevis: no code
	req2 := f.next(t)

	page := b.open(t, f.URL+"/gate/")
	page.waitFor(t, `!document.getElementById("login").hidden`)
	page.eval(t, `document.getElementById("token").value = "sgt_wrong"; document.getElementById("login").requestSubmit(); true`)
	page.waitFor(t, `document.getElementById("status").textContent === "unauthorized: check the token"`)

	page.eval(t, `document.getElementById("token").value = `+jsString(f.Token)+`; document.getElementById("login").requestSubmit(); true`)
	row1 := `document.querySelector('tr[data-id="` + req1.ID + `"]')`
	row2 := `document.querySelector('tr[data-id="` + req2.ID + `"]')`
	page.waitFor(t, row1+` && `+row2)
	var host, codeCell, noCode string
	page.evalInto(t, row1+`.cells[1].textContent`, &host)
	page.evalInto(t, row1+`.cells[4].textContent`, &codeCell)
	page.evalInto(t, row2+`.cells[4].textContent`, &noCode)
	if host != evil || codeCell != "on the host" || noCode != "no code: the host cannot show one" {
		t.Fatalf("row cells: host %q, code %q, stock %q", host, codeCell, noCode)
	}
	var pwned bool
	page.evalInto(t, `document.title === "pwned" || document.querySelector("#requests img") !== null`, &pwned)
	if pwned {
		t.Fatal("a host label was rendered as HTML")
	}
	noCodeOnPage := func(when string) {
		t.Helper()
		var html string
		page.evalInto(t, `document.documentElement.outerHTML`, &html)
		if strings.Contains(html, code) || strings.Contains(html, strings.ReplaceAll(code, "-", "")) {
			t.Fatalf("%s: the page shows the host's code %s", when, code)
		}
	}
	noCodeOnPage("listed")
	var countdown string
	page.evalInto(t, row1+`.cells[6].textContent`, &countdown)
	if !strings.HasSuffix(countdown, "s") || !strings.Contains(countdown, "m") {
		t.Errorf("expiry countdown %q, want minutes and seconds", countdown)
	}

	// The operator types the code, as a keyboard would.
	typeCode := func(s string) {
		t.Helper()
		page.eval(t, `document.getElementById("code").value = ""; document.getElementById("code").focus(); true`)
		b.call(t, page.session, "Input.insertText", map[string]any{"text": s})
		page.eval(t, `document.getElementById("approve").requestSubmit(); true`)
	}
	typeCode("aaaa-aaaa")
	page.waitFor(t, `document.getElementById("status").textContent.startsWith("approve code AAAA-AAAA: no pending request with this code AAAA-AAAA")`)
	select {
	case r := <-done:
		t.Fatalf("a wrong code released the key: %v", r.err)
	default:
	}
	typeCode(strings.ToLower(code))
	page.waitFor(t, `document.getElementById("status").textContent === "code `+code+` approved by alice" && !`+row1)
	if r := wait(t, done); r.err != nil || !bytes.Equal(r.plain, secret) {
		t.Fatalf("after Approve in the page: %q, %v", r.plain, r.err)
	}

	page.eval(t, row2+`.querySelector("button.deny").click(); true`)
	page.waitFor(t, `document.getElementById("status").textContent === "request `+req2.ID+` denied by alice" && !`+row2)
	if status, st := f.postPoint(t, kid, x2, nil); status != http.StatusForbidden || st.Operator != "alice" {
		t.Fatalf("after Deny in the page: %d %+v, want 403 by alice", status, st)
	}
	page.waitFor(t, `!document.getElementById("empty").hidden && document.getElementById("decisions").rows.length === 3`)
	var outcomes []string
	page.evalInto(t, `Array.from(document.getElementById("decisions").rows, r => r.cells[2].textContent + " " + r.cells[5].textContent)`, &outcomes)
	if want := []string{"denied " + req2.ID, "approved " + req1.ID, "wrong code 1 of 5 "}; !slices.Equal(outcomes, want) {
		t.Errorf("recent decisions on the page: %q, want %q", outcomes, want)
	}
	noCodeOnPage("decided")
	f.wantEvents(t, "unauthorized:GET /gate/pending", "approve:wrong code 1 of 5", "approve:approved", "deny:denied")
}

func jsString(s string) string {
	out, _ := json.Marshal(s)
	return string(out)
}

// browser is headless Chromium driven over the DevTools protocol on a
// pipe (--remote-debugging-pipe: JSON messages ended by NUL on fds 3
// and 4), which needs no WebSocket client.
type browser struct {
	w io.Writer

	mu      sync.Mutex
	next    int
	waiting map[int]chan cdpReply
	dead    chan struct{}
}

type cdpReply struct {
	ID     int             `json:"id"`
	Result json.RawMessage `json:"result"`
	Error  *struct {
		Message string `json:"message"`
	} `json:"error"`
}

func startChromium(t *testing.T) *browser {
	t.Helper()
	return startChromiumIn(t, "", "")
}

// startChromiumIn starts Chromium with HOME set to home (where it finds
// its NSS database, $HOME/.pki/nssdb) unless empty, and with prefs as its
// profile's Preferences file unless empty.
func startChromiumIn(t *testing.T, home, prefs string) *browser {
	t.Helper()
	path := testenv.LookTool(t, "chromium", "chromium")
	profile := t.TempDir()
	if prefs != "" {
		if err := os.MkdirAll(filepath.Join(profile, "Default"), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(profile, "Default", "Preferences"), []byte(prefs), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	toChrome, ours, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	fromChrome, theirs, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	args := []string{"--headless=new", "--remote-debugging-pipe", "--disable-gpu", "--no-first-run",
		"--no-default-browser-check", "--disable-extensions", "--user-data-dir=" + profile, "about:blank"}
	if os.Geteuid() == 0 {
		args = append(args, "--no-sandbox") // Chromium refuses to run as root with its sandbox
	}
	cmd := exec.Command(path, args...)
	if home != "" {
		cmd.Env = append(os.Environ(), "HOME="+home)
	}
	cmd.ExtraFiles = []*os.File{toChrome, theirs} // fd 3: it reads; fd 4: it writes
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	toChrome.Close()
	theirs.Close()
	b := &browser{w: ours, waiting: map[int]chan cdpReply{}, dead: make(chan struct{})}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		ours.Close() // closing its command pipe makes Chromium exit
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
		fromChrome.Close()
	})
	go func() {
		defer close(b.dead)
		rd := bufio.NewReader(fromChrome)
		for {
			msg, err := rd.ReadBytes(0)
			if err != nil {
				return
			}
			var r cdpReply
			if json.Unmarshal(msg[:len(msg)-1], &r) != nil || r.ID == 0 {
				continue // an event
			}
			b.mu.Lock()
			ch := b.waiting[r.ID]
			delete(b.waiting, r.ID)
			b.mu.Unlock()
			if ch != nil {
				ch <- r
			}
		}
	}()
	return b
}

func (b *browser) call(t *testing.T, session, method string, params any) json.RawMessage {
	t.Helper()
	res, err := b.try(t, session, method, params)
	if err != "" {
		t.Fatalf("%s: %s", method, err)
	}
	return res
}

// try is call that returns the protocol's error message instead of
// failing the test.
func (b *browser) try(t *testing.T, session, method string, params any) (json.RawMessage, string) {
	t.Helper()
	b.mu.Lock()
	b.next++
	id := b.next
	ch := make(chan cdpReply, 1)
	b.waiting[id] = ch
	b.mu.Unlock()
	msg := map[string]any{"id": id, "method": method, "params": params}
	if session != "" {
		msg["sessionId"] = session
	}
	data, _ := json.Marshal(msg)
	if _, err := b.w.Write(append(data, 0)); err != nil {
		t.Fatalf("%s: writing to Chromium: %v", method, err)
	}
	select {
	case r := <-ch:
		if r.Error != nil {
			return nil, r.Error.Message
		}
		return r.Result, ""
	case <-b.dead:
		t.Fatalf("%s: Chromium exited", method)
	case <-testCtx(t).Done():
		t.Fatalf("%s: no answer from Chromium", method)
	}
	return nil, ""
}

type tab struct {
	b       *browser
	session string
}

func (b *browser) open(t *testing.T, url string) *tab {
	t.Helper()
	var target struct {
		TargetID string `json:"targetId"`
	}
	json.Unmarshal(b.call(t, "", "Target.createTarget", map[string]any{"url": "about:blank"}), &target)
	var att struct {
		SessionID string `json:"sessionId"`
	}
	json.Unmarshal(b.call(t, "", "Target.attachToTarget", map[string]any{"targetId": target.TargetID, "flatten": true}), &att)
	p := &tab{b: b, session: att.SessionID}
	// Page.navigate answers once the new document is committed, so the
	// scripts evaluated next run in it, not in about:blank.
	b.call(t, p.session, "Page.navigate", map[string]any{"url": url})
	p.waitFor(t, `location.href === `+jsString(url)+` && document.readyState === "complete"`)
	return p
}

// eval runs expr in the page (awaiting a promise) and returns its value.
func (p *tab) eval(t *testing.T, expr string) json.RawMessage {
	t.Helper()
	var out struct {
		Result struct {
			Value json.RawMessage `json:"value"`
		} `json:"result"`
		Exception *struct {
			Text      string `json:"text"`
			Exception struct {
				Description string `json:"description"`
			} `json:"exception"`
		} `json:"exceptionDetails"`
	}
	params := map[string]any{"expression": expr, "awaitPromise": true, "returnByValue": true}
	res, msg := p.b.try(t, p.session, "Runtime.evaluate", params)
	for tries := 0; msg != "" && strings.Contains(msg, "context") && tries < 50; tries++ {
		// A navigation replaced the document under the evaluation: the
		// next one runs in the new document.
		res, msg = p.b.try(t, p.session, "Runtime.evaluate", params)
	}
	if msg != "" {
		t.Fatalf("Runtime.evaluate: %s", msg)
	}
	json.Unmarshal(res, &out)
	if out.Exception != nil {
		t.Fatalf("in the page: %s: %s %s", expr, out.Exception.Text, out.Exception.Exception.Description)
	}
	return out.Result.Value
}

func (p *tab) evalInto(t *testing.T, expr string, v any) {
	t.Helper()
	if err := json.Unmarshal(p.eval(t, expr), v); err != nil {
		t.Fatalf("%s: %v", expr, err)
	}
}

// waitFor waits, inside the page, until cond is true (the page's own
// event loop checks it; the test does not sleep).
func (p *tab) waitFor(t *testing.T, cond string) {
	t.Helper()
	p.eval(t, `new Promise((resolve, reject) => {
		const start = Date.now();
		const check = () => {
			let ok = false;
			try { ok = (`+cond+`); } catch (e) {}
			if (ok) return resolve(true);
			if (Date.now() - start > 20000) return reject(new Error("timed out waiting for: " + `+jsString(cond)+`));
			setTimeout(check, 20);
		};
		check();
	})`)
}
