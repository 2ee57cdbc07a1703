package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
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
	dir := t.TempDir()
	thp, err := tang.Keygen(dir)
	if err != nil {
		t.Fatal(err)
	}
	keys, err := tang.OpenKeyDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	ready := make(chan gate.Request, 4)
	g := gate.New(gate.Config{Keys: keys, OnPending: func(r gate.Request) { ready <- r }})
	srv := httptest.NewServer(g)
	defer srv.Close()
	jwe, err := unlock.Encrypt(ctx, "tang", []byte(`{"url":"`+srv.URL+`","thp":"`+thp+`"}`), []byte("secret"), nil)
	if err != nil {
		t.Fatal(err)
	}
	var stdout bytes.Buffer
	var stderr lockedBuffer
	code := make(chan int, 1)
	go func() {
		err := run(ctx, []string{"decrypt"}, bytes.NewReader(jwe), &stdout, &stderr)
		code <- cli.Report("seal", err, &stderr)
	}()
	req := receive(t, ctx, ready)
	// Deny only once seal shows the code: the operator decides on what the
	// host shows, and a denial before that leaves nothing to show.
	for !strings.Contains(stderr.String(), "waiting for approval") {
		if ctx.Err() != nil {
			t.Fatalf("seal never showed the code:\n%s", stderr.String())
		}
		time.Sleep(10 * time.Millisecond)
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
		"seal: waiting for approval of code " + req.Code + " at " + srv.URL + "\n",
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
	dir := t.TempDir()
	thp, err := tang.Keygen(dir)
	if err != nil {
		t.Fatal(err)
	}
	keys, err := tang.OpenKeyDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	ops := gate.OpenOperators(dir + "/" + gate.OperatorsFile)
	if _, err := ops.Add("alice"); err != nil {
		t.Fatal(err)
	}
	ready := make(chan gate.Request, 4)
	g := gate.New(gate.Config{Keys: keys, Operators: ops, CertOperators: true, OnPending: func(r gate.Request) { ready <- r }})
	ca := testenv.NewCA(t, "gate")
	srv := httptest.NewUnstartedServer(g)
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{ca.Server(t).TLSCertificate()}, ClientAuth: tls.VerifyClientCertIfGiven, ClientCAs: ca.Pool()}
	srv.StartTLS()
	defer srv.Close()
	files := t.TempDir()
	caFile := ca.WriteCA(t, files, "ca.pem")
	certFile, keyFile := ca.Client(t, "alice").WriteFiles(t, files, "alice")

	host := &tang.Client{HTTP: &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.Pool()}}}}
	jwe, err := unlock.Encrypt(ctx, "tang", []byte(`{"url":"`+srv.URL+`","thp":"`+thp+`"}`), []byte("secret"), &unlock.Options{Tang: host})
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
	req := receive(t, ctx, ready)
	t.Setenv("SEALGATE_TOKEN", "")
	tlsArgs := []string{"--gate", srv.URL, "--cacert", caFile, "--cert", certFile, "--key", keyFile}
	var stdout, stderr bytes.Buffer
	if err := run(ctx, append([]string{"pending"}, tlsArgs...), nil, &stdout, &stderr); err != nil {
		t.Fatalf("seal pending: %v", err)
	}
	if !strings.Contains(stdout.String(), req.Code) {
		t.Fatalf("seal pending lists:\n%s", stdout.String())
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

// lockedBuffer is a bytes.Buffer that a command writes while the test
// reads it.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
