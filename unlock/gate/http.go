package gate

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"mime"
	"net"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/sealproxy/sealproxy/unlock/tang"
)

// Request body bounds.
const (
	maxRecoveryRequest = 4 << 10 // one JWK point, as tang.Server
	maxOperatorRequest = 1 << 10 // {"code":"XXXX-XXXX"} or {"id":"..."}
)

var sessionID = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

// ServeHTTP serves the Tang protocol with POST /rec/{kid} held for
// approval, the operator API (GET /gate/pending, GET /gate/decisions,
// POST /gate/approve, POST /gate/deny) and the operator page (GET /gate/).
func (g *Gate) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch {
	case strings.HasPrefix(r.URL.Path, "/rec/") && r.Method == http.MethodPost:
		g.handleRec(w, r, strings.TrimPrefix(r.URL.Path, "/rec/"))
	case r.URL.Path == "/gate/pending" && r.Method == http.MethodGet:
		g.operator(w, r, g.handlePending)
	case r.URL.Path == "/gate/approve" && r.Method == http.MethodPost:
		g.operator(w, r, func(w http.ResponseWriter, r *http.Request, name string) { g.handleDecide(w, r, name, StateApproved) })
	case r.URL.Path == "/gate/decisions" && r.Method == http.MethodGet:
		g.operator(w, r, g.handleDecisions)
	case r.URL.Path == "/gate/metrics" && r.Method == http.MethodGet:
		g.operator(w, r, func(w http.ResponseWriter, r *http.Request, _ string) {
			g.mu.Lock()
			g.sweep() // count what lapsed since the last request
			g.mu.Unlock()
			g.metrics.handler().ServeHTTP(w, r)
		})
	case r.URL.Path == "/gate/deny" && r.Method == http.MethodPost:
		g.operator(w, r, func(w http.ResponseWriter, r *http.Request, name string) { g.handleDecide(w, r, name, StateDenied) })
	case r.URL.Path == "/gate" && r.Method == http.MethodGet:
		http.Redirect(w, r, "/gate/", http.StatusMovedPermanently)
	case strings.HasPrefix(r.URL.Path, "/gate/"):
		if !handleWeb(w, r) {
			http.NotFound(w, r)
		}
	case g.upstream != nil:
		g.upstream.serveAdv(w, r)
	default:
		g.tang.ServeHTTP(w, r)
	}
}

