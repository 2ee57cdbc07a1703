package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/rogpeppe/go-internal/testscript"

	"github.com/sealproxy/sealproxy/cmd/internal/cli"
	"github.com/sealproxy/sealproxy/testenv"
	"github.com/sealproxy/sealproxy/unlock"
	"github.com/sealproxy/sealproxy/unlock/gate"
	"github.com/sealproxy/sealproxy/unlock/tang"
)

// TestMain lets the test binary stand in for `seal`: scripts run it as a
// command through the same cli.Main the real binary uses.
func TestMain(m *testing.M) {
	testscript.Main(m, map[string]func(){
		"seal": func() { os.Exit(cli.Main("seal", run)) },
	})
}

// TestScripts runs the golden CLI tests in testdata/*.txtar: exact stderr
// for errors and hints, exit codes, and nothing on stdout when decrypt
// fails. Tang servers are ours, started in-process by the `tang` command
// (see testenv.ScriptParams); their random URLs, thumbprints and key ids
// reach the golden files through cmpenv.
func TestScripts(t *testing.T) {
	testscript.Run(t, testenv.ScriptParams("testdata"))
}

// TestDecryptDenied runs seal decrypt in-process against a gate that an
// operator denies: exit status 4, the operator named, nothing on stdout.
func TestDecryptDenied(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	g := testenv.StartGate(t, testenv.GateOptions{})
	jwe, err := unlock.Encrypt(ctx, "tang", []byte(g.PinConfig()), []byte("secret"), nil)
	if err != nil {
		t.Fatal(err)
	}
	var stdout bytes.Buffer
	var stderr testenv.SyncBuffer
	code := make(chan int, 1)
	go func() {
		err := run(ctx, []string{"decrypt"}, bytes.NewReader(jwe), &stdout, &stderr)
		code <- cli.Report("seal", err, &stderr)
	}()
	req := receive(t, ctx, g.Ready)
	// Deny only once seal shows the code: the operator decides on what the
	// host shows, and a denial before that leaves nothing to show.
	if !testenv.Poll(ctx, func() bool { return strings.Contains(stderr.String(), "waiting for approval") }) {
		t.Fatalf("seal never showed the code:\n%s", stderr.String())
	}
	if _, err := g.Deny(req.Code, "alice", "test"); err != nil {
		t.Fatal(err)
	}
	if got := <-code; got != cli.ExitDenied {
		t.Fatalf("exit status %d, want %d; stderr:\n%s", got, cli.ExitDenied, stderr.String())
	}
	if stdout.Len() != 0 {
		t.Fatalf("stdout %q after a denial", stdout.String())
	}
	for _, want := range []string{
		"seal: waiting for approval of code " + req.Code + " at " + g.URL + "\n",
		"recovery denied by operator alice at ",
		"seal: hint: ask the operator why",
	} {
		if !strings.Contains(stderr.String(), want) {
			t.Errorf("stderr lacks %q:\n%s", want, stderr.String())
		}
	}
}

// TestApproveWithClientCertificate runs seal pending and seal approve
// in-process against an https gate, authenticated by a client
// certificate instead of a token.
func TestApproveWithClientCertificate(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	ca := testenv.NewCA(t, "gate")
	srv := testenv.StartGate(t, testenv.GateOptions{Operators: []string{"alice"}, OperatorCA: ca})
	files := t.TempDir()
	caFile := ca.WriteCA(t, files, "ca.pem")
	certFile, keyFile := ca.Client(t, "alice").WriteFiles(t, files, "alice")

	host := &tang.Client{HTTP: &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.Pool()}}}}
	jwe, err := unlock.Encrypt(ctx, "tang", []byte(srv.PinConfig()), []byte("secret"), &unlock.Options{Tang: host})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		buf, err := unlock.Decrypt(ctx, jwe, &unlock.Options{Tang: host})
		if err == nil {
			buf.Destroy()
		}
		done <- err
	}()
	req := receive(t, ctx, srv.Ready)
	t.Setenv("SEALGATE_TOKEN", "")
	tlsArgs := []string{"--gate", srv.URL, "--cacert", caFile, "--cert", certFile, "--key", keyFile}
	var stdout, stderr bytes.Buffer
	if err := run(ctx, append([]string{"pending"}, tlsArgs...), nil, &stdout, &stderr); err != nil {
		t.Fatalf("seal pending: %v", err)
	}
	if !strings.Contains(stdout.String(), req.ID) || strings.Contains(stdout.String(), req.Code) {
		t.Fatalf("seal pending lists:\n%s\nwant request %s without its code %s", stdout.String(), req.ID, req.Code)
	}
	stdout.Reset()
	if err := run(ctx, append([]string{"approve", req.Code}, tlsArgs...), nil, &stdout, &stderr); err != nil {
		t.Fatalf("seal approve: %v", err)
	}
	if want := req.Code + " approved by alice\n"; stdout.String() != want {
		t.Fatalf("seal approve printed %q, want %q", stdout.String(), want)
	}
	if err := <-done; err != nil {
		t.Fatalf("Decrypt after approval: %v", err)
	}
	// Without the certificate (and no token) it is a usage error.
	err = run(ctx, []string{"pending", "--gate", srv.URL, "--cacert", caFile}, nil, &stdout, &stderr)
	if code := cli.Report("seal", err, &stderr); code != cli.ExitUsage {
		t.Fatalf("no credentials: exit %d, want %d", code, cli.ExitUsage)
	}
}

