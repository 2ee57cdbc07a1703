//go:build !windows

package gate_test

import (
	"bytes"
	"crypto/tls"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/sealproxy/sealproxy/testenv"
	"github.com/sealproxy/sealproxy/unlock/gate"
	"github.com/sealproxy/sealproxy/unlock/tang"
)

// memAudit keeps the audit events in memory.
type memAudit struct {
	mu     sync.Mutex
	events []gate.Event
}

func (a *memAudit) Record(e gate.Event) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.events = append(a.events, e)
	return nil
}

func (a *memAudit) count(event, operator string) int {
	a.mu.Lock()
	defer a.mu.Unlock()
	n := 0
	for _, e := range a.events {
		if e.Event == event && e.Operator == operator {
			n++
		}
	}
	return n
}

// TestWebPageChromiumCrossSite is the cross-site attack on an operator
// who holds a client certificate. The gate serves TLS and accepts
// operators' certificates (--client-ca); headless Chromium has alice's
// certificate in its NSS database and sends it to the gate unasked. Pages
// of two other origins (http://localhost:PORT, a site of its own, and
// http://127.0.0.1:PORT, the gate's host on another port) try to approve
// a pending request: a text/plain no-cors POST, which the browser sends
// with the certificate and without a preflight, and a JSON POST, which
// needs a preflight the gate never grants. Neither decides anything, and
// the audit log names alice as the credential the browser sent (so the
// certificate did travel). Then gate.Client with the same certificate,
// as `seal pending|approve --cert --key --cacert` uses it, lists and
// approves.
func TestWebPageChromiumCrossSite(t *testing.T) {
	openssl := testenv.LookTool(t, "openssl", "openssl")
	certutil := testenv.LookTool(t, "certutil", "libnss3-tools")
	pk12util := testenv.LookTool(t, "pk12util", "libnss3-tools")
	testenv.LookTool(t, "chromium", "chromium")

	audit := &memAudit{}
	ca := testenv.NewCA(t, "operators")
	gt := testenv.StartGate(t, testenv.GateOptions{
		Operators: []string{"alice"}, OperatorCA: ca,
		Configure: func(c *gate.Config) { c.Audit = audit },
	})
	g, thp := gt.Gate, gt.Thp
	alice := ca.Client(t, "alice")

	// A host's request waits (the host needs no certificate).
	hostHTTP := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.Pool()}}}
	adv, err := (&tang.Client{HTTP: hostHTTP}).Advertisement(testCtx(t), gt.URL, thp)
	if err != nil {
		t.Fatal(err)
	}
	exc, _ := adv.ExchangeKey()
	epk, z, _ := tang.Bind(exc)
	clear(z)
	b, _ := tang.NewBlind(exc, epk)
	defer b.Wipe()
	body, _ := json.Marshal(b.Request())
	req, _ := http.NewRequestWithContext(testCtx(t), http.MethodPost, gt.URL+"/rec/"+exc.Thumbprint(), bytes.NewReader(body))
	req.Header.Set("Prefer", "respond-async")
	resp, err := hostHTTP.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var st tang.Status
	json.NewDecoder(resp.Body).Decode(&st)
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted || st.Code == "" {
		t.Fatalf("host's recovery: %d %+v", resp.StatusCode, st)
	}

	// Alice's browser: her certificate and the operators' CA in its NSS
	// database, and a profile that selects the certificate for the gate
	// without asking (as an enterprise policy or "remember this choice"
	// would).
	files := t.TempDir()
	caFile := ca.WriteCA(t, files, "ca.pem")
	certFile, keyFile := alice.WriteFiles(t, files, "alice")
	p12 := filepath.Join(files, "alice.p12")
	home := t.TempDir()
	nssdb := filepath.Join(home, ".pki", "nssdb")
	if err := os.MkdirAll(nssdb, 0o700); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{
		{openssl, "pkcs12", "-export", "-in", certFile, "-inkey", keyFile, "-out", p12, "-passout", "pass:", "-name", "alice"},
		{certutil, "-N", "-d", "sql:" + nssdb, "--empty-password"},
		{certutil, "-A", "-d", "sql:" + nssdb, "-n", "operators", "-t", "C,,", "-i", caFile},
		{pk12util, "-i", p12, "-d", "sql:" + nssdb, "-W", ""},
	} {
		if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	prefs := `{"profile":{"content_settings":{"exceptions":{"auto_select_certificate":{"https://127.0.0.1:*,*":{"setting":{"filters":[{}]}}}}}}}`
	br := startChromiumIn(t, home, prefs)

	// The other origin: any page the operator happens to open.
	elsewhere := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		io.WriteString(w, "<!doctype html><title>elsewhere</title><p>nothing to see")
	}))
	defer elsewhere.Close()
	port := elsewhere.URL[strings.LastIndex(elsewhere.URL, ":")+1:]
	approve := jsString(gt.URL + "/gate/approve")
	// A host that shows no code (as this one, without the committed
	// exchange) is approved by its request id: what the page would send.
	id := g.Pending()[0].ID
	codeBody := jsString(`{"id":"` + id + `"}`)
	for i, origin := range []string{"http://localhost:" + port, "http://127.0.0.1:" + port} {
		page := br.open(t, origin+"/")
		var got string
		page.evalInto(t, `fetch(`+approve+`, {method: "POST", mode: "no-cors", credentials: "include",
			headers: {"Content-Type": "text/plain"}, body: `+codeBody+`}).then(() => "sent", (e) => "failed: " + e)`, &got)
		if got != "sent" {
			t.Fatalf("from %s: the no-cors POST did not reach the gate: %s", origin, got)
		}
		if list := g.Pending(); len(list) != 1 || list[0].Code != st.Code {
			t.Fatalf("from %s: the no-cors text/plain POST with alice's certificate decided: pending %+v", origin, list)
		}
		if n := audit.count("cross-site", "alice"); n < i+1 {
			t.Fatalf("from %s: %d cross-site refusals naming alice, want %d (did the browser send her certificate?)", origin, n, i+1)
		}
		page.evalInto(t, `fetch(`+approve+`, {method: "POST", mode: "cors", credentials: "include",
			headers: {"Content-Type": "application/json"}, body: `+codeBody+`}).then((r) => "answered " + r.status, () => "blocked")`, &got)
		if got != "blocked" {
			t.Fatalf("from %s: the JSON POST was %s, want blocked by its preflight", origin, got)
		}
		if list := g.Pending(); len(list) != 1 || list[0].Code != st.Code || list[0].State != gate.StatePending {
			t.Fatalf("after the POSTs from %s: pending %+v, want %s still pending", origin, list, st.Code)
		}
	}
	if n := audit.count("approve", "alice"); n != 0 {
		t.Fatalf("%d approve events by alice from the other origins", n)
	}

	// The operator's own client with the same certificate.
	op := &gate.Client{URL: gt.URL, HTTP: &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{
		RootCAs: ca.Pool(), Certificates: []tls.Certificate{alice.TLSCertificate()},
	}}}}
	list, err := op.Pending(testCtx(t))
	if err != nil || len(list) != 1 || list[0].ID != id {
		t.Fatalf("gate.Client with alice's certificate lists %+v, %v", list, err)
	}
	if d, err := op.ApproveID(testCtx(t), id); err != nil || d.Operator != "alice" || d.Status != gate.StateApproved {
		t.Fatalf("gate.Client with alice's certificate approves: %+v, %v", d, err)
	}
}
