// Package gate is a Tang server that holds each recovery until an operator
// approves it: pending requests keyed by the blinded point, sessions that
// group one start-up's recoveries under one code, an operator API with
// bearer tokens, and an append-only audit log. See docs/approval.md.
package gate

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/sealproxy/sealproxy/unlock/tang"
)

// Defaults for the zero fields of Config.
const (
	DefaultHold                = 25 * time.Second
	DefaultPendingTTL          = 10 * time.Minute
	DefaultApprovalTTL         = 2 * time.Minute
	DefaultDeniedTTL           = time.Hour
	DefaultMaxPendingPerSource = 8
	DefaultMaxPending          = 1024
	// A network is a /24 (IPv4) or a /64 (IPv6): what one attacker
	// gets as easily as one address.
	DefaultMaxPendingPerNetwork = 64
	DefaultMaxPendingReserved   = 1024
	// A held POST /rec costs a connection and a goroutine until its hold
	// ends; past these bounds a pending recovery is answered 202 at once
	// (the client asks again), so a flood of polls cannot pin resources.
	DefaultMaxHeldPerSource = 32
	DefaultMaxHeld          = 4096
)

var (
	// ErrUnknownCode reports a code no pending request has.
	ErrUnknownCode = errors.New("no pending request with this code")
	// ErrNotPending reports a decision about a request that cannot take
	// one now: already decided, or a session whose keys have not all
	// arrived.
	ErrNotPending = errors.New("request cannot be decided now")
	// ErrAudit reports a decision refused because the audit log could not
	// record it.
	ErrAudit = errors.New("audit log failed")
	// ErrUnknownRequest reports a request id no pending request has.
	ErrUnknownRequest = errors.New("no pending request with this id")
	// ErrCodeRequired reports an approval by id that needs the code: the
	// request's host shows one, or the gate approves only by code
	// (Config.RequireCode).
	ErrCodeRequired = errors.New("approving this request needs the code the host shows")
	// ErrLocked reports an operator whose approvals are locked after too
	// many wrong codes.
	ErrLocked = errors.New("approvals locked after too many wrong codes")
)

// Wrong codes: WrongCodes of them within WrongCodeWindow lock the
// operator's approvals for LockTime (docs/approval.md, "Number matching").
const (
	WrongCodes      = 5
	WrongCodeWindow = 10 * time.Minute
	LockTime        = 10 * time.Minute
	// recentDecisions is how many decisions GET /gate/decisions keeps.
	recentDecisions = 20
)

