package gate_test

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/sealproxy/sealproxy/unlock"
	"github.com/sealproxy/sealproxy/unlock/gate"
	"github.com/sealproxy/sealproxy/unlock/tang"
)

// mitm is a man in the middle on the plain-HTTP path between a host and a
// gate: advertisements pass; each POST /rec goes through rec, which may
// rewrite the request's body and headers and the gate's answer.
type mitm struct {
	gate string
	rec  func(r *http.Request, body []byte) (fwdBody []byte, fwdHdr http.Header, rewrite func(status int, answer []byte) []byte)
}

func (m *mitm) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	hdr := r.Header.Clone()
	var rewrite func(int, []byte) []byte
	if r.Method == http.MethodPost && strings.HasPrefix(r.URL.Path, "/rec/") && m.rec != nil {
		body, hdr, rewrite = m.rec(r, body)
	}
	req, err := http.NewRequestWithContext(r.Context(), r.Method, m.gate+r.URL.Path, bytes.NewReader(body))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	req.Header = hdr
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	defer resp.Body.Close()
	answer, _ := io.ReadAll(resp.Body)
	if rewrite != nil {
		answer = rewrite(resp.StatusCode, answer)
	}
	w.Header().Set("Content-Type", resp.Header.Get("Content-Type"))
	w.WriteHeader(resp.StatusCode)
	w.Write(answer)
}

// startMITM puts m in front of f's gate and seals a secret to the gate
// as the host knows it: through the man in the middle's address.
func startMITM(t *testing.T, f *fixture, m *mitm) []byte {
	t.Helper()
	m.gate = f.URL
	srv := httptest.NewServer(m)
	t.Cleanup(srv.Close)
	return seal(t, "tang", `{"url":"`+srv.URL+`","thp":"`+f.Thp+`"}`, []byte("the key"))
}

// TestMITMSubstitutedPoints: a man in the middle swaps the host's blinded
// point for its own (whose blinding it knows, so an approval would give it
// the key) and passes the host's commitment and nonce on unchanged. The
// gate refuses the host's nonce, which does not open the commitment over
// the points it received; the host stops; nothing can be approved.
func TestMITMSubstitutedPoints(t *testing.T) {
	f := newFixture(t, nil)
	_, theirs := f.blind(t)
	var forwarded int
	var mu sync.Mutex
	jwe := startMITM(t, f, &mitm{rec: func(r *http.Request, body []byte) ([]byte, http.Header, func(int, []byte) []byte) {
		mu.Lock()
		forwarded++
		mu.Unlock()
		return mustJSON(theirs.Request()), r.Header.Clone(), nil
	}})
	done, pending := decryptAsync(testCtx(t), jwe, &unlock.Options{Startup: unlock.NewStartup("web-1")})
	r := wait(t, done)
	wantIs(t, r.err, tang.ErrCodeMismatch)
	mustContain(t, r.err.Error(), "refused this host's nonce")
	select {
	case p := <-pending:
		t.Fatalf("the host showed code %s for a substituted point", p.Code)
	default:
	}
	select {
	case req := <-f.Ready:
		t.Fatalf("a request with a substituted point became decidable: %+v", req)
	default:
	}
	list := f.g.Pending()
	if len(list) != 1 || list[0].Code != "" || list[0].Complete || !list[0].Verified {
		t.Fatalf("pending %+v, want one undecidable session without a code", list)
	}
	for _, e := range f.auditEvents(t) {
		if e.Event == "refuse" && strings.Contains(e.Outcome, "does not open its commitment") {
			return
		}
	}
	t.Fatalf("the refused nonce is not in the audit log: %+v (%d requests forwarded)", f.auditEvents(t), forwarded)
}

