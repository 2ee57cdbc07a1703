package keyring

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/sealproxy/sealproxy/proxy/config"
	"github.com/sealproxy/sealproxy/unlock"
	"github.com/sealproxy/sealproxy/unlock/tang"
	"github.com/sealproxy/sealproxy/vault"
)

// MaxConcurrentOpens bounds the keys recovered at once: each recovery
// allocates locked memory, and memguard can hang when mlock fails.
const MaxConcurrentOpens = 4

// The errors a command tells apart to give its hints. They are the
// unlock/tang sentinels themselves, so errors.Is matches either name.
var (
	// ErrDenied: an operator denied a recovery at a gate.
	ErrDenied = tang.ErrDenied
	// ErrCodeMismatch: a gate showed another approval code than this
	// host's (something between them changed the request).
	ErrCodeMismatch = tang.ErrCodeMismatch
	// ErrGateFull: a gate refuses new requests, too many are pending.
	ErrGateFull = tang.ErrGateFull
	// ErrUnreachable: a Tang server (or gate) did not answer.
	ErrUnreachable = tang.ErrUnreachable
	// ErrSessionLost: a gate no longer has the approval request
	// (restarted); a retry asks again with a new code.
	ErrSessionLost = tang.ErrSessionLost
)

// UnlockError is a start-up or reload that could not open every key: the
// keys still locked and why, each. It unwraps to their errors.
type UnlockError struct {
	// After is how long we waited when the [unlock] timeout ran out;
	// zero when a key failed for good before that.
	After  time.Duration
	Locked []KeyFailure
}

// KeyFailure is one key that could not be opened.
type KeyFailure struct {
	Key      string // the [[key]] name
	Attempts int
	Err      error
}

func (e *UnlockError) Error() string {
	var b strings.Builder
	if e.After > 0 {
		fmt.Fprintf(&b, "gave up unlocking after %v ([unlock] timeout): ", e.After)
	}
	fmt.Fprintf(&b, "%d key(s) still locked", len(e.Locked))
	for i, f := range e.Locked {
		sep := ": "
		if i > 0 {
			sep = "; "
		}
		fmt.Fprintf(&b, "%skey %q", sep, f.Key)
		if f.Attempts > 1 {
			fmt.Fprintf(&b, " (%d attempts)", f.Attempts)
		}
		fmt.Fprintf(&b, ": %v", f.Err)
	}
	return b.String()
}

func (e *UnlockError) Unwrap() []error {
	out := make([]error, len(e.Locked))
	for i, f := range e.Locked {
		out[i] = f.Err
	}
	return out
}

// errAbandoned is the reason of a key whose recovery was stopped because
// another key failed for good.
var errAbandoned = errors.New("not waited for: another key failed")

// hostLabel names this host to a gate's operator.
func hostLabel() string {
	h, err := os.Hostname()
	if err != nil || h == "" {
		return "sealproxy"
	}
	return h
}

// retryable reports an error worth trying again after a pause: a Tang
// server (or every server an sss share needs) that did not answer, a
// gate full of pending requests (a flood ends, or is cleared), or a gate
// that lost the session (restarted): the retry is a new session.
func retryable(err error) bool {
	return (errors.Is(err, tang.ErrUnreachable) || errors.Is(err, tang.ErrGateFull) || errors.Is(err, tang.ErrSessionLost)) &&
		!errors.Is(err, context.Canceled)
}

// Used returns the keys cfg's listeners and pool services use, in file
// order, and the [tickets] secret: only those are opened.
func Used(cfg *config.Config) []*config.Key {
	used := map[string]bool{}
	for _, l := range cfg.Listeners {
		if l.Mode != config.ModeEncrypt {
			for _, n := range l.Keys {
				used[n] = true
			}
		}
		if l.Upstream.ClientKey != "" {
			used[l.Upstream.ClientKey] = true
		}
	}
	for _, s := range cfg.Pool.Services {
		for _, n := range s.Keys {
			used[n] = true
		}
		if s.Key != "" {
			used[s.Key] = true
		}
	}
	var out []*config.Key
	for i := range cfg.Keys {
		// An ACME key not issued yet has nothing to open: listeners
		// serve without it until its first issue.
		if used[cfg.Keys[i].Name] && !cfg.Pending(&cfg.Keys[i]) {
			out = append(out, &cfg.Keys[i])
		}
	}
	if k := ticketsKey(cfg); k != nil {
		out = append(out, k)
	}
	return out
}

// ticketsKey is the [tickets] secret as a key to open (last, named
// config.TicketsName, which no [[key]] may take), or nil: it is
// recovered with the keys, in the same approval request group, and kept
// and closed as they are.
func ticketsKey(cfg *config.Config) *config.Key {
	if !cfg.Tickets.Shared() {
		return nil
	}
	return &config.Key{Name: config.TicketsName, Source: cfg.Tickets.Source}
}

