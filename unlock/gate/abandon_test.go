package gate_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sealproxy/sealproxy/testenv"
	"github.com/sealproxy/sealproxy/unlock/gate"
	"github.com/sealproxy/sealproxy/unlock/tang"
)

// holdFirstClaim holds the first recovery that claims an approved point
// until release is closed, and hands its request context to the test. It
// returns a counter of the exchanges the gate ran.
func holdFirstClaim(f *fixture) (claimed chan context.Context, release chan struct{}, exchanges *atomic.Int64) {
	claimed, release, exchanges = make(chan context.Context, 1), make(chan struct{}), new(atomic.Int64)
	var first atomic.Bool
	gate.SetClaimedHook(f.g, func(ctx context.Context) {
		if first.CompareAndSwap(false, true) {
			claimed <- ctx
			<-release
		}
	})
	gate.SetExchangeHook(f.g, func() { exchanges.Add(1) })
	return claimed, release, exchanges
}

// approved makes a recovery request and approves it by id.
func (f *fixture) approved(t *testing.T) (string, *tang.Blind) {
	t.Helper()
	kid, b := f.blind(t)
	if status, st := f.postPoint(t, kid, b, nil); status != http.StatusAccepted {
		t.Fatalf("first recovery: %d %+v, want 202", status, st)
	} else if _, err := f.g.ApproveID(f.id(t, st.Code), "alice", "test"); err != nil {
		t.Fatal(err)
	}
	return kid, b
}

// serverGone waits until the gate saw the client of ctx go.
func serverGone(t *testing.T, ctx context.Context) {
	t.Helper()
	select {
	case <-ctx.Done():
	case <-time.After(30 * time.Second):
		t.Fatal("the gate did not notice its client went away")
	}
}

// waitEvent waits until the audit log has event:outcome.
func (f *fixture) waitEvent(t *testing.T, want string) {
	t.Helper()
	testenv.Eventually(t, 30*time.Second, "audit event "+want, func() bool {
		for _, e := range f.auditEvents(t) {
			if e.Event+":"+e.Outcome == want {
				return true
			}
		}
		return false
	})
}

const abandonedBefore = "abandon:client gone before the exchange; the approval waits for a retry"

// TestAbandonedBeforeExchange: the client of an approved recovery gives
// up while the gate is busy (held here between the claim and the
// exchange). The gate runs no exchange for it, audits it as abandoned,
// and the client's retry of the same point collects the approval, once.
func TestAbandonedBeforeExchange(t *testing.T) {
	f := newFixture(t, nil)
	claimed, release, exchanges := holdFirstClaim(f)
	kid, b := f.approved(t)

	ctx, cancel := context.WithCancel(testCtx(t))
	body, _ := json.Marshal(b.Request())
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, f.URL+"/rec/"+kid, strings.NewReader(string(body)))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/jwk+json")
	// Its own transport: the connection dies with the request.
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	gave := make(chan error, 1)
	go func() {
		resp, err := client.Do(req)
		if err == nil {
			resp.Body.Close()
		}
		gave <- err
	}()
	srv := <-claimed
	cancel() // the client's timeout
	if err := <-gave; err == nil {
		t.Fatal("the cancelled client got an answer")
	}
	serverGone(t, srv)
	close(release)
	f.waitEvent(t, abandonedBefore)
	if n := exchanges.Load(); n != 0 {
		t.Fatalf("%d exchanges for a client that was gone, want 0", n)
	}

	if status, _ := f.postPoint(t, kid, b, nil); status != http.StatusOK {
		t.Fatalf("the retry after the abandoned recovery: %d, want 200", status)
	}
	if status, _ := f.postPoint(t, kid, b, nil); status != http.StatusAccepted {
		t.Fatalf("the same point after its answer: %d, want 202 (waits for a new decision)", status)
	}
	if n := exchanges.Load(); n != 1 {
		t.Fatalf("%d exchanges, want 1", n)
	}
	f.wantEvents(t, "request:pending", "approve:approved", abandonedBefore, "release:answered", "request:pending")
}