// TestMITMOwnCommitment: a man in the middle runs the exchange with the
// gate for its own point (its own commitment and nonce) and with the host
// for the host's, relaying the gate's nonce and showing the host the code
// the host computes, so that the host raises no alarm. It cannot fix the
// gate's code before the gate draws its nonce, nor the host's before the
// host reveals its own: the two codes differ, and approving the code on
// the host's console approves nothing. Then it tries new sessions at the
// gate until one shows the host's code: each try is a pending request an
// operator sees, the source's limit stops them, and none matches.
func TestMITMOwnCommitment(t *testing.T) {
	f := newFixture(t, nil)
	_, theirs := f.blind(t)
	ours := tang.NewExchange(theirs.Point())
	var (
		mu       sync.Mutex
		hostCode string
	)
	jwe := startMITM(t, f, &mitm{rec: func(r *http.Request, body []byte) ([]byte, http.Header, func(int, []byte) []byte) {
		hdr := r.Header.Clone()
		hostCommit, _ := tang.DecodeNonce(hdr.Get(tang.HeaderCommit))
		hdr.Set(tang.HeaderCommit, ours.Commitment())
		var nh []byte
		if v := hdr.Get(tang.HeaderReveal); v != "" {
			nh, _ = tang.DecodeNonce(v)
			hdr.Set(tang.HeaderReveal, ours.Reveal())
		}
		return mustJSON(theirs.Request()), hdr, func(status int, answer []byte) []byte {
			var st tang.Status
			if status != http.StatusAccepted || json.Unmarshal(answer, &st) != nil || st.Code == "" || nh == nil {
				return answer
			}
			ng, _ := tang.DecodeNonce(st.Nonce)
			st.Code = tang.SessionCode(nh, ng, hostCommit) // what the host expects
			mu.Lock()
			hostCode = st.Code
			mu.Unlock()
			return mustJSON(st)
		}
	}})
	done, pending := decryptAsync(testCtx(t), jwe, &unlock.Options{Startup: unlock.NewStartup("web-1")})
	req := f.next(t)
	if req.Arrived != 1 || !req.Verified {
		t.Fatalf("request %+v", req)
	}
	var shown tang.Pending
	select {
	case shown = <-pending:
	case r := <-done:
		t.Fatalf("Decrypt ended: %v", r.err)
	}
	mu.Lock()
	if shown.Code != hostCode {
		t.Fatalf("host shows %s, the man in the middle computed %s", shown.Code, hostCode)
	}
	mu.Unlock()
	if req.Code == shown.Code {
		t.Fatalf("the gate shows the host's code %s for the man in the middle's point (a 2^-40 chance)", req.Code)
	}
	// The operator types the code the host shows (number matching): it
	// matches nothing at the gate, and the man in the middle's request
	// stays pending, undecided.
	_, err := f.Operator(f.Token).Approve(testCtx(t), shown.Code)
	wantIs(t, err, gate.ErrUnknownCode)
	if list := f.g.Pending(); len(list) != 1 || list[0].ID != req.ID || list[0].State != gate.StatePending {
		t.Fatalf("after typing the host's code: %+v, want the man in the middle's request still pending", list)
	}

	// Trying again at the gate: every try is a visible pending request,
	// and the source's bound stops the tries.
	matched, refused := 0, 0
	for range gate.DefaultMaxPendingPerSource + 2 {
		_, b := f.blind(t)
		x := tang.NewExchange(b.Point())
		hdr := map[string]string{tang.HeaderSession: tang.NewSessionID(), tang.HeaderKeys: "1", tang.HeaderCommit: x.Commitment()}
		status, st := f.postPoint(t, req.Kids[0], b, hdr)
		if status == http.StatusTooManyRequests || status == http.StatusServiceUnavailable {
			refused++
			continue
		}
		if status != http.StatusAccepted || st.Nonce == "" || st.Code != "" {
			t.Fatalf("a committed session of one key: %d %+v, want 202 with the gate's nonce and no code", status, st)
		}
		hdr[tang.HeaderReveal] = x.Reveal()
		status, st = f.postPoint(t, req.Kids[0], b, hdr)
		ng, _ := tang.DecodeNonce(st.Nonce)
		if status != http.StatusAccepted || st.Code != x.Code(ng) {
			t.Fatalf("revealed: %d %+v, want 202 with the exchange's code", status, st)
		}
		if st.Code == shown.Code {
			matched++
		}
	}
	if matched != 0 || refused == 0 {
		t.Fatalf("%d tries matched the host's code, %d were refused", matched, refused)
	}
	if n := len(f.g.Pending()); n != gate.DefaultMaxPendingPerSource {
		t.Fatalf("%d pending requests, want every try visible up to the source's limit %d", n, gate.DefaultMaxPendingPerSource)
	}
}