func source(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// recovery is one parsed POST /rec/{kid}.
type recovery struct {
	kid     string
	x       *tang.JWK
	point   []byte
	session string
	host    string
	keys    int
	commit  []byte // Sealgate-Commit
	reveal  []byte // Sealgate-Reveal
	source  string
	wait    time.Duration
	async   bool // "Prefer: respond-async": answer 202 at once, without holding
}

// parseRecovery checks a request as tang.Server would, then the session
// headers. It returns the HTTP status to refuse it with.
func (g *Gate) parseRecovery(w http.ResponseWriter, r *http.Request, kid string) (*recovery, int, error) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxRecoveryRequest))
	if err != nil {
		return nil, http.StatusBadRequest, errors.New("request body too large or unreadable")
	}
	var x tang.JWK
	if err := json.Unmarshal(body, &x); err != nil || x.D != "" || (x.Alg != "" && x.Alg != tang.AlgExchange) {
		return nil, http.StatusBadRequest, errors.New("request is not an ECMR public JWK")
	}
	if g.upstream != nil {
		if status, err := g.upstream.check(kid, &x); err != nil {
			return nil, status, err
		}
	} else {
		keys, err := g.keys(r)
		if err != nil {
			return nil, http.StatusInternalServerError, err
		}
		if err := keys.CheckRecover(kid, &x); err != nil {
			return nil, recoverStatus(err), err
		}
	}
	pt, err := x.Point()
	if err != nil {
		return nil, http.StatusBadRequest, err
	}
	rec := &recovery{kid: kid, x: &x, point: pt, source: source(r), keys: 1, wait: g.cfg.Hold}
	if id := r.Header.Get(tang.HeaderSession); id != "" {
		if !sessionID.MatchString(id) {
			return nil, http.StatusBadRequest, fmt.Errorf("%s must be 1 to %d base64url characters", tang.HeaderSession, tang.MaxSessionID)
		}
		rec.session = id
		rec.host = r.Header.Get(tang.HeaderHost)
		if len(rec.host) > tang.MaxHostLabel || strings.IndexFunc(rec.host, func(c rune) bool { return c < 0x20 || c > 0x7e }) >= 0 {
			return nil, http.StatusBadRequest, fmt.Errorf("%s must be at most %d printable ASCII characters", tang.HeaderHost, tang.MaxHostLabel)
		}
		if n := r.Header.Get(tang.HeaderKeys); n != "" {
			rec.keys, err = strconv.Atoi(n)
			if err != nil || rec.keys < 1 || rec.keys > tang.MaxSessionKey {
				return nil, http.StatusBadRequest, fmt.Errorf("%s must be a number from 1 to %d", tang.HeaderKeys, tang.MaxSessionKey)
			}
		}
		if v := r.Header.Get(tang.HeaderCommit); v != "" {
			if rec.commit, err = tang.DecodeNonce(v); err != nil {
				return nil, http.StatusBadRequest, fmt.Errorf("%s: %v", tang.HeaderCommit, err)
			}
		}
		if v := r.Header.Get(tang.HeaderReveal); v != "" {
			if rec.reveal, err = tang.DecodeNonce(v); err != nil || rec.commit == nil {
				return nil, http.StatusBadRequest, fmt.Errorf("%s must be %d bytes in base64url, with %s", tang.HeaderReveal, tang.NonceSize, tang.HeaderCommit)
			}
		}
	} else if r.Header.Get(tang.HeaderCommit) != "" || r.Header.Get(tang.HeaderReveal) != "" {
		return nil, http.StatusBadRequest, fmt.Errorf("%s and %s need %s", tang.HeaderCommit, tang.HeaderReveal, tang.HeaderSession)
	}
	// RFC 7240 preferences: "wait=N", the client stops listening after
	// N s; "respond-async", the client wants to know at once that its
	// request waits (to show the code), and will ask again.
	for _, pref := range r.Header.Values("Prefer") {
		for _, p := range strings.Split(pref, ",") {
			p = strings.TrimSpace(p)
			if v, ok := strings.CutPrefix(p, "wait="); ok {
				// A wait beyond what a Duration holds would wrap negative.
				if n, err := strconv.Atoi(v); err == nil && n >= 0 && n <= int(math.MaxInt64/time.Second) {
					rec.wait = min(rec.wait, time.Duration(n)*time.Second)
				}
			} else if strings.EqualFold(p, "respond-async") {
				rec.async = true
			}
		}
	}
	return rec, 0, nil
}

// keys returns the keys to answer with. A key directory that fails to
// re-read keeps serving its previous keys, as in tang.Server.
func (g *Gate) keys(r *http.Request) (*tang.Keys, error) {
	keys, err := g.cfg.Keys.Keys()
	if err != nil && keys != nil {
		g.log.LogAttrs(r.Context(), slog.LevelError, "reloading tang keys failed; serving the previous keys", slog.Any("err", err))
		return keys, nil
	}
	return keys, err
}

// recoverStatus maps an exchange error to tangd's status code.
func recoverStatus(err error) int {
	switch {
	case errors.Is(err, tang.ErrUnknownKey):
		return http.StatusNotFound
	case errors.Is(err, tang.ErrWrongKeyUse):
		return http.StatusForbidden
	case errors.Is(err, tang.ErrBadExchange), errors.Is(err, tang.ErrBadKey):
		return http.StatusBadRequest
	}
	return http.StatusInternalServerError
}