func isTickets(k *config.Key) bool { return k.Name == config.TicketsName && k.Cert == "" }

// idOf is keyID, kept apart for the ticket secret: the same file named
// as a [[key]] is another thing opened (and fails as one or the other).
func idOf(cfg *config.Config, k *config.Key) string {
	if isTickets(k) {
		return "tickets\x00" + keyID(cfg, k.Source)
	}
	return keyID(cfg, k.Source)
}

// Tickets returns the wrapper of session tickets under the [tickets]
// secret Open recovered, with the configuration's epochs (now: the
// clock, nil for time.Now), or nil without [tickets].
func (g *Generation) Tickets(cfg *config.Config, now func() time.Time) (*vault.Tickets, error) {
	k := ticketsKey(cfg)
	if k == nil {
		return nil, nil
	}
	id := idOf(cfg, k)
	g.r.mu.Lock()
	key, ok := g.r.keys[id]
	g.r.mu.Unlock()
	s, isSecret := key.(*vault.TicketSecret)
	if !ok || !isSecret {
		return nil, fmt.Errorf("the [tickets] secret %s is not open", cfg.Tickets.Source)
	}
	g.use(id, k.Name)
	return s.Tickets(vault.TicketPolicy{Period: cfg.Tickets.Rotation, Past: cfg.Tickets.Past(), Now: now}), nil
}

// sealedJWE reads a sealed key's JWE, or nil for other keys and a file
// that cannot be read (the recovery reports that). Open reads it once
// per key and hands the bytes on: to the approval request group, to the
// logs and status lines (its Tang servers), and to vault.Open, so all of
// them see one file even if it is replaced meanwhile.
func (r *Ring) sealedJWE(cfg *config.Config, k *config.Key) []byte {
	data, ok, err := r.readSealed(k.Source, &vault.Options{BaseDir: cfg.Dir})
	if !ok || err != nil {
		return nil
	}
	return data
}

// jweURLs lists the Tang servers a JWE names, in order, once each.
func jweURLs(data []byte) []string {
	n, err := unlock.Inspect(data)
	if err != nil {
		return nil
	}
	var urls []string
	var walk func(*unlock.Node)
	walk = func(n *unlock.Node) {
		if n.URL != "" && !slices.Contains(urls, n.URL) {
			urls = append(urls, n.URL)
		}
		for _, c := range n.Shares {
			walk(c)
		}
	}
	walk(n)
	return urls
}

// Open opens, concurrently, every key cfg's listeners use (Used) that
// the ring does not hold yet. See OpenKeys.
func (g *Generation) Open(ctx context.Context, cfg *config.Config) error {
	return g.OpenKeys(ctx, cfg, Used(cfg)...)
}