// TestCommitReplay: a commitment replayed with other points, or changed
// within a session, or revealed early, is refused; a session needs the
// commitment's own points and nonce.
func TestCommitReplay(t *testing.T) {
	f := newFixture(t, nil)
	kid, b := f.blind(t)
	_, other := f.blind(t)
	x := tang.NewExchange(b.Point())
	sid := tang.NewSessionID()
	hdr := map[string]string{tang.HeaderSession: sid, tang.HeaderKeys: "2", tang.HeaderCommit: x.Commitment()}
	hdr[tang.HeaderReveal] = x.Reveal()
	if status, _ := f.postPoint(t, kid, b, hdr); status != http.StatusConflict {
		t.Fatalf("a nonce revealed before the gate's: %d, want 409", status)
	}
	delete(hdr, tang.HeaderReveal)
	if status, st := f.postPoint(t, kid, b, hdr); status != http.StatusAccepted || st.Nonce != "" || st.Code != "" {
		t.Fatalf("first of two keys: %d %+v, want 202 without nonce or code", status, st)
	}
	bad := map[string]string{tang.HeaderSession: sid, tang.HeaderKeys: "2", tang.HeaderCommit: tang.NewExchange(b.Point()).Commitment()}
	if status, _ := f.postPoint(t, kid, other, bad); status != http.StatusConflict {
		t.Fatalf("another commitment in the session: %d, want 409", status)
	}
	// The second key is not the one committed to.
	status, st := f.postPoint(t, kid, other, hdr)
	if status != http.StatusAccepted || st.Nonce == "" {
		t.Fatalf("second key: %d %+v, want 202 with the gate's nonce", status, st)
	}
	hdr[tang.HeaderReveal] = x.Reveal()
	if status, _ := f.postPoint(t, kid, other, hdr); status != http.StatusConflict {
		t.Fatalf("a nonce that does not open the commitment: %d, want 409", status)
	}
	if list := f.g.Pending(); len(list) != 1 || list[0].Code != "" || list[0].Complete {
		t.Fatalf("pending %+v, want one undecidable session", list)
	}
	// A nonce sent with the request that completes a session was sent
	// before the gate's existed: ignored, the host must reveal after.
	_, b1 := f.blind(t)
	x1 := tang.NewExchange(b1.Point())
	early := map[string]string{tang.HeaderSession: tang.NewSessionID(), tang.HeaderKeys: "1", tang.HeaderCommit: x1.Commitment(), tang.HeaderReveal: x1.Reveal()}
	if status, st := f.postPoint(t, kid, b1, early); status != http.StatusAccepted || st.Nonce == "" || st.Code != "" {
		t.Fatalf("a nonce with the completing request: %d %+v, want 202 with the gate's nonce and no code", status, st)
	}
	if status, st := f.postPoint(t, kid, b1, early); status != http.StatusAccepted || st.Code == "" {
		t.Fatalf("the nonce sent again: %d %+v, want 202 with the code", status, st)
	}
	// Malformed headers.
	for name, h := range map[string]map[string]string{
		"short commitment":       {tang.HeaderSession: tang.NewSessionID(), tang.HeaderCommit: "AAAA"},
		"commitment, no session": {tang.HeaderCommit: x.Commitment()},
		"reveal, no commitment":  {tang.HeaderSession: tang.NewSessionID(), tang.HeaderReveal: x.Reveal()},
		"reveal not base64url":   {tang.HeaderSession: tang.NewSessionID(), tang.HeaderCommit: x.Commitment(), tang.HeaderReveal: strings.Repeat("!", 43)},
	} {
		if status, _ := f.postPoint(t, kid, b, h); status != http.StatusBadRequest {
			t.Errorf("%s: %d, want 400", name, status)
		}
	}
}

// TestStockClientUnverified: a recovery without session headers (stock
// clevis) is held, marked as one whose code no host shows, and approvable
// by its id only: its code hashes points the network saw, so a man in the
// middle could grind another request to the code a real host shows.
func TestStockClientUnverified(t *testing.T) {
	f := newFixture(t, nil)
	kid, b := f.blind(t)
	status, st := f.postPoint(t, kid, b, nil)
	if status != http.StatusAccepted || st.Code != tang.ApprovalCode(b.Point()) || st.Nonce != "" {
		t.Fatalf("stock request: %d %+v", status, st)
	}
	req := f.next(t)
	if req.Verified || !req.Complete || req.Session {
		t.Fatalf("stock request %+v, want complete and not verified", req)
	}
	_, err := f.Operator(f.Token).Approve(testCtx(t), req.Code)
	wantIs(t, err, gate.ErrUnknownCode)
	if _, err := f.Operator(f.Token).ApproveID(testCtx(t), req.ID); err != nil {
		t.Fatal(err)
	}
	if status, _ := f.postPoint(t, kid, b, nil); status != http.StatusOK {
		t.Fatalf("approved stock request: %d, want 200", status)
	}
	f.wantEvents(t, "request:pending", "approve:wrong code 1 of 5", "approve:approved", "release:answered")
}

// TestSessionCodeKnownAnswer pins the derivation of commitments and
// codes, which docs/approval.md specifies.
func TestSessionCodeKnownAnswer(t *testing.T) {
	nh, ng := bytes.Repeat([]byte{1}, 32), bytes.Repeat([]byte{2}, 32)
	c := tang.Commitment(nh, []byte("point b"), []byte("point a"))
	if !bytes.Equal(c, tang.Commitment(nh, []byte("point a"), []byte("point b"))) {
		t.Fatal("the commitment depends on the order of the points")
	}
	got := base64.RawURLEncoding.EncodeToString(c) + " " + tang.SessionCode(nh, ng, c)
	if want := knownCommitAndCode; got != want {
		t.Fatalf("commitment and code %s, want %s; if the derivation changed on purpose, update docs/approval.md and this value", got, want)
	}
}

const knownCommitAndCode = "SgEYuNBOfJxUqLqc22aaokgO43e8QsvrWwztCRsDoLo JGYM-25NJ"