// Config configures a Gate. Zero durations and limits mean the defaults.
type Config struct {
	// Keys are the Tang keys that answer approved recoveries.
	Keys tang.KeySource
	// Upstream, instead of Keys, is a Tang server (e.g. tangd) that
	// answers approved recoveries and the advertisements: the gate stands
	// in front of it. It must be reachable only through the gate.
	Upstream string
	// Operators authenticates the operator API; nil refuses every caller.
	Operators *Operators
	// CertOperators also accepts, over TLS, a client certificate that the
	// server verified (tls.Config.ClientCAs) and whose common name is a
	// listed operator: that operator, without a token.
	CertOperators bool
	// Audit records every request and decision; nil records nothing
	// (decisions are still logged).
	Audit Auditor
	// Log receives operational logs; nil discards them.
	Log *slog.Logger
	// Hold is how long POST /rec is held before a 202 answer; a client's
	// "Prefer: wait=N" can shorten it.
	Hold time.Duration
	// PendingTTL is how long an undecided request lives.
	PendingTTL time.Duration
	// ApprovalTTL is how long an approval waits to be collected.
	ApprovalTTL time.Duration
	// DeniedTTL is how long a denial keeps answering 403.
	DeniedTTL time.Duration
	// MaxPendingPerSource bounds the undecided requests of one source IP.
	MaxPendingPerSource int
	// MaxPendingPerNetwork bounds the undecided requests of one /24
	// (IPv4) or /64 (IPv6), except from reserved sources.
	MaxPendingPerNetwork int
	// MaxPending bounds the undecided requests from sources that are not
	// reserved.
	MaxPending int
	// Reserved are sources whose requests wait in a pool of their own,
	// MaxPendingReserved, as do the sources an approve rule names: a
	// flood from elsewhere cannot fill it (see admit).
	Reserved           []netip.Prefix
	MaxPendingReserved int
	// MaxHeldPerSource and MaxHeld bound the POST /rec requests held
	// open at once (of one source IP, and in all); past them a pending
	// recovery is answered 202 without waiting.
	MaxHeldPerSource int
	MaxHeld          int
	// OnPending is called (without locks held) when a request becomes
	// ready for a decision: a single recovery, or a session whose keys
	// all arrived.
	OnPending func(Request)
	// Approvers is how many distinct operators must approve a request
	// (the two-person rule with 2); zero means 1. One denial suffices,
	// and a policy rule's approval counts as all of them.
	Approvers int
	// Rules decide requests without an operator; the first that matches
	// a request ready for a decision applies (see Rule).
	Rules []Rule
	// Webhook, if set, is told of each request ready for a decision that
	// no rule decided, and of each operator locked out by wrong codes.
	Webhook *Webhook
	// RequireCode refuses approvals by request id: a request whose host
	// shows no code (stock clevis) can then only be denied or lapse.
	RequireCode bool
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// State is where a request stands.
type State string

const (
	StatePending  State = "pending"
	StateApproved State = "approved"
	StateDenied   State = "denied"
)

// Request is the operator's view of a pending recovery or session. It
// never carries the code over the API: the operator reads it on the host
// and types it (number matching).
type Request struct {
	// ID is an opaque random name for the request, to deny it (or
	// approve one without a code) without knowing its code.
	ID string `json:"id"`
	// Code is the gate's code, for in-process callers (OnPending, tests);
	// never marshalled, so no API answer, webhook or page shows it.
	Code     string    `json:"-"`
	State    State     `json:"state"`
	Session  bool      `json:"session"`
	Host     string    `json:"host,omitempty"`
	Source   string    `json:"source"`
	Kids     []string  `json:"kids"`
	Keys     int       `json:"keys"`
	Arrived  int       `json:"arrived"`
	Complete bool      `json:"complete"`
	Created  time.Time `json:"created"`
	Expires  time.Time `json:"expires"`
	Operator string    `json:"operator,omitempty"`
	Decided  time.Time `json:"decided,omitzero"`
	// Approvals are the operators who approved so far, when more than
	// one must (Config.Approvers).
	Approvals []string `json:"approvals,omitempty"`
	// Verified is true for a committed session, whose code the host shows
	// too (docs/approval.md, "Codes"); false for a stock clevis client's
	// request, whose code no host shows: the operator cannot compare
	// anything for it.
	Verified bool `json:"verified"`
}

// Decision is the outcome of Approve or Deny. With more than one
// approver needed, an approval that is not the last leaves Status
// pending and counts Approvals of Needed.
type Decision struct {
	ID string `json:"id"`
	// Code is the code the operator typed, if it decided by code.
	Code      string    `json:"code,omitempty"`
	Status    State     `json:"status"`
	Operator  string    `json:"operator"`
	Time      time.Time `json:"time"`
	Approvals int       `json:"approvals,omitempty"`
	Needed    int       `json:"needed,omitempty"`
}

// Gate holds recoveries for approval. It is an http.Handler: the Tang
// protocol plus the operator API under /gate/.
type Gate struct {
	cfg      Config
	tang     *tang.Server // with Keys
	upstream *upstream    // with Upstream
	log      *slog.Logger
	metrics  *metrics

	hooks   chan struct{} // webhook deliveries in flight
	hooksWG sync.WaitGroup
	closing context.Context // cancelled by Close
	stop    context.CancelFunc

	mu       sync.Mutex
	requests map[string]*request    // by key: "s:"+session id or "p:"+kid+":"+point
	wrong    map[string][]time.Time // each operator's wrong codes within WrongCodeWindow
	locked   map[string]time.Time   // operators locked out, until

	recentMu sync.Mutex
	recent   []Event        // the last recentDecisions decisions, without codes
	ruleUses [][]time.Time  // approvals by each rule with a Max, within its Per
	denials  []*request     // kept denials by rules, oldest first (bounded; see autoDecide)
	held     map[string]int // POST /rec requests held open, by source
	heldAll  int

	noisy noisyLimiter // audit lines of unauthenticated events, by source

	test testHooks
}

// testHooks let tests hold an approved recovery between its claim and the
// exchange, and count exchanges (export_test.go); nil in production.
type testHooks struct {
	received func(context.Context) // after a recovery was read, before it joins a request
	claimed  func(context.Context) // after a point is claimed, before the exchange
	exchange func()                // as the exchange starts
}

// hold counts a POST /rec about to be held open, if the bounds allow it;
// the caller holds g.mu and calls unhold when the hold ends.
func (g *Gate) hold(source string) bool {
	if g.held[source] >= g.cfg.MaxHeldPerSource || g.heldAll >= g.cfg.MaxHeld {
		return false
	}
	g.held[source]++
	g.heldAll++
	return true
}

func (g *Gate) unhold(source string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.heldAll--
	if g.held[source]--; g.held[source] <= 0 {
		delete(g.held, source)
	}
}

// request is one pending recovery, or all recoveries of a session.
type request struct {
	key       string
	id        string
	session   string
	host      string
	source    string
	keys      int
	points    []*point
	code      string
	commit    []byte // the host's commitment, in a committed session
	ng        []byte // the gate's nonce, drawn once all points arrived
	nh        []byte // the host's nonce, once it opened the commitment
	state     State
	created   time.Time
	expires   time.Time
	operator  string
	decided   time.Time
	approvals []string      // operators who approved, while more must
	done      chan struct{} // closed when decided
	changed   chan struct{} // closed (and replaced) when the exchange moves on
	room      room          // where it counts against the bounds (admit)
}

type point struct {
	kid string
	x   []byte // uncompressed encoding
	// used is set when a recovery claims the point, before its exchange;
	// it goes back to false only if that recovery's client left before
	// the answer was written (see answer), so an approval answers each
	// point at most once.
	used bool
}

// New returns a gate over cfg.Keys, or in front of cfg.Upstream.
func New(cfg Config) *Gate {
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&cfg.Hold, DefaultHold)
	def(&cfg.PendingTTL, DefaultPendingTTL)
	def(&cfg.ApprovalTTL, DefaultApprovalTTL)
	def(&cfg.DeniedTTL, DefaultDeniedTTL)
	if cfg.MaxPendingPerSource <= 0 {
		cfg.MaxPendingPerSource = DefaultMaxPendingPerSource
	}
	if cfg.MaxPending <= 0 {
		cfg.MaxPending = DefaultMaxPending
	}
	if cfg.MaxPendingPerNetwork <= 0 {
		cfg.MaxPendingPerNetwork = DefaultMaxPendingPerNetwork
	}
	if cfg.MaxPendingReserved <= 0 {
		cfg.MaxPendingReserved = DefaultMaxPendingReserved
	}
	if cfg.MaxHeldPerSource <= 0 {
		cfg.MaxHeldPerSource = DefaultMaxHeldPerSource
	}
	if cfg.MaxHeld <= 0 {
		cfg.MaxHeld = DefaultMaxHeld
	}
	g := &Gate{
		cfg: cfg, log: cfg.Log, requests: map[string]*request{}, wrong: map[string][]time.Time{}, locked: map[string]time.Time{}, held: map[string]int{}, hooks: make(chan struct{}, maxWebhooks),
		ruleUses: make([][]time.Time, len(cfg.Rules)),
	}
	g.closing, g.stop = context.WithCancel(context.Background())
	g.metrics = newMetrics(g)
	if cfg.Upstream != "" {
		g.upstream = newUpstream(cfg.Upstream, cfg.Log)
	} else {
		g.tang = tang.NewServer(cfg.Keys, cfg.Log)
	}
	return g
}

