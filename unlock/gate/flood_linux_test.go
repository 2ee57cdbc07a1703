package gate_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sealproxy/sealproxy/unlock"
	"github.com/sealproxy/sealproxy/unlock/gate"
	"github.com/sealproxy/sealproxy/unlock/tang"
)

// TestFloodDoesNotLockOutPolicyHost is the flood of issue 11 over real
// sockets: 300 addresses in 300 different /24s (127.1.0.1, 127.1.1.1, ...;
// Linux routes all of 127/8 to lo) each start 8 pending requests, which
// fills the gate (1,024) and leaves the rest with 503 "gate full". A host
// on 127.0.0.1, whose policy rule approves it, then opens its sealed key
// at once, as `seal decrypt` does (one session), without an operator.
func TestFloodDoesNotLockOutPolicyHost(t *testing.T) {
	rules, err := gate.ParsePolicy([]byte("[[rule]]\nname = \"this host\"\naction = \"approve\"\nsources = [\"127.0.0.1\"]\n"))
	if err != nil {
		t.Fatal(err)
	}
	f := newFixture(t, func(c *gate.Config) { c.Rules = rules })
	kid, b := f.blind(t)
	body, _ := json.Marshal(b.Request())

	var accepted, full atomic.Int64
	var other atomic.Pointer[string] // the first answer that is not 202 or 503 "gate full"
	var wg sync.WaitGroup
	sem := make(chan struct{}, 8)
	for i := range 300 {
		src := netip.AddrFrom4([4]byte{127, byte(1 + i/256), byte(i % 256), 1})
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			dialer := &net.Dialer{LocalAddr: &net.TCPAddr{IP: src.AsSlice()}}
			tr := &http.Transport{DialContext: dialer.DialContext}
			defer tr.CloseIdleConnections()
			hc := &http.Client{Transport: tr}
			for j := range 8 {
				req, _ := http.NewRequestWithContext(testCtx(t), http.MethodPost, f.URL+"/rec/"+kid, bytes.NewReader(body))
				req.Header.Set("Prefer", "respond-async")
				req.Header.Set(tang.HeaderSession, fmt.Sprintf("flood-%d-%d", i, j))
				req.Header.Set(tang.HeaderKeys, "2")
				resp, err := hc.Do(req)
				if err != nil {
					t.Errorf("from %s: %v", src, err)
					return
				}
				answer, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				switch {
				case resp.StatusCode == http.StatusAccepted:
					accepted.Add(1)
				case resp.StatusCode == http.StatusServiceUnavailable:
					full.Add(1)
					if !strings.Contains(string(answer), `"error":"gate full: `) {
						msg := fmt.Sprintf("from %s: %d %s", src, resp.StatusCode, answer)
						other.CompareAndSwap(nil, &msg)
					}
				default:
					msg := fmt.Sprintf("from %s: %d %s", src, resp.StatusCode, answer)
					other.CompareAndSwap(nil, &msg)
				}
			}
		}()
	}
	wg.Wait()
	if accepted.Load() != gate.DefaultMaxPending || full.Load() != 300*8-gate.DefaultMaxPending {
		t.Errorf("flood: %d pending, %d refused as full; want %d and %d", accepted.Load(), full.Load(), gate.DefaultMaxPending, 300*8-gate.DefaultMaxPending)
	}
	if msg := other.Load(); msg != nil {
		t.Errorf("flood: an answer that is neither pending nor a clear \"gate full\": %s", *msg)
	}

	secret := []byte("the host's key")
	jwe, err := unlock.Encrypt(testCtx(t), "tang", []byte(f.Config()), secret, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(testCtx(t), 10*time.Second)
	defer cancel()
	start := time.Now()
	waited := false
	buf, err := unlock.Decrypt(ctx, jwe, &unlock.Options{Startup: unlock.NewStartup("web-1"), OnPending: func(tang.Pending) { waited = true }})
	if err != nil {
		t.Fatalf("the policy's host during the flood: %v", err)
	}
	defer buf.Destroy()
	if !bytes.Equal(buf.Bytes(), secret) || waited {
		t.Fatalf("the policy's host: got %q, waited for an operator: %v", buf.Bytes(), waited)
	}
	t.Logf("flood of %d requests from 300 /24s; the policy's host opened its key in %v", 300*8, time.Since(start))
}