// errRefused carries the status of a recovery the gate will not hold.
type errRefused struct {
	status int
	msg    string
}

func (e *errRefused) Error() string { return e.msg }

// join finds the request rec belongs to, or creates it. It returns the
// request and whether it became ready for a decision. Called with g.mu held.
func (g *Gate) join(rec *recovery) (*request, bool, error) {
	key := "p:" + rec.kid + ":" + string(rec.point)
	if rec.session != "" {
		key = "s:" + rec.session
	}
	now := g.cfg.Now()
	if r := g.requests[key]; r != nil {
		if rec.session != "" && !bytes.Equal(r.commit, rec.commit) {
			return nil, false, &errRefused{http.StatusConflict, "session already in use with another " + tang.HeaderCommit}
		}
		if rec.session == "" || r.find(rec.kid, rec.point) != nil || r.state == StateDenied {
			return g.reveal(r, rec, false)
		}
		// A new key of a known session.
		switch {
		case r.source != rec.source || r.host != rec.host || r.keys != rec.keys:
			return nil, false, &errRefused{http.StatusConflict, "session already in use with another source, host label or key count"}
		case r.state != StatePending:
			return nil, false, &errRefused{http.StatusConflict, "session already decided; start a new session"}
		case r.complete():
			return nil, false, &errRefused{http.StatusConflict, "session already has all its keys"}
		}
		r.points = append(r.points, &point{kid: rec.kid, x: rec.point})
		r.recode()
		ev := r.event("request")
		ev.Kids, ev.Outcome = []string{rec.kid}, "pending"
		if err := g.audit(ev); err != nil {
			r.points = r.points[:len(r.points)-1]
			r.recode()
			return nil, false, err
		}
		return g.reveal(r, rec, true)
	}
	room, err := g.admit(rec, now)
	if err != nil {
		return nil, false, err
	}
	r := &request{
		key: key, id: newRequestID(), session: rec.session, host: rec.host, source: rec.source, keys: rec.keys,
		points: []*point{{kid: rec.kid, x: rec.point}}, commit: rec.commit, state: StatePending,
		created: now, expires: now.Add(g.cfg.PendingTTL), done: make(chan struct{}), changed: make(chan struct{}), room: room,
	}
	r.recode()
	ev := r.event("request")
	ev.Outcome = "pending"
	if err := g.audit(ev); err != nil {
		return nil, false, err
	}
	g.requests[key] = r
	g.metrics.requests.Inc()
	return g.reveal(r, rec, true)
}

// reveal moves r's code exchange on after rec joined it (added: rec
// brought a new point) and reports whether r became ready for a
// decision. A committed session that has all its points gets the gate's
// nonce, drawn only now that the host's commitment and points are fixed;
// the host's nonce must then open the commitment over the points the gate
// received, or points were substituted on the way: refused, and the
// request stays undecidable. Called with g.mu held.
func (g *Gate) reveal(r *request, rec *recovery, added bool) (*request, bool, error) {
	if r.commit == nil {
		return r, added && r.complete(), nil
	}
	if added && r.complete() {
		r.ng = make([]byte, tang.NonceSize)
		rand.Read(r.ng)
		r.signal()
		// A nonce sent with the request that completes the session was
		// sent before the gate's existed: not the protocol's order.
		return r, false, nil
	}
	if rec.reveal == nil || r.state != StatePending {
		return r, false, nil
	}
	switch {
	case r.ng == nil:
		return nil, false, &errRefused{http.StatusConflict, fmt.Sprintf("%s before the gate's nonce: the session has %d of its %d keys", tang.HeaderReveal, len(r.points), r.keys)}
	case r.nh != nil && !bytes.Equal(r.nh, rec.reveal):
		return nil, false, &errRefused{http.StatusConflict, "another " + tang.HeaderReveal + " for this session"}
	case r.nh != nil:
		return r, false, nil
	case !bytes.Equal(tang.Commitment(rec.reveal, r.xs()...), r.commit):
		return nil, false, &errRefused{http.StatusConflict, "the host's nonce does not open its commitment over the points the gate received: they were changed on the way; this session cannot be approved"}
	}
	r.nh = rec.reveal
	r.recode()
	ev := r.event("code")
	ev.Outcome = "agreed"
	if err := g.audit(ev); err != nil {
		r.nh = nil
		r.recode()
		return nil, false, err
	}
	r.signal()
	return r, true, nil
}