func (r *request) complete() bool { return len(r.points) >= r.keys }

// decidable is complete, and in a committed session also revealed: only
// then is there a code the host shows too.
func (r *request) decidable() bool { return r.complete() && (r.commit == nil || r.nh != nil) }

// signal wakes the recoveries held on r: the exchange moved on, and their
// hosts have something to hear.
func (r *request) signal() {
	close(r.changed)
	r.changed = make(chan struct{})
}

func (r *request) kids() []string {
	var out []string
	for _, p := range r.points {
		if !slices.Contains(out, p.kid) {
			out = append(out, p.kid)
		}
	}
	return out
}

func (r *request) view() Request {
	return Request{
		ID: r.id, Code: r.code, State: r.state, Session: r.session != "", Host: r.host, Source: r.source,
		Kids: r.kids(), Keys: r.keys, Arrived: len(r.points), Complete: r.decidable(), Verified: r.commit != nil,
		Created: r.created, Expires: r.expires, Operator: r.operator, Decided: r.decided,
		Approvals: slices.Clone(r.approvals),
	}
}

func (r *request) status() tang.Status {
	st := tang.Status{Status: string(r.state), Code: r.code, Host: r.host, Keys: r.keys, Arrived: len(r.points)}
	if r.ng != nil {
		st.Nonce = base64.RawURLEncoding.EncodeToString(r.ng)
	}
	switch r.state {
	case StatePending:
		st.Expires = r.expires
	case StateDenied:
		st.Operator, st.Time = r.operator, r.decided
	}
	return st
}