func receive(t *testing.T, ctx context.Context, ready <-chan gate.Request) gate.Request {
	t.Helper()
	select {
	case r := <-ready:
		return r
	case <-ctx.Done():
		t.Fatal("no request became ready for a decision")
	}
	return gate.Request{}
}

// hostileGate is a gate behind a man in the middle that answers every
// POST /rec with status and body; advertisements pass through. It returns
// a JWE sealed to the gate as the host knows it (the man in the middle's
// address).
func hostileGate(t *testing.T, ctx context.Context, status int, body string) (jwe []byte, url string) {
	t.Helper()
	real := testenv.StartGate(t, testenv.GateOptions{})
	mitm := testenv.HostileFront(t, real.URL, status, body)
	jwe, err := unlock.Encrypt(ctx, "tang", []byte(`{"url":"`+mitm+`","thp":"`+real.Thp+`"}`), []byte("secret"), nil)
	if err != nil {
		t.Fatal(err)
	}
	return jwe, mitm
}

// TestDecryptHostileGate: whatever a man in the middle on the Tang port
// answers, seal decrypt puts no control character on the terminal, stops
// with an error, and the hint fits the cause.
func TestDecryptHostileGate(t *testing.T) {
	const esc = "\r\x1b[0m\x1b[2Kseal: waiting for approval of code AAAA-AAAA at http://gate:7500\x1b[8m"
	nonce := base64.RawURLEncoding.EncodeToString(bytes.Repeat([]byte{7}, 32))
	for _, tc := range []struct {
		name   string
		status int
		body   string
		want   []string
	}{
		{"escapes as the code", 202, `{"status":"pending","code":` + string(must(json.Marshal(esc))) + `,"keys":1,"arrived":1}`,
			[]string{"a code that is not XXXX-XXXX"}},
		{"a code without the exchange", 202, `{"status":"pending","code":"AAAA-AAAA","keys":1,"arrived":1}`,
			[]string{"without the committed exchange", "seal: hint: something between this host and the gate changed the request"}},
		{"another code", 202, `{"status":"pending","code":"AAAA-AAAA","nonce":"` + nonce + `","keys":1,"arrived":1}`,
			[]string{"the gate shows code AAAA-AAAA, this host ", "seal: hint: something between this host and the gate changed the request"}},
		{"hostile denial", 403, `{"status":"denied","code":"AAAA-AAAA","operator":"eve\r\u001b[2K\nseal: key recovered"}`,
			[]string{`recovery denied by operator "eve\r\x1b[2K\nseal: key recovered"`}},
		{"gate full", 503, `{"error":"too many pending requests"}`,
			[]string{"too many are pending (HTTP 503)", "seal: hint: the gate is refusing new requests because too many are pending"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			jwe, _ := hostileGate(t, ctx, tc.status, tc.body)
			var stdout, stderr bytes.Buffer
			err := run(ctx, []string{"decrypt"}, bytes.NewReader(jwe), &stdout, &stderr)
			code := cli.Report("seal", err, &stderr)
			if code == 0 || stdout.Len() != 0 {
				t.Fatalf("exit %d, stdout %q", code, stdout.String())
			}
			out := stderr.String()
			if strings.ContainsAny(out, "\x1b\r") || strings.Contains(out, "waiting for approval") {
				t.Fatalf("stderr carries the gate's text raw, or shows a code:\n%q", out)
			}
			for _, line := range strings.Split(strings.TrimSuffix(out, "\n"), "\n") {
				if !strings.HasPrefix(line, "seal: error: ") && !strings.HasPrefix(line, "seal: hint: ") {
					t.Fatalf("stderr has a line of the gate's making: %q", line)
				}
			}
			if strings.Contains(out, "check that the Tang server is running") {
				t.Fatalf("hint blames the Tang server:\n%s", out)
			}
			for _, want := range tc.want {
				if !strings.Contains(out, want) {
					t.Errorf("stderr lacks %q:\n%s", want, out)
				}
			}
		})
	}
}