// TestClaimedPointAnsweredOnce: a client that half-closes its connection
// (so the gate sees it go) can neither read an answer nor spend the
// approval; its retry is answered once: the one-time property survives
// giving points back.
func TestClaimedPointAnsweredOnce(t *testing.T) {
	f := newFixture(t, nil)
	claimed, release, exchanges := holdFirstClaim(f)
	kid, b := f.approved(t)

	// The first recovery, over a raw connection that half-closes after
	// the request: it can still read what the gate writes.
	conn, err := net.Dial("tcp", strings.TrimPrefix(f.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	body, _ := json.Marshal(b.Request())
	fmt.Fprintf(conn, "POST /rec/%s HTTP/1.1\r\nHost: gate\r\nContent-Type: application/jwk+json\r\nContent-Length: %d\r\n\r\n%s", kid, len(body), body)
	srv := <-claimed

	conn.(*net.TCPConn).CloseWrite()
	serverGone(t, srv)
	close(release)
	conn.SetReadDeadline(time.Now().Add(30 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("the half-closed client read %d, want 503", resp.StatusCode)
	}
	f.waitEvent(t, abandonedBefore)

	if status, _ := f.postPoint(t, kid, b, nil); status != http.StatusOK {
		t.Fatalf("the retry: %d, want 200", status)
	}
	if status, _ := f.postPoint(t, kid, b, nil); status != http.StatusAccepted {
		t.Fatalf("the same point after its answer: %d, want 202", status)
	}
	if n := exchanges.Load(); n != 1 {
		t.Fatalf("%d exchanges, want 1", n)
	}
	f.wantEvents(t, "request:pending", "approve:approved", abandonedBefore, "release:answered", "request:pending")
}

// TestAbandonedBeforeHandled: a recovery whose client gave up before the
// gate handled it (held here once read) starts no request, costs no
// request or release audit line and no exchange, only an abandon line.
func TestAbandonedBeforeHandled(t *testing.T) {
	f := newFixture(t, nil)
	_, _, exchanges := holdFirstClaim(f)
	received, release := make(chan context.Context, 1), make(chan struct{})
	gate.SetReceivedHook(f.g, func(ctx context.Context) {
		received <- ctx
		<-release
	})
	kid, b := f.blind(t)
	ctx, cancel := context.WithCancel(testCtx(t))
	body, _ := json.Marshal(b.Request())
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, f.URL+"/rec/"+kid, strings.NewReader(string(body)))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set(tang.HeaderSession, "s1")
	req.Header.Set(tang.HeaderHost, "web-1")
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	gave := make(chan error, 1)
	go func() {
		resp, err := client.Do(req)
		if err == nil {
			resp.Body.Close()
		}
		gave <- err
	}()
	srv := <-received
	cancel()
	if err := <-gave; err == nil {
		t.Fatal("the cancelled client got an answer")
	}
	serverGone(t, srv)
	close(release)
	f.waitEvent(t, "abandon:client gone before the request was handled")
	if list := f.g.Pending(); len(list) != 0 {
		t.Fatalf("pending = %+v, want none", list)
	}
	for _, e := range f.auditEvents(t) {
		if e.Event != "abandon" {
			t.Errorf("audit event %+v for a client that was gone", e)
		}
	}
	if n := exchanges.Load(); n != 0 {
		t.Fatalf("%d exchanges, want 0", n)
	}
}

// TestClaimedPointAskedAgain: while one recovery of an approved point is
// claimed, the point asked again is a new request that waits for a new
// decision (202), never a second answer; if the first client then goes,
// its approval is dropped, not put back beside the new request.
func TestClaimedPointAskedAgain(t *testing.T) {
	f := newFixture(t, nil)
	claimed, release, exchanges := holdFirstClaim(f)
	kid, b := f.approved(t)

	ctx, cancel := context.WithCancel(testCtx(t))
	body, _ := json.Marshal(b.Request())
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, f.URL+"/rec/"+kid, strings.NewReader(string(body)))
	if err != nil {
		t.Fatal(err)
	}
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	gave := make(chan error, 1)
	go func() {
		resp, err := client.Do(req)
		if err == nil {
			resp.Body.Close()
		}
		gave <- err
	}()
	srv := <-claimed
	if status, _ := f.postPoint(t, kid, b, nil); status != http.StatusAccepted {
		t.Fatalf("the point asked again while claimed: %d, want 202", status)
	}
	cancel()
	<-gave
	serverGone(t, srv)
	close(release)
	f.waitEvent(t, "abandon:client gone before the exchange; the approval is dropped: the point was asked again meanwhile")
	if status, _ := f.postPoint(t, kid, b, nil); status != http.StatusAccepted {
		t.Fatalf("the point after its approval was dropped: %d, want 202", status)
	}
	if list := f.g.Pending(); len(list) != 1 || list[0].State != gate.StatePending {
		t.Fatalf("pending = %+v, want the new request alone", list)
	}
	if n := exchanges.Load(); n != 0 {
		t.Fatalf("%d exchanges, want 0", n)
	}
}