func (r *request) find(kid string, x []byte) *point {
	for _, p := range r.points {
		if p.kid == kid && string(p.x) == string(x) {
			return p
		}
	}
	return nil
}

func (r *request) xs() [][]byte {
	xs := make([][]byte, len(r.points))
	for i, p := range r.points {
		xs[i] = p.x
	}
	return xs
}

// recode sets the code: in a committed session the exchange's, once the
// host revealed its nonce (none before: there is nothing to compare yet);
// otherwise the code of the points, which no host shows.
func (r *request) recode() {
	switch {
	case r.commit == nil:
		r.code = tang.ApprovalCode(r.xs()...)
	case r.nh != nil:
		r.code = tang.SessionCode(r.nh, r.ng, r.commit)
	default:
		r.code = ""
	}
}

// Pending lists the undecided requests, oldest first.
func (g *Gate) Pending() []Request {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.sweep()
	var out []Request
	for _, r := range g.requests {
		if r.state == StatePending {
			out = append(out, r.view())
		}
	}
	slices.SortFunc(out, func(a, b Request) int { return a.Created.Compare(b.Created) })
	return out
}

// Approve approves the pending request whose gate-side code is code, for
// operator: the code the host shows, typed by the operator (number
// matching). Only a request whose host shows its code (a committed
// session) matches; a code that matches none counts against the operator
// (WrongCodes). Its recoveries are answered once each until the approval
// expires.
func (g *Gate) Approve(code, operator, source string) (*Decision, error) {
	return g.decide(ref{code: code}, operator, source, StateApproved)
}

// ApproveID approves the request with id whose host cannot show a code
// (stock clevis); one that shows a code needs Approve, and with
// Config.RequireCode none can be approved by id.
func (g *Gate) ApproveID(id, operator, source string) (*Decision, error) {
	return g.decide(ref{id: id}, operator, source, StateApproved)
}

// Deny denies the pending request with code: it answers 403 from now on.
func (g *Gate) Deny(code, operator, source string) (*Decision, error) {
	return g.decide(ref{code: code}, operator, source, StateDenied)
}

// DenyID denies the pending request with id: denying needs no proof.
func (g *Gate) DenyID(id, operator, source string) (*Decision, error) {
	return g.decide(ref{id: id}, operator, source, StateDenied)
}

// ref names a request by the code typed or by its id.
type ref struct{ code, id string }

var requestID = regexp.MustCompile(`^[A-Za-z0-9_-]{1,32}$`)