func (g *Gate) handleRec(w http.ResponseWriter, r *http.Request, kid string) {
	rec, status, err := g.parseRecovery(w, r, kid)
	if err != nil {
		g.reply(w, r, status, "", nil, slog.String("kid", kid), slog.Any("err", err))
		return
	}
	attrs := []slog.Attr{slog.String("kid", kid)}
	if g.test.received != nil {
		g.test.received(r.Context())
	}
	held := false
	for {
		if r.Context().Err() != nil {
			// The client gave up while its request waited for the CPU
			// (a start-up storm): nothing to join, decide or answer.
			g.abandon(w, r, Event{Event: "abandon", Host: rec.host, Source: rec.source, Kids: []string{kid}, Session: rec.session != "", Outcome: "client gone before the request was handled"}, attrs)
			return
		}
		g.mu.Lock()
		g.sweep()
		req, ready, err := g.join(rec)
		if err != nil {
			g.mu.Unlock()
			var refused *errRefused
			if errors.As(err, &refused) {
				g.metrics.refused.Inc()
				g.recordNoisy(Event{Event: "refuse", Host: rec.host, Source: rec.source, Kids: []string{kid}, Session: rec.session != "", Outcome: refused.msg})
				g.reply(w, r, refused.status, "application/json", jsonError(refused.msg), append(attrs, slog.String("err", refused.msg))...)
				return
			}
			g.reply(w, r, http.StatusInternalServerError, "", nil, append(attrs, slog.Any("err", fmt.Errorf("%w: %v", ErrAudit, err)))...)
			return
		}
		attrs = append(attrs[:1], slog.String("id", req.id)) // not the code: the gate's log must not tell it
		if ready && g.autoDecide(req) {
			g.mu.Unlock()
			continue
		}
		if ready {
			view := req.view()
			g.mu.Unlock()
			g.notify(view)
			if g.cfg.OnPending != nil {
				g.cfg.OnPending(view)
			}
			continue
		}
		switch req.state {
		case StateDenied:
			st := req.status()
			g.mu.Unlock()
			g.reply(w, r, http.StatusForbidden, "application/json", mustJSON(st), attrs...)
			return
		case StateApproved:
			p := req.find(rec.kid, rec.point)
			if p == nil || p.used {
				g.mu.Unlock()
				g.reply(w, r, http.StatusConflict, "application/json", jsonError("this recovery was already answered; start a new one"), attrs...)
				return
			}
			// Claimed before the exchange: no other recovery of the
			// point is answered meanwhile. A request with all its points
			// claimed is gone, so the point asked again waits for a new
			// decision (unclaim puts it back if nothing took its place).
			p.used = true
			if !slices.ContainsFunc(req.points, func(p *point) bool { return !p.used }) {
				delete(g.requests, req.key)
			}
			g.mu.Unlock()
			g.answer(w, r, req, p, rec, attrs)
			return
		}
		// Pending. A committed session waiting for the host's nonce is
		// answered at once: the host must hear the gate's nonce to go on.
		waitsForHost := req.ng != nil && req.nh == nil
		if held || rec.async || rec.wait <= 0 || waitsForHost || !g.hold(rec.source) {
			if !held && !rec.async && rec.wait > 0 && !waitsForHost {
				g.metrics.unheld.Inc()
			}
			st := req.status()
			g.mu.Unlock()
			g.reply(w, r, http.StatusAccepted, "application/json", mustJSON(st), attrs...)
			return
		}
		done, changed := req.done, req.changed
		g.mu.Unlock()
		t := time.NewTimer(rec.wait)
		select {
		case <-done:
		case <-changed:
		case <-t.C:
		case <-r.Context().Done():
		}
		t.Stop()
		g.unhold(rec.source)
		if r.Context().Err() != nil {
			return
		}
		held = true
	}
}

