package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
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

// maxConcurrentOpens bounds the keys recovered at once: each recovery
// allocates locked memory, and memguard can hang when mlock fails.
const maxConcurrentOpens = 4

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

// usedKeys returns the names of the keys cfg's listeners use, in file
// order: only those are opened.
func usedKeys(cfg *config.Config) []*config.Key {
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
	var out []*config.Key
	for i := range cfg.Keys {
		if used[cfg.Keys[i].Name] {
			out = append(out, &cfg.Keys[i])
		}
	}
	return out
}

// sealedJWE reads a sealed key's JWE (the bytes vault opens), or nil for
// other keys and a file that cannot be read (the recovery reports that).
func sealedJWE(cfg *config.Config, k *config.Key) []byte {
	data, ok, err := vault.ReadSealed(k.Source, &vault.Options{BaseDir: cfg.Dir})
	if !ok || err != nil {
		return nil
	}
	return data
}

// tangURLs lists the Tang servers a sealed key's JWE names, for logs and
// status lines; empty for other keys or a file that does not parse (the
// recovery reports that).
func tangURLs(cfg *config.Config, k *config.Key) []string {
	data := sealedJWE(cfg, k)
	if data == nil {
		return nil
	}
	return jweURLs(data)
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

// openAll opens, concurrently, every key cfg's listeners use that the
// store does not hold yet. A key whose Tang server is unreachable is
// retried with exponential backoff until [unlock] timeout; any other
// failure stops the others at once. On failure the keys this call opened
// stay in the load, for discarded to close.
func (l *load) openAll(ctx context.Context, cfg *config.Config, st *status) error {
	var todo []*config.Key
	for _, k := range usedKeys(cfg) {
		id := keyID(cfg, k.Source)
		l.s.mu.Lock()
		_, open := l.s.keys[id]
		l.s.mu.Unlock()
		if open {
			l.used[id] = true
			continue
		}
		todo = append(todo, k)
	}
	if len(todo) == 0 {
		return nil
	}
	u := cfg.Unlock
	ctx, cancelTimeout := context.WithTimeout(ctx, u.Timeout)
	defer cancelTimeout()
	ctx, abandon := context.WithCancelCause(ctx)
	defer abandon(nil)

	st.begin(len(todo))
	sh := l.s.prepare(cfg, todo, st)
	defer sh.sess.Close() // after wg.Wait: wipes the recoveries no key used
	var (
		wg       sync.WaitGroup
		sem      = make(chan struct{}, maxConcurrentOpens)
		mu       sync.Mutex
		failures = map[string]KeyFailure{}
	)
	for _, k := range todo {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// The sealed keys of the shared session do not take a slot:
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
			if !sh.prepared[k.Name] {
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
			key, attempts, err := l.s.openWithRetry(ctx, cfg, k, st, sh)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				failures[k.Name] = KeyFailure{Key: k.Name, Attempts: attempts, Err: err}
				if !retryable(err) && ctx.Err() == nil {
					abandon(errAbandoned)
				}
				return
			}
			id := keyID(cfg, k.Source)
			l.s.mu.Lock()
			l.s.keys[id] = key
			l.s.mu.Unlock()
			l.used[id] = true
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

// shared is the approval session of one start-up (or of the new keys of a
// reload): the first attempt of every sealed key recovers under it, so an
// operator approves the whole start-up once per gate.
type shared struct {
	sess     *unlock.Startup
	prepared map[string]bool     // the keys whose first attempt uses sess
	gateKeys map[string][]string // by Tang URL: the keys whose recoveries go there
	start    time.Time
	log      *slog.Logger
	st       *status
}

// prepare reads the JWEs of the sealed keys in todo and blinds all their
// recoveries under one session, so that each gate is told how many keys
// the start-up sends it and shows the one code that covers them all. It
// marks those keys as unlocking in st before any of them is sent, so that
// a gate's report is not overwritten by a key that starts later.
func (s *keyStore) prepare(cfg *config.Config, todo []*config.Key, st *status) *shared {
	sh := &shared{
		sess: unlock.NewStartup(hostLabel()), prepared: map[string]bool{},
		gateKeys: map[string][]string{}, start: time.Now(), log: s.log, st: st,
	}
	var jwes [][]byte
	for _, k := range todo {
		data := sealedJWE(cfg, k)
		if data == nil {
			continue
		}
		jwes = append(jwes, data)
		sh.prepared[k.Name] = true
		urls := jweURLs(data)
		for _, u := range urls {
			if b, err := tang.BaseURL(u); err == nil {
				u = b // as the session and the client name it
			}
			if !slices.Contains(sh.gateKeys[u], k.Name) {
				sh.gateKeys[u] = append(sh.gateKeys[u], k.Name)
			}
		}
		st.set(k.Name, "unlocking at "+orLocal(strings.Join(urls, ",")))
	}
	sh.sess.Prepare(jwes...)
	return sh
}

// pending reports a gate holding the session's recoveries: once per gate
// (unlock.Session reports each gate once), naming every key waiting there
// with the one code that covers them, which the client confirmed with the
// gate (a gate showing another code stops the attempt: tang.ErrCodeMismatch).
func (sh *shared) pending(key string, p tang.Pending) {
	names := sh.gateKeys[p.URL]
	if len(names) == 0 {
		names = []string{key}
	}
	log := sh.log.With("key", strings.Join(names, ","), "tang_url", p.URL)
	log.Warn("waiting for approval", "code", p.Code, "waited", time.Since(sh.start).Round(time.Second))
	for _, n := range names {
		sh.st.pending(n, p.URL, p.Code)
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
// unreachable, and logs and reports its progress. A key sh prepared
// recovers under sh's session the first time. A retry cannot: the
// session's blinded points were sent, and a gate answers each once, so
// it gets a session of its own (a new code for the operator, approved
// for this key alone).
func (s *keyStore) openWithRetry(ctx context.Context, cfg *config.Config, k *config.Key, st *status, sh *shared) (vault.Key, int, error) {
	urls := tangURLs(cfg, k)
	tangURL := strings.Join(urls, ",")
	log := s.log.With("key", k.Name)
	if tangURL != "" {
		log = log.With("tang_url", tangURL)
	}
	start := time.Now()
	log.Info("unlocking key")
	if !sh.prepared[k.Name] { // else prepare reported it
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
		if attempt == 1 && sh.prepared[k.Name] {
			uo.Startup = sh.sess
			uo.OnPending = func(p tang.Pending) { sh.pending(k.Name, p) }
		}
		key, err := s.open(ctx, k.Source, &vault.Options{
			BaseDir: cfg.Dir, AllowPlaintext: cfg.AllowPlaintextKeys,
			AllowUnprotectedMemory: cfg.AllowUnprotectedMemory, Log: s.log,
			Unlock: uo,
		})
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
		wait := backoff
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

// status keeps the one-line state of an unlock for the service manager
// (systemd STATUS=, the Windows SCM's log).
type status struct {
	report func(string) // nil: nobody listens

	mu    sync.Mutex
	total int
	open  int
	keys  map[string]string // key → what it waits for
}

func newStatus(report func(string)) *status {
	return &status{report: report, keys: map[string]string{}}
}

func (st *status) begin(n int) {
	st.mu.Lock()
	st.total, st.open = n, 0
	clear(st.keys)
	st.mu.Unlock()
	st.publish()
}

func (st *status) set(key, state string) {
	st.mu.Lock()
	st.keys[key] = state
	st.mu.Unlock()
	st.publish()
}

// pending reports a recovery held at a gate for an operator's approval,
// for a key not open yet.
func (st *status) pending(key, url, code string) {
	st.mu.Lock()
	_, unlocking := st.keys[key]
	if unlocking {
		st.keys[key] = fmt.Sprintf("waiting for approval (code %s) at %s", tang.Printable(code), tang.Printable(url))
	}
	st.mu.Unlock()
	if unlocking {
		st.publish()
	}
}

func (st *status) done(key string) {
	st.mu.Lock()
	delete(st.keys, key)
	st.open++
	st.mu.Unlock()
	st.publish()
}

// line is e.g. "unlocking keys: 1 of 2 open; web: http://tang:7500
// unreachable (attempt 3), retrying".
func (st *status) line() string {
	st.mu.Lock()
	defer st.mu.Unlock()
	var b strings.Builder
	fmt.Fprintf(&b, "unlocking keys: %d of %d open", st.open, st.total)
	names := make([]string, 0, len(st.keys))
	for k := range st.keys {
		names = append(names, k)
	}
	slices.Sort(names)
	for _, k := range names {
		fmt.Fprintf(&b, "; %s: %s", k, st.keys[k])
	}
	return b.String()
}

func (st *status) publish() {
	if st != nil && st.report != nil {
		st.report(st.line())
	}
}