func newRequestID() string {
	b := make([]byte, 12)
	rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

func (g *Gate) decide(ref ref, operator, source string, to State) (*Decision, error) {
	event := "approve"
	if to == StateDenied {
		event = "deny"
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	g.sweep()
	now := g.cfg.Now()
	fail := func(r *request, err error, outcome string) (*Decision, error) {
		ev := Event{Event: event}
		if r != nil {
			ev = r.event(event)
		}
		ev.Operator, ev.Source, ev.Outcome = operator, source, outcome
		g.record(ev)
		return nil, err
	}
	if until, ok := g.locked[operator]; ok && to == StateApproved {
		if now.Before(until) {
			return fail(nil, fmt.Errorf("%w: %s may approve again at %s", ErrLocked, operator, until.UTC().Format("15:04:05 UTC")), "locked")
		}
		delete(g.locked, operator)
	}
	var r *request
	name := ""
	if ref.id != "" {
		if requestID.MatchString(ref.id) {
			for _, c := range g.requests {
				if c.id == ref.id {
					r = c
				}
			}
		}
		if r == nil {
			return fail(nil, fmt.Errorf("%w; list what waits again", ErrUnknownRequest), "unknown id")
		}
		name = "request " + r.id
		if to == StateApproved && r.commit != nil {
			return fail(r, fmt.Errorf("%w: the host of %s shows a code: type that code", ErrCodeRequired, name), "code required")
		}
		if to == StateApproved && g.cfg.RequireCode {
			return fail(r, fmt.Errorf("%w: this gate approves only by code (--require-code), and the host of %s cannot show one (stock clevis): deny it or let it expire", ErrCodeRequired, name), "code required")
		}
	} else {
		code, err := tang.NormalizeCode(ref.code)
		var match []*request
		if err == nil {
			for _, c := range g.requests {
				// Approving needs a code the host shows; a request without
				// one (its code hashes points the network saw) matches
				// only a denial.
				if c.code != "" && (to == StateDenied || c.commit != nil) && subtle.ConstantTimeCompare([]byte(c.code), []byte(code)) == 1 {
					match = append(match, c)
				}
			}
		} else {
			code = "" // not echoed: it is not a code
		}
		switch {
		case len(match) == 0 && to == StateApproved:
			return g.wrongCode(code, operator, source, now)
		case len(match) == 0:
			return fail(nil, fmt.Errorf("%w %s", ErrUnknownCode, code), "unknown code")
		case len(match) > 1:
			return fail(nil, fmt.Errorf("%w: %d requests have code %s; deny them and let the hosts retry", ErrNotPending, len(match), code), "ambiguous code")
		}
		r, name = match[0], "code "+code
	}
	switch {
	case r.state != StatePending:
		return fail(r, fmt.Errorf("%w: %s was already %s by %s", ErrNotPending, name, r.state, r.operator), "already decided")
	case !r.complete():
		return fail(r, fmt.Errorf("%w: session %s has %d of its %d keys; wait for the rest", ErrNotPending, name, len(r.points), r.keys), "session incomplete")
	}
	d := &Decision{ID: r.id, Status: to, Operator: operator, Time: now}
	if ref.code != "" {
		d.Code = r.code
	}
	if need := max(1, g.cfg.Approvers); to == StateApproved && need > 1 {
		if slices.Contains(r.approvals, operator) {
			return fail(r, fmt.Errorf("%w: %s already approved %s; %d more operators must", ErrNotPending, operator, name, need-len(r.approvals)), "same operator again")
		}
		if n := len(r.approvals) + 1; n < need {
			ev := r.event(event)
			ev.Operator, ev.Source, ev.Outcome, ev.Time = operator, source, fmt.Sprintf("approval %d of %d", n, need), now
			if err := g.audit(ev); err != nil {
				return nil, fmt.Errorf("%w: not approved: %v", ErrAudit, err)
			}
			r.approvals = append(r.approvals, operator)
			d.Status, d.Approvals, d.Needed = StatePending, n, need
			return d, nil
		}
	}
	if err := g.apply(r, to, operator, source, now); err != nil {
		return nil, err
	}
	if len(r.approvals) > 0 && to == StateApproved {
		r.approvals = append(r.approvals, operator)
		r.operator = strings.Join(r.approvals, ",")
		d.Approvals, d.Needed = len(r.approvals), len(r.approvals)
	}
	return d, nil
}

// wrongCode answers an approval whose code matched nothing: counted
// against the operator, audited, and the WrongCodes-th within
// WrongCodeWindow locks the operator's approvals for LockTime. Called
// with g.mu held.
func (g *Gate) wrongCode(code, operator, source string, now time.Time) (*Decision, error) {
	recent := slices.DeleteFunc(g.wrong[operator], func(t time.Time) bool { return now.Sub(t) >= WrongCodeWindow })
	recent = append(recent, now)
	g.wrong[operator] = recent
	// The typed code is not audited: a near miss of a real code would
	// tell the audit log's readers most of it.
	g.record(Event{Event: "approve", Operator: operator, Source: source, Outcome: fmt.Sprintf("wrong code %d of %d", len(recent), WrongCodes)})
	err := fmt.Errorf("%w %s: type the code the host shows on its console or journal (wrong code %d of %d within %s)", ErrUnknownCode, code, len(recent), WrongCodes, WrongCodeWindow)
	if code == "" {
		err = fmt.Errorf("%w: a code is XXXX-XXXX, as the host shows it (wrong code %d of %d within %s)", ErrUnknownCode, len(recent), WrongCodes, WrongCodeWindow)
	}
	if len(recent) < WrongCodes {
		return nil, err
	}
	until := now.Add(LockTime)
	g.locked[operator] = until
	delete(g.wrong, operator)
	outcome := fmt.Sprintf("%d wrong codes within %s: approvals locked until %s", WrongCodes, WrongCodeWindow, until.UTC().Format(time.RFC3339))
	g.record(Event{Time: now, Event: "lock", Operator: operator, Source: source, Outcome: outcome})
	g.log.Warn("operator locked out", "operator", operator, "remote", source, "until", until)
	g.notifyLock(operator, source, until)
	return nil, fmt.Errorf("%w; approvals by %s are locked until %s", err, operator, until.UTC().Format("15:04:05 UTC"))
}

// Decisions returns the last decisions (approve, deny, expire and lock
// events, including refused attempts), newest first. They carry request
// ids, never codes.
func (g *Gate) Decisions() []Event {
	g.mu.Lock()
	g.sweep()
	g.mu.Unlock()
	g.recentMu.Lock()
	defer g.recentMu.Unlock()
	out := slices.Clone(g.recent)
	slices.Reverse(out)
	return out
}

// apply records and makes a decision about r. Called with g.mu held.
func (g *Gate) apply(r *request, to State, operator, source string, now time.Time) error {
	event := "approve"
	if to == StateDenied {
		event = "deny"
	}
	ev := r.event(event)
	ev.Operator, ev.Source, ev.Outcome = operator, source, string(to)
	ev.Time = now
	if err := g.audit(ev); err != nil {
		return fmt.Errorf("%w: not %s: %v", ErrAudit, to, err)
	}
	r.state, r.operator, r.decided = to, operator, now
	if to == StateApproved {
		r.expires = now.Add(g.cfg.ApprovalTTL)
	} else {
		r.expires = now.Add(g.cfg.DeniedTTL)
	}
	close(r.done)
	g.metrics.decision(r, to, operator, now)
	g.log.Info("gate decision", "id", r.id, "decision", string(to), "operator", operator, "host", r.host, "remote", r.source)
	return nil
}

// sweep drops requests whose time is up, and writes the audit summaries
// of suppressed events. Called with g.mu held.
func (g *Gate) sweep() {
	g.flushNoisy()
	now := g.cfg.Now()
	for key, r := range g.requests {
		if now.Before(r.expires) {
			continue
		}
		delete(g.requests, key)
		switch r.state {
		case StatePending:
			g.metrics.expired.WithLabelValues("pending").Inc()
			g.record(r.with(r.event("expire"), "pending request expired"))
		case StateApproved:
			g.metrics.expired.WithLabelValues("approved").Inc()
			g.record(r.with(r.event("expire"), "approval expired before it was used"))
		}
	}
}

func (r *request) with(e Event, outcome string) Event {
	e.Outcome = outcome
	return e
}

func (r *request) event(name string) Event {
	return Event{Event: name, ID: r.id, Host: r.host, Source: r.source, Session: r.session != "", Keys: r.keys, Kids: r.kids()}
}

// audit writes e to the audit log, stamping the time if unset.
func (g *Gate) audit(e Event) error {
	if e.Time.IsZero() {
		e.Time = g.cfg.Now()
	}
	if g.cfg.Audit != nil {
		if err := g.cfg.Audit.Record(e); err != nil {
			return err
		}
	}
	switch e.Event {
	case "approve", "deny", "expire", "lock":
		g.recentMu.Lock()
		if len(g.recent) == recentDecisions {
			g.recent = slices.Delete(g.recent, 0, 1)
		}
		g.recent = append(g.recent, e)
		g.recentMu.Unlock()
	}
	return nil
}

// record is audit for events that go ahead even if the log fails; the
// failure is logged.
func (g *Gate) record(e Event) {
	if err := g.audit(e); err != nil {
		g.log.Error("audit log failed", "event", e.Event, "id", e.ID, "err", err)
	}
}