// OpenKeys opens, concurrently, the keys of cfg in keys that the ring
// does not hold yet. A key whose Tang server is unreachable is retried
// with exponential backoff until [unlock] timeout; any other failure
// stops the others at once and the error is an *UnlockError. The sealed
// keys' first attempts form one approval request group, so a gate shows
// one code for all of them. On failure the keys this call opened stay in
// the generation, for Discard to close.
func (g *Generation) OpenKeys(ctx context.Context, cfg *config.Config, keys ...*config.Key) error {
	r, st := g.r, g.r.st
	var todo []*config.Key
	ids := map[string]string{} // by name: each key's identity before its file is read
	for _, k := range keys {
		id := idOf(cfg, k)
		ids[k.Name] = id
		r.mu.Lock()
		_, open := r.keys[id]
		r.mu.Unlock()
		if open {
			g.use(id, k.Name)
			continue
		}
		todo = append(todo, k)
	}
	if len(todo) == 0 {
		return nil
	}
	// Each sealed file is read here, once.
	jwes := map[string][]byte{}
	for _, k := range todo {
		if data := r.sealedJWE(cfg, k); data != nil {
			jwes[k.Name] = data
		}
	}
	u := cfg.Unlock
	ctx, cancelTimeout := context.WithTimeout(ctx, u.Timeout)
	defer cancelTimeout()
	ctx, abandon := context.WithCancelCause(ctx)
	defer abandon(nil)

	st.begin(len(todo))
	grp := r.prepare(todo, jwes)
	defer grp.startup.Close() // after wg.Wait: wipes the recoveries no key used
	var (
		wg       sync.WaitGroup
		sem      = make(chan struct{}, MaxConcurrentOpens)
		mu       sync.Mutex
		failures = map[string]KeyFailure{}
	)
	for _, k := range todo {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// The sealed keys of the request group do not take a slot:
			// a gate approves the session only once every key announced
			// to it arrived, so a key waiting for a slot behind keys held
			// for that approval would hold them all until the timeout.
			// The bound is about locked memory, which a recovery
			// allocates (CEK, plaintext) once answered, not while held;
			// start-up's vault.Harden checks RLIMIT_MEMLOCK for every
			// sealed key's transient buffers at once
			// (MemlockNeed(sealed)), and each open checks it again. The
			// other keys (pkcs11, winstore, file) keep the bound. Their
			// retries do not take a slot either: each is a separate
			// approval (see openWithRetry).
			if !grp.prepared[k.Name] {
				select {
				case sem <- struct{}{}:
					defer func() { <-sem }()
				case <-ctx.Done():
					mu.Lock()
					failures[k.Name] = KeyFailure{Key: k.Name, Err: reason(ctx)}
					mu.Unlock()
					return
				}
			}
			key, attempts, err := r.openWithRetry(ctx, cfg, k, jwes[k.Name], grp)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				failures[k.Name] = KeyFailure{Key: k.Name, Attempts: attempts, Err: err}
				if !retryable(err) && ctx.Err() == nil {
					abandon(errAbandoned)
				}
				return
			}
			id := ids[k.Name]
			r.mu.Lock()
			r.keys[id] = key
			r.mu.Unlock()
			g.use(id, k.Name)
		}()
	}
	wg.Wait()
	if len(failures) == 0 {
		return nil
	}
	ue := &UnlockError{}
	if errors.Is(context.Cause(ctx), context.DeadlineExceeded) {
		ue.After = u.Timeout
	}
	for _, k := range todo { // in file order
		if f, ok := failures[k.Name]; ok {
			ue.Locked = append(ue.Locked, f)
		}
	}
	// A key that failed for good comes first: it is why the others were
	// abandoned.
	slices.SortStableFunc(ue.Locked, func(a, b KeyFailure) int {
		ab, bb := errors.Is(a.Err, errAbandoned), errors.Is(b.Err, errAbandoned)
		switch {
		case ab == bb:
			return 0
		case bb:
			return -1
		}
		return 1
	})
	return ue
}

// requestGroup is the approval request group of one start-up (or of the
// new keys of a reload): the first attempt of every sealed key recovers
// under its unlock.Startup, so an operator approves the whole start-up
// once per gate.
type requestGroup struct {
	startup  *unlock.Startup
	prepared map[string]bool     // the keys whose first attempt uses startup
	gateKeys map[string][]string // by Tang URL: the keys whose recoveries go there
	start    time.Time
	log      *slog.Logger
	st       *status
}

// prepare blinds the recoveries of the sealed keys in todo (their JWEs
// in jwes, by key name) under one session, so that each gate is told how
// many keys the start-up sends it and shows the one code that covers
// them all. It marks those keys as unlocking before any of them is sent,
// so that a gate's report is not overwritten by a key that starts later.
func (r *Ring) prepare(todo []*config.Key, jwes map[string][]byte) *requestGroup {
	grp := &requestGroup{
		startup: unlock.NewStartup(hostLabel()), prepared: map[string]bool{},
		gateKeys: map[string][]string{}, start: time.Now(), log: r.log, st: r.st,
	}
	st := r.st
	var all [][]byte
	for _, k := range todo {
		data := jwes[k.Name]
		if data == nil {
			continue
		}
		all = append(all, data)
		grp.prepared[k.Name] = true
		urls := jweURLs(data)
		for _, u := range urls {
			if b, err := tang.BaseURL(u); err == nil {
				u = b // as the session and the client name it
			}
			if !slices.Contains(grp.gateKeys[u], k.Name) {
				grp.gateKeys[u] = append(grp.gateKeys[u], k.Name)
			}
		}
		st.set(k.Name, "unlocking at "+orLocal(strings.Join(urls, ",")))
	}
	grp.startup.Prepare(all...)
	return grp
}

// pending reports a gate holding the session's recoveries: once per gate
// (unlock.Startup reports each gate once), naming every key waiting there
// with the one code that covers them, which the client confirmed with the
// gate (a gate showing another code stops the attempt: tang.ErrCodeMismatch).
func (grp *requestGroup) pending(key string, p tang.Pending) {
	names := grp.gateKeys[p.URL]
	if len(names) == 0 {
		names = []string{key}
	}
	log := grp.log.With("key", strings.Join(names, ","), "tang_url", p.URL)
	log.Warn("waiting for approval", "code", p.Code, "waited", time.Since(grp.start).Round(time.Second))
	for _, n := range names {
		grp.st.pending(n, p.URL, p.Code)
	}
}

// reason is why ctx ended, as a key's failure: the timeout, or another
// key's failure, or the caller's cancellation.
func reason(ctx context.Context) error {
	if c := context.Cause(ctx); c != nil && !errors.Is(c, context.Canceled) {
		if errors.Is(c, context.DeadlineExceeded) {
			return errors.New("the [unlock] timeout ran out before its turn")
		}
		return c
	}
	return ctx.Err()
}

