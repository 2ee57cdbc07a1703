package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sealproxy/sealproxy/testenv"
	"github.com/sealproxy/sealproxy/unlock"
	"github.com/sealproxy/sealproxy/unlock/gate"
	"github.com/sealproxy/sealproxy/unlock/tang"
)

// TestServeApproval runs `sealgate serve --approval required` in-process
// and opens a sealed secret through it: the client waits with a code, an
// operator (a token from `sealgate operator add`) approves it over the
// API, the secret comes back, and the audit file records it all.
func TestServeApproval(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	dir := filepath.Join(t.TempDir(), "db")
	var out bytes.Buffer
	if err := run(ctx, []string{"keygen", "--dir", dir}, nil, &out, io.Discard); err != nil {
		t.Fatal(err)
	}
	thp := strings.TrimSpace(out.String())
	out.Reset()
	if err := run(ctx, []string{"operator", "add", "alice", "--dir", dir}, nil, &out, io.Discard); err != nil {
		t.Fatal(err)
	}
	token := strings.TrimSpace(out.String())

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	audit := filepath.Join(t.TempDir(), "audit.jsonl")
	serveCtx, stop := context.WithCancel(ctx)
	served := make(chan error, 1)
	var logs bytes.Buffer
	go func() {
		served <- run(serveCtx, []string{"serve", "--dir", dir, "--listen", addr, "--approval", "required", "--audit", audit}, nil, io.Discard, &logs)
	}()
	url := "http://" + addr
	// Wait until it answers (it starts in the background).
	poll := time.NewTicker(20 * time.Millisecond)
	defer poll.Stop()
	for {
		_, err := (&tang.Client{}).Advertisement(ctx, url, thp)
		if err == nil {
			break
		}
		if !errors.Is(err, tang.ErrUnreachable) || ctx.Err() != nil {
			t.Fatal(err)
		}
		select {
		case err := <-served:
			t.Fatalf("serve returned early: %v", err)
		case <-poll.C:
		}
	}

	secret := []byte("through sealgate serve")
	jwe, err := unlock.Encrypt(ctx, "tang", []byte(`{"url":"`+url+`","thp":"`+thp+`"}`), secret, nil)
	if err != nil {
		t.Fatal(err)
	}
	pending := make(chan tang.Pending, 4)
	type result struct {
		plain []byte
		err   error
	}
	done := make(chan result, 1)
	go func() {
		buf, err := unlock.Decrypt(ctx, jwe, &unlock.Options{
			Startup:   unlock.NewStartup("test-host"),
			OnPending: func(p tang.Pending) { pending <- p },
		})
		if err != nil {
			done <- result{err: err}
			return
		}
		defer buf.Destroy()
		done <- result{plain: bytes.Clone(buf.Bytes())}
	}()
	p := <-pending
	op := &gate.Client{URL: url, Token: token}
	// Number matching: the operator's list has the request, not the code
	// the host shows; a random code is refused; the host's code approves.
	list, err := op.Pending(ctx)
	if err != nil || len(list) != 1 || list[0].ID == "" || !list[0].Verified || list[0].Host != "test-host" {
		t.Fatalf("pending: %v %+v, want the client's request", err, list)
	}
	raw, err := http.NewRequestWithContext(ctx, http.MethodGet, url+"/gate/pending", nil)
	if err != nil {
		t.Fatal(err)
	}
	raw.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(raw)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(body), list[0].ID) || strings.Contains(string(body), p.Code) {
		t.Fatalf("GET /gate/pending: %s; want request %s without the host's code %s", body, list[0].ID, p.Code)
	}
	random := "AAAA-AAAA"
	if random == p.Code {
		random = "BBBB-BBBB"
	}
	if _, err := op.Approve(ctx, random); !errors.Is(err, gate.ErrUnknownCode) {
		t.Fatalf("approve with a random code: %v, want refused", err)
	}
	if _, err := (&gate.Client{URL: url, Token: token + "x"}).Approve(ctx, p.Code); !errors.Is(err, gate.ErrUnauthorized) {
		t.Fatalf("approve with a wrong token: %v", err)
	}
	if _, err := op.Approve(ctx, p.Code); err != nil {
		t.Fatal(err)
	}
	r := <-done
	if r.err != nil || !bytes.Equal(r.plain, secret) {
		t.Fatalf("Decrypt = %q, %v", r.plain, r.err)
	}
	stop()
	if err := <-served; err != nil {
		t.Fatalf("serve: %v", err)
	}
	data, err := os.ReadFile(audit)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"event":"request"`, `"event":"unauthorized"`, `"event":"approve"`, `"operator":"alice"`, `"event":"release"`, `"host":"test-host"`} {
		if !strings.Contains(string(data), want) {
			t.Errorf("audit log lacks %s:\n%s", want, data)
		}
	}
	if strings.Contains(string(data)+logs.String(), token) {
		t.Error("the operator token appears in the audit log or the server's log")
	}
}

// TestServeTLS runs serve with --tls-cert, --tls-key and --client-ca:
// hosts recover over https without a certificate, an operator approves
// with a client certificate named like a listed operator.
func TestServeTLS(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	dir := filepath.Join(t.TempDir(), "db")
	var out bytes.Buffer
	if err := run(ctx, []string{"keygen", "--dir", dir}, nil, &out, io.Discard); err != nil {
		t.Fatal(err)
	}
	thp := strings.TrimSpace(out.String())
	if err := run(ctx, []string{"operator", "add", "alice", "--dir", dir}, nil, io.Discard, io.Discard); err != nil {
		t.Fatal(err)
	}
	ca := testenv.NewCA(t, "gate")
	files := t.TempDir()
	certFile, keyFile := ca.Server(t).WriteFiles(t, files, "gate")
	caFile := ca.WriteCA(t, files, "ca.pem")

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	serveCtx, stop := context.WithCancel(ctx)
	served := make(chan error, 1)
	go func() {
		served <- run(serveCtx, []string{"serve", "--dir", dir, "--listen", addr, "--approval", "required",
			"--tls-cert", certFile, "--tls-key", keyFile, "--client-ca", caFile}, nil, io.Discard, io.Discard)
	}()
	url := "https://" + addr
	host := &tang.Client{HTTP: &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.Pool()}}}}
	poll := time.NewTicker(20 * time.Millisecond)
	defer poll.Stop()
	for {
		_, err := host.Advertisement(ctx, url, thp)
		if err == nil {
			break
		}
		if !errors.Is(err, tang.ErrUnreachable) || ctx.Err() != nil {
			t.Fatal(err)
		}
		select {
		case err := <-served:
			t.Fatalf("serve returned early: %v", err)
		case <-poll.C:
		}
	}
	jwe, err := unlock.Encrypt(ctx, "tang", []byte(`{"url":"`+url+`","thp":"`+thp+`"}`), []byte("s"), &unlock.Options{Tang: host})
	if err != nil {
		t.Fatal(err)
	}
	pending := make(chan tang.Pending, 1)
	done := make(chan error, 1)
	go func() {
		buf, err := unlock.Decrypt(ctx, jwe, &unlock.Options{Tang: host, OnPending: func(p tang.Pending) { pending <- p }})
		if err == nil {
			buf.Destroy()
		}
		done <- err
	}()
	var p tang.Pending
	select {
	case p = <-pending:
	case <-ctx.Done():
		t.Fatal("no pending report")
	}
	op := &gate.Client{URL: url, HTTP: &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{
		RootCAs: ca.Pool(), Certificates: []tls.Certificate{ca.Client(t, "alice").TLSCertificate()},
	}}}}
	if _, err := op.Approve(ctx, p.Code); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("Decrypt: %v", err)
	}
	stop()
	if err := <-served; err != nil {
		t.Fatalf("serve: %v", err)
	}
}
