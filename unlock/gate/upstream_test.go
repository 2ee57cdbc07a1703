package gate_test

import (
	"bytes"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/sealproxy/sealproxy/testenv"
	"github.com/sealproxy/sealproxy/unlock/gate"
	"github.com/sealproxy/sealproxy/unlock/tang"
)

// upstreamGate puts a gate in front of the Tang server at url.
func upstreamGate(t *testing.T, url string) (gateURL string, g *gate.Gate, ready chan gate.Request, token string) {
	t.Helper()
	gt := testenv.StartGate(t, testenv.GateOptions{
		Operators: []string{"alice"},
		Configure: func(c *gate.Config) { c.Keys, c.Upstream = nil, url },
	})
	return gt.URL, gt.Gate, gt.Ready, gt.Tokens["alice"]
}

// testUpstream seals through the gate (the advertisement passes through,
// signed by the upstream's key), then decrypts through it: held until
// approved, answered by the upstream; denied, refused.
func testUpstream(t *testing.T, up *testenv.Tang) {
	gateURL, _, ready, token := upstreamGate(t, up.URL)
	op := &gate.Client{URL: gateURL, Token: token}
	secret := []byte("behind the gate")
	jwe := seal(t, "tang", fmt.Sprintf(`{"url":%q,"thp":%q}`, gateURL, up.Thp), secret)

	done, _ := decryptAsync(testCtx(t), jwe, nil)
	req := recv(t, ready)
	if _, err := op.Approve(testCtx(t), req.Code); err != nil {
		t.Fatal(err)
	}
	if r := wait(t, done); r.err != nil || !bytes.Equal(r.plain, secret) {
		t.Fatalf("Decrypt through the gate: %q, %v", r.plain, r.err)
	}

	done, _ = decryptAsync(testCtx(t), jwe, nil)
	req = recv(t, ready)
	if _, err := op.Deny(testCtx(t), req.Code); err != nil {
		t.Fatal(err)
	}
	wantIs(t, wait(t, done).err, tang.ErrDenied)

	// The upstream's own answers pass through: an unknown kid is its 404
	// (after approval), a bad path is ours.
	resp, err := http.Get(gateURL + "/adv/" + up.Thp)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("GET /adv/THP through the gate: %v %v", resp.StatusCode, err)
	}
	resp.Body.Close()
	resp, err = http.Get(gateURL + "/other")
	if err != nil || resp.StatusCode != 404 {
		t.Fatalf("GET /other through the gate: %v %v", resp.StatusCode, err)
	}
	resp.Body.Close()
}

func TestUpstreamEmbeddedTang(t *testing.T) { testUpstream(t, testenv.EmbeddedTang(t)) }

// TestInteropUpstreamRealTang: the gate in front of Debian's tangd.
func TestInteropUpstreamRealTang(t *testing.T) { testUpstream(t, testenv.RealTang(t)) }

// TestUpstreamDown: an approved recovery whose upstream is gone is 502,
// which the client reports as the server being unreachable.
func TestUpstreamDown(t *testing.T) {
	up := testenv.EmbeddedTang(t)
	gateURL, _, ready, token := upstreamGate(t, up.URL)
	jwe := seal(t, "tang", fmt.Sprintf(`{"url":%q,"thp":%q}`, gateURL, up.Thp), []byte("x"))
	done, _ := decryptAsync(testCtx(t), jwe, nil)
	req := recv(t, ready)
	up.Stop()
	if _, err := (&gate.Client{URL: gateURL, Token: token}).Approve(testCtx(t), req.Code); err != nil {
		t.Fatal(err)
	}
	wantIs(t, wait(t, done).err, tang.ErrUnreachable)
}

func recv(t *testing.T, ready <-chan gate.Request) gate.Request {
	t.Helper()
	select {
	case r := <-ready:
		return r
	case <-testCtx(t).Done():
		t.Fatal("no request became ready for a decision")
	}
	return gate.Request{}
}

// TestUpstreamThatHolds: an upstream that answers 202 (another gate) is
// not passed through as this gate's pending answer: its code and nonce are
// not of this gate's exchange with the host. The host gets 502.
func TestUpstreamThatHolds(t *testing.T) {
	f := newFixture(t, nil)
	holding := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusAccepted)
		w.Write([]byte(`{"status":"pending","code":"AAAA-AAAA","keys":1,"arrived":1}`))
	}))
	defer holding.Close()
	gateURL, g, ready, _ := upstreamGate(t, holding.URL)
	kid, b := f.blind(t)
	errc := make(chan error, 1)
	go func() {
		_, err := (&tang.Client{}).Recover(testCtx(t), gateURL, kid, b)
		errc <- err
	}()
	req := recv(t, ready)
	if _, err := g.Approve(req.Code, "alice", "test"); err != nil {
		t.Fatal(err)
	}
	err := <-errc
	wantIs(t, err, tang.ErrUnreachable)
	mustContain(t, err.Error(), "HTTP 502")
}