// answer does the exchange of an approved recovery whose point p it
// claimed, as tang.Server would, or has the upstream do it. A client that
// is gone before the exchange (it timed out while the gate was busy) costs
// no exchange; one gone before the answer is written gets none. Either
// way p is given back, so the client's retry of the same point collects
// the approval: no answer left the gate, and one never leaves twice.
func (g *Gate) answer(w http.ResponseWriter, r *http.Request, req *request, p *point, rec *recovery, attrs []slog.Attr) {
	if g.test.claimed != nil {
		g.test.claimed(r.Context())
	}
	ev := req.event("abandon")
	ev.Kids, ev.Operator = []string{rec.kid}, req.operator
	if r.Context().Err() != nil {
		g.mu.Lock()
		ev.Outcome = "client gone before the exchange; " + g.unclaim(req, p)
		g.mu.Unlock()
		g.abandon(w, r, ev, attrs)
		return
	}
	status, ctype, body, err := g.exchange(r, rec)
	g.mu.Lock()
	if r.Context().Err() != nil {
		ev.Outcome = "client gone during the exchange, answer discarded; " + g.unclaim(req, p)
		g.mu.Unlock()
		g.abandon(w, r, ev, attrs)
		return
	}
	ev = req.event("release")
	ev.Kids, ev.Operator, ev.Outcome = []string{rec.kid}, req.operator, "answered"
	if aerr := g.audit(ev); aerr != nil {
		g.unclaim(req, p)
		g.mu.Unlock()
		g.reply(w, r, http.StatusInternalServerError, "", nil, append(attrs, slog.Any("err", fmt.Errorf("%w: not answered: %v", ErrAudit, aerr)))...)
		return
	}
	g.mu.Unlock()
	if err != nil {
		attrs = append(attrs, slog.Any("err", err))
	}
	g.reply(w, r, status, ctype, body, attrs...)
}

// unclaim gives back the point p of req, whose recovery was not
// answered, and puts req back if its claim removed it, unless it expired
// or the point was asked again meanwhile (a new request took its place).
// It says which, for the audit log. Called with g.mu held.
func (g *Gate) unclaim(req *request, p *point) string {
	p.used = false
	switch cur := g.requests[req.key]; {
	case cur == req:
	case cur == nil && g.cfg.Now().Before(req.expires):
		g.requests[req.key] = req
	case cur == nil:
		return "the approval expired meanwhile"
	default:
		return "the approval is dropped: the point was asked again meanwhile"
	}
	return "the approval waits for a retry"
}

// abandon audits a recovery whose client went away (written as the
// refused ones are: anyone who saw a point can cause it) and answers it,
// though most likely nobody reads the answer.
func (g *Gate) abandon(w http.ResponseWriter, r *http.Request, ev Event, attrs []slog.Attr) {
	g.metrics.abandoned.Inc()
	g.recordNoisy(ev)
	g.reply(w, r, http.StatusServiceUnavailable, "application/json", jsonError("the client went away before its recovery was answered; ask again"), append(attrs, slog.String("err", ev.Outcome))...)
}