// TestInspectHostileHeader: seal inspect prints what a JWE's header says,
// which anyone may have written, escaped.
func TestInspectHostileHeader(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	jwe, _ := hostileGate(t, ctx, 500, "")
	parts := strings.SplitN(string(jwe), ".", 2)
	hdr, err := base64.RawURLEncoding.DecodeString(parts[0])
	if err != nil {
		t.Fatal(err)
	}
	var h map[string]any
	if err := json.Unmarshal(hdr, &h); err != nil {
		t.Fatal(err)
	}
	h["kid"] = "\x1b]0;owned\a"
	h["epk"].(map[string]any)["crv"] = "P-521\r\nseal: ok"
	h["clevis"].(map[string]any)["tang"].(map[string]any)["url"] = "http://gate\u202e:7500/\x1b[2J"
	hdr, _ = json.Marshal(h)
	hostile := base64.RawURLEncoding.EncodeToString(hdr) + "." + parts[1]
	var stdout, stderr bytes.Buffer
	if err := run(ctx, []string{"inspect"}, strings.NewReader(hostile), &stdout, &stderr); err != nil {
		t.Fatalf("seal inspect: %v", err)
	}
	out := stdout.String()
	if strings.ContainsAny(out, "\x1b\r\a\u202e") {
		t.Fatalf("seal inspect printed the header raw:\n%q", out)
	}
	for _, want := range []string{`tang "http://gate\u202e:7500/\x1b[2J"`, `kid: "\x1b]0;owned\a"`, `curve: "P-521\r\nseal: ok"`} {
		if !strings.Contains(out, want) {
			t.Errorf("stdout lacks %s:\n%s", want, out)
		}
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

// TestPendingMarksUnverified: seal pending marks a request whose code no
// host shows (a stock clevis client's), so the operator knows there is
// nothing to type; its code (which hashes points the network saw) does not
// approve it, seal approve --id does.
func TestPendingMarksUnverified(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	srv := testenv.StartGate(t, testenv.GateOptions{Operators: []string{"alice"}})
	token := srv.Tokens["alice"]
	adv, err := (&tang.Client{}).Advertisement(ctx, srv.URL, srv.Thp)
	if err != nil {
		t.Fatal(err)
	}
	exc, err := adv.ExchangeKey()
	if err != nil {
		t.Fatal(err)
	}
	epk, z, err := tang.Bind(exc)
	if err != nil {
		t.Fatal(err)
	}
	clear(z)
	b, err := tang.NewBlind(exc, epk)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Wipe()
	// As clevis sends it: no session, no commitment.
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, srv.URL+"/rec/"+exc.Thumbprint(), bytes.NewReader(must(json.Marshal(b.Request()))))
	req.Header.Set("Prefer", "wait=0")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	t.Setenv("SEALGATE_TOKEN", token)
	var stdout, stderr bytes.Buffer
	if err := run(ctx, []string{"pending", "--gate", srv.URL}, nil, &stdout, &stderr); err != nil {
		t.Fatalf("seal pending: %v", err)
	}
	list := srv.Pending()
	if len(list) != 1 {
		t.Fatalf("pending at the gate: %+v", list)
	}
	code := tang.ApprovalCode(b.Point())
	if want := list[0].ID + " "; !strings.Contains(stdout.String(), want) || !strings.Contains(stdout.String(), "none: the host cannot show one (approve --id)") || strings.Contains(stdout.String(), code) {
		t.Fatalf("seal pending lists:\n%s\nwant %s marked without a code, and not its code %s", stdout.String(), list[0].ID, code)
	}
	stdout.Reset()
	err = run(ctx, []string{"approve", code, "--gate", srv.URL}, nil, &stdout, &stderr)
	if !errors.Is(err, gate.ErrUnknownCode) {
		t.Fatalf("seal approve with the points' code: %v, want unknown", err)
	}
	if err := run(ctx, []string{"approve", "--id", list[0].ID, "--gate", srv.URL}, nil, &stdout, &stderr); err != nil {
		t.Fatalf("seal approve --id: %v", err)
	}
	if want := "request " + list[0].ID + " approved by alice\n"; stdout.String() != want {
		t.Fatalf("seal approve --id printed %q, want %q", stdout.String(), want)
	}
}

// TestTicketSecret: seal ticket-secret seals 32 random bytes, new ones
// each time, and writes nothing else.
func TestTicketSecret(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	tg := testenv.EmbeddedTang(t)
	var secrets [][]byte
	for range 2 {
		var stdout, stderr bytes.Buffer
		if err := run(ctx, []string{"ticket-secret", "tang", tg.Config()}, nil, &stdout, &stderr); err != nil {
			t.Fatal(err)
		}
		if stderr.Len() != 0 {
			t.Fatalf("stderr %q", stderr.String())
		}
		buf, err := unlock.Decrypt(ctx, stdout.Bytes(), nil)
		if err != nil {
			t.Fatal(err)
		}
		secrets = append(secrets, bytes.Clone(buf.Bytes()))
		buf.Destroy()
	}
	for _, s := range secrets {
		if len(s) != 32 || bytes.Equal(s, make([]byte, 32)) {
			t.Fatalf("secret of %d bytes: %x", len(s), s)
		}
	}
	if bytes.Equal(secrets[0], secrets[1]) {
		t.Fatal("two ticket secrets are equal")
	}
}