// openWithRetry opens one key, retrying while its Tang servers are
// unreachable, and logs and reports its progress. A sealed key's JWE is
// jwe, read once by OpenKeys. A key grp prepared recovers under grp's
// session the first time. A retry cannot: the session's blinded points
// were sent, and a gate answers each once, so it gets a session of its
// own (a new code for the operator, approved for this key alone).
func (r *Ring) openWithRetry(ctx context.Context, cfg *config.Config, k *config.Key, jwe []byte, grp *requestGroup) (vault.Key, int, error) {
	st := r.st
	var urls []string
	if jwe != nil {
		urls = jweURLs(jwe)
	}
	tangURL := strings.Join(urls, ",")
	log := r.log.With("key", k.Name)
	if tangURL != "" {
		log = log.With("tang_url", tangURL)
	}
	start := time.Now()
	log.Info("unlocking key")
	if !grp.prepared[k.Name] { // else prepare reported it
		st.set(k.Name, "unlocking at "+orLocal(tangURL))
	}
	backoff := cfg.Unlock.RetryBackoff
	var last error // the last failure of a finished attempt
	for attempt := 1; ; attempt++ {
		uo := &unlock.Options{
			Startup: unlock.NewStartup(hostLabel()),
			// A gate holds the recovery for an operator: show the
			// code to compare with the gate's, and keep waiting.
			OnPending: func(p tang.Pending) {
				log.Warn("waiting for approval", "code", p.Code,
					"waited", time.Since(start).Round(time.Second))
				st.pending(k.Name, p.URL, p.Code)
			},
		}
		if attempt == 1 && grp.prepared[k.Name] {
			uo.Startup = grp.startup
			uo.OnPending = func(p tang.Pending) { grp.pending(k.Name, p) }
		}
		opts := vaultOptions(cfg, r.log)
		opts.Unlock, opts.Sealed, opts.Cert = uo, jwe, certOf(cfg, k)
		opts.TicketSecret = isTickets(k)
		key, err := r.open(ctx, k.Source, opts)
		if err == nil {
			took := time.Since(start).Round(time.Millisecond)
			log.Info("key unlocked", "took", took, "attempts", attempt)
			st.done(k.Name)
			return key, attempt, nil
		}
		if ctx.Err() != nil { // this attempt was cut short
			return nil, attempt - 1, stopped(ctx, last, err)
		}
		if !retryable(err) {
			log.Error("unlocking key failed", "err", err, "took", time.Since(start).Round(time.Millisecond))
			st.set(k.Name, "failed")
			return nil, attempt, err
		}
		last = err
		wait := jitter(backoff)
		if dl, ok := ctx.Deadline(); ok {
			wait = min(wait, time.Until(dl))
		}
		what, state := "Tang server unreachable; retrying", "unreachable"
		switch {
		case errors.Is(err, tang.ErrUnreachable):
		case errors.Is(err, tang.ErrGateFull):
			what, state = "the gate refuses new requests: it is full (flooded?); retrying", "full"
		case errors.Is(err, tang.ErrSessionLost):
			what, state = "the gate lost the approval session (restarted?); retrying with a new code", "lost the session"
		}
		log.Warn(what, "err", err, "attempt", attempt,
			"waited", time.Since(start).Round(time.Millisecond), "retry_in", wait.Round(time.Millisecond))
		st.set(k.Name, fmt.Sprintf("%s %s (attempt %d), retrying", orLocal(tangURL), state, attempt))
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, attempt, stopped(ctx, last, err)
		case <-t.C:
		}
		backoff = min(2*backoff, cfg.Unlock.RetryBackoffMax)
	}
}

// jitter spreads a retry over the second half of its backoff. A fleet
// that starts at once (or whose gate restarts) would otherwise retry in
// step, every host in the same instant, and multiply the gate's work:
// docs/fleet.md, "Capacity of one gate".
func jitter(d time.Duration) time.Duration {
	if d <= 1 {
		return d
	}
	return d/2 + rand.N(d-d/2+1)
}

// stopped is the failure of a key whose recovery ctx ended: the last
// real failure, marked when another key's failure was the end.
func stopped(ctx context.Context, last, err error) error {
	if last == nil {
		last = err
	}
	if errors.Is(context.Cause(ctx), errAbandoned) {
		if last == nil || errors.Is(last, errAbandoned) || errors.Is(last, context.Canceled) {
			return errAbandoned
		}
		return fmt.Errorf("%w (last: %w)", errAbandoned, last)
	}
	return last
}

func orLocal(url string) string {
	if url == "" {
		return "local source"
	}
	return url
}