// exchange does the exchange for rec and returns the reply.
func (g *Gate) exchange(r *http.Request, rec *recovery) (int, string, []byte, error) {
	if g.test.exchange != nil {
		g.test.exchange()
	}
	if g.upstream != nil {
		return g.upstream.recover(r.Context(), rec.kid, rec.x)
	}
	keys, err := g.keys(r)
	if err != nil {
		return http.StatusInternalServerError, "", nil, err
	}
	y, err := keys.Recover(rec.kid, rec.x)
	if err != nil {
		return recoverStatus(err), "", nil, err
	}
	out, err := json.Marshal(y)
	if err != nil {
		return http.StatusInternalServerError, "", nil, err
	}
	return http.StatusOK, "application/jwk+json", out, nil
}

// operator authenticates an operator API call by its bearer token. A
// missing and a wrong token get the same answer. A metrics credential
// reaches GET /gate/metrics only, and a call that changes state must be
// JSON from no other origin (see sameOrigin).
func (g *Gate) operator(w http.ResponseWriter, r *http.Request, h func(http.ResponseWriter, *http.Request, string)) {
	token, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	name, role, valid := "", Role(""), false
	if ok {
		name, role, valid = g.cfg.Operators.Identify(strings.TrimSpace(token))
	} else if g.cfg.CertOperators && r.TLS != nil && len(r.TLS.VerifiedChains) > 0 {
		// crypto/tls verified the chain against ClientCAs; the name must
		// still be a listed operator, so `operator remove` revokes it.
		cn := r.TLS.VerifiedChains[0][0].Subject.CommonName
		if role, valid = g.cfg.Operators.RoleOf(cn); valid {
			name = cn
		}
	}
	if !valid {
		g.recordNoisy(Event{Event: "unauthorized", Source: source(r), Outcome: r.Method + " " + r.URL.Path})
		w.Header().Set("WWW-Authenticate", `Bearer realm="sealgate"`)
		g.reply(w, r, http.StatusUnauthorized, "application/json", jsonError("unauthorized"))
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	if role != RoleOperator && (role != RoleMetrics || r.URL.Path != "/gate/metrics") {
		msg := fmt.Sprintf("forbidden: %s has the %s role, which reads /gate/metrics only", name, RoleMetrics)
		if role != RoleMetrics {
			msg = fmt.Sprintf("forbidden: %s has a role this gate does not know; give it a new one with sealgate operator remove and add", name)
		}
		g.recordNoisy(Event{Event: "forbidden", Operator: name, Source: source(r), Outcome: r.Method + " " + r.URL.Path})
		g.reply(w, r, http.StatusForbidden, "application/json", jsonError(msg), slog.String("operator", name))
		return
	}
	if status, msg := sameOrigin(r); status != 0 {
		// A browser sends a client certificate to any page's request, as
		// it sends cookies: whatever the credential, a call that
		// changes state must not come from another site.
		g.recordNoisy(Event{Event: "cross-site", Operator: name, Source: source(r), Outcome: r.Method + " " + r.URL.Path + ": " + msg})
		g.reply(w, r, status, "application/json", jsonError(msg), slog.String("operator", name))
		return
	}
	h(w, r, name)
}

// crossOrigin refuses unsafe requests that a browser marks as coming from
// another origin (Sec-Fetch-Site other than same-origin or none), or whose
// Origin is not this host.
var crossOrigin = http.NewCrossOriginProtection()

// sameOrigin checks a call that changes state: it must come from no other
// origin, and be application/json, which no other site can send without
// a CORS preflight that the gate never grants. It returns the status and
// message to refuse with, or 0.
func sameOrigin(r *http.Request) (int, string) {
	if r.Method == http.MethodGet || r.Method == http.MethodHead {
		return 0, ""
	}
	if err := crossOrigin.Check(r); err != nil {
		return http.StatusForbidden, "cross-origin request refused: decide from the gate's own page, seal approve or seal deny"
	}
	if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || mt != "application/json" {
		return http.StatusUnsupportedMediaType, "Content-Type must be application/json"
	}
	return 0, ""
}

func (g *Gate) handlePending(w http.ResponseWriter, r *http.Request, name string) {
	reqs := g.Pending()
	if reqs == nil {
		reqs = []Request{}
	}
	// RequireCode tells the page whether a request without a code can be
	// approved at all.
	g.reply(w, r, http.StatusOK, "application/json", mustJSON(struct {
		Requests    []Request `json:"requests"`
		RequireCode bool      `json:"require_code"`
	}{reqs, g.cfg.RequireCode}), slog.String("operator", name))
}

func (g *Gate) handleDecisions(w http.ResponseWriter, r *http.Request, name string) {
	evs := g.Decisions()
	if evs == nil {
		evs = []Event{}
	}
	g.reply(w, r, http.StatusOK, "application/json", mustJSON(struct {
		Decisions []Event `json:"decisions"`
	}{evs}), slog.String("operator", name))
}

// handleDecide takes {"code":"XXXX-XXXX"}, the code the host shows, or
// {"id":"..."}, a request's id from GET /gate/pending (to deny, or to
// approve a request whose host shows no code).
func (g *Gate) handleDecide(w http.ResponseWriter, r *http.Request, name string, to State) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxOperatorRequest))
	if err != nil {
		g.reply(w, r, http.StatusRequestEntityTooLarge, "application/json", jsonError(fmt.Sprintf("request body larger than %d bytes", maxOperatorRequest)), slog.String("operator", name))
		return
	}
	var req struct {
		Code string `json:"code"`
		ID   string `json:"id"`
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil || dec.More() || (req.Code == "") == (req.ID == "") {
		g.reply(w, r, http.StatusBadRequest, "application/json", jsonError(`body must be {"code":"XXXX-XXXX"} (the code the host shows) or {"id":"..."} (a request id from GET /gate/pending)`), slog.String("operator", name))
		return
	}
	var d *Decision
	switch {
	case to == StateApproved && req.Code != "":
		d, err = g.Approve(req.Code, name, source(r))
	case to == StateApproved:
		d, err = g.ApproveID(req.ID, name, source(r))
	case req.Code != "":
		d, err = g.Deny(req.Code, name, source(r))
	default:
		d, err = g.DenyID(req.ID, name, source(r))
	}
	// Neither the typed code nor the id is logged: with two approvers the
	// request still waits after the first, and its code must not be
	// readable anywhere but on the host.
	attrs := []slog.Attr{slog.String("operator", name)}
	if d != nil {
		attrs = append(attrs, slog.String("id", d.ID))
	}
	switch {
	case errors.Is(err, ErrUnknownCode), errors.Is(err, ErrUnknownRequest):
		g.reply(w, r, http.StatusNotFound, "application/json", jsonError(err.Error()), attrs...)
	case errors.Is(err, ErrNotPending):
		g.reply(w, r, http.StatusConflict, "application/json", jsonError(err.Error()), attrs...)
	case errors.Is(err, ErrCodeRequired):
		g.reply(w, r, http.StatusForbidden, "application/json", jsonError(err.Error()), attrs...)
	case errors.Is(err, ErrLocked):
		g.reply(w, r, http.StatusTooManyRequests, "application/json", jsonError(err.Error()), attrs...)
	case err != nil:
		g.reply(w, r, http.StatusInternalServerError, "application/json", jsonError(err.Error()), append(attrs, slog.Any("err", err))...)
	default:
		g.reply(w, r, http.StatusOK, "application/json", mustJSON(d), attrs...)
	}
}

func jsonError(msg string) []byte {
	return mustJSON(struct {
		Error string `json:"error"`
	}{msg})
}

func mustJSON(v any) []byte {
	out, err := json.Marshal(v)
	if err != nil {
		panic(err) // only our own plain structs are marshalled
	}
	return out
}

func (g *Gate) reply(w http.ResponseWriter, r *http.Request, status int, ctype string, body []byte, attrs ...slog.Attr) {
	tang.Reply(g.log, "gate request", w, r, status, ctype, body, attrs...)
}
