package proxy

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// Plan is what a configuration asks the group to run.
type Plan struct {
	Listeners []*ListenerConfig
	// MaxConns bounds connections over all listeners (0: unbounded).
	MaxConns int
	// Pool is the TLS pool (nil: none).
	Pool *PoolConfig
	// Applied, if set, is called once the plan runs; Discarded when it
	// was loaded but refused (the previous plan keeps running). Key
	// custody uses them to close keys no plan needs any more.
	Applied, Discarded func()
}

// Loader reads the configuration and everything it names (certificates,
// CAs, keys) and returns the plan to run. Group calls it at start and on
// every Reload.
type Loader func(ctx context.Context) (*Plan, error)

// Group runs the servers of one configuration and reloads them in place.
type Group struct {
	opts Options
	load Loader

	reloadMu sync.Mutex // one reload at a time
	mu       sync.Mutex
	members  map[string]*member // by listener name
	ready    atomic.Bool
	wg       sync.WaitGroup
	fatal    chan error
	ctx      context.Context

	expiry     expiryWatch
	stopExpiry context.CancelFunc
	pool       *poolMember
}

type poolMember struct {
	p      *Pool
	listen string
	cancel context.CancelFunc
	cfg    *PoolConfig // what it serves now: its CRLs are polled with the listeners'
}

type member struct {
	srv    *Server
	listen string
	cancel context.CancelFunc
}

// NewGroup makes a group; Run starts it. opts.Global is replaced by a
// limiter the group owns.
func NewGroup(load Loader, opts *Options) *Group {
	o := opts.withDefaults()
	o.Global = NewLimiter(0)
	return &Group{opts: o, load: load, members: map[string]*member{}, fatal: make(chan error, 1)}
}

// Run loads the configuration, opens the listeners and serves until ctx
// ends or a listener fails; then it drains every server and returns.
// Failing to start (the first load, a listen) is returned at once. It is
// Start followed by Wait.
func (g *Group) Run(ctx context.Context) error {
	if err := g.Start(ctx); err != nil {
		return err
	}
	return g.Wait()
}

// Start loads the configuration and opens every listener; when it
// returns nil the group is serving (Ready) until ctx ends. Nothing
// listens if it fails. Call Wait after a successful Start.
func (g *Group) Start(ctx context.Context) error {
	plan, err := g.load(ctx)
	if err != nil {
		return err
	}
	g.mu.Lock()
	g.ctx = ctx
	g.mu.Unlock()
	if err := g.apply(plan); err != nil {
		if plan.Discarded != nil {
			plan.Discarded()
		}
		return err
	}
	if plan.Applied != nil {
		plan.Applied()
	}
	g.ready.Store(true)
	wctx, stop := context.WithCancel(ctx)
	g.mu.Lock()
	g.stopExpiry = stop
	g.mu.Unlock()
	go g.watchExpiry(wctx)
	return nil
}

// watchExpiry re-checks the certificates in use every minute (a daemon
// that runs for months must still warn 30 and 7 days before they
// expire) and starts the download of CRLs whose refresh is due even when
// no handshake asks for them.
func (g *Group) watchExpiry(ctx context.Context) {
	t := time.NewTicker(expiryCheckEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		g.mu.Lock()
		lcs := make([]*ListenerConfig, 0, len(g.members))
		for _, m := range g.members {
			lcs = append(lcs, m.srv.Config())
		}
		var checks []*clientCheck
		if g.pool != nil && g.pool.cfg != nil {
			for _, s := range g.pool.cfg.Services {
				checks = append(checks, s.check)
			}
		}
		g.mu.Unlock()
		now := time.Now()
		for _, lc := range lcs {
			if lc.revocation != nil {
				checks = append(checks, lc.revocation.check)
			}
		}
		for _, c := range checks {
			if c != nil && c.rev != nil {
				c.rev.poll(now)
			}
		}
		g.expiry.note(g.opts.Metrics, g.opts.Log, lcs, now)
	}
}

// Wait serves until Start's ctx ends or a listener fails, then stops
// accepting, drains every server (up to ShutdownTimeout) and returns the
// listener's failure, if any.
func (g *Group) Wait() error {
	g.mu.Lock()
	ctx := g.ctx
	g.mu.Unlock()
	var err error
	select {
	case <-ctx.Done():
	case err = <-g.fatal:
	}
	g.ready.Store(false)
	g.mu.Lock()
	if g.stopExpiry != nil {
		g.stopExpiry()
	}
	for _, m := range g.members {
		m.cancel()
	}
	if g.pool != nil {
		g.pool.cancel()
	}
	g.mu.Unlock()
	g.wg.Wait()
	return err
}

// Ready reports whether the group is serving (false before the first
// configuration is running and while it stops).
func (g *Group) Ready() bool { return g.ready.Load() }

// Listeners returns the names of the running listeners, sorted.
func (g *Group) Listeners() []string {
	g.mu.Lock()
	defer g.mu.Unlock()
	names := make([]string, 0, len(g.members))
	for n := range g.members {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// Addr returns the bound address of a running listener, or nil.
func (g *Group) Addr(name string) net.Addr {
	g.mu.Lock()
	defer g.mu.Unlock()
	if m, ok := g.members[name]; ok {
		return m.srv.Addr()
	}
	return nil
}

// Reload re-reads the configuration through the loader and applies it:
// changed listeners get the new configuration for new connections, new
// listeners open, removed ones stop accepting and drain. Open connections
// are left alone. On any error nothing changes and the error says why.
func (g *Group) Reload(ctx context.Context) error {
	g.reloadMu.Lock()
	defer g.reloadMu.Unlock()
	plan, err := g.load(ctx)
	if err == nil {
		err = g.apply(plan)
		switch {
		case err != nil && plan.Discarded != nil:
			plan.Discarded()
		case err == nil && plan.Applied != nil:
			plan.Applied()
		}
	}
	if err != nil {
		g.opts.Metrics.Reloads.WithLabelValues("failure").Inc()
		g.opts.Log.Error("reload failed; the previous configuration stays", "err", err)
		return fmt.Errorf("reload failed, the previous configuration stays: %w", err)
	}
	g.opts.Metrics.Reloads.WithLabelValues("success").Inc()
	g.opts.Log.Info("reloaded", "listeners", len(plan.Listeners))
	return nil
}

// apply makes the running set match the plan, all or nothing: every
// check and every new socket comes first, then the swap.
func (g *Group) apply(plan *Plan) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.ctx == nil || g.ctx.Err() != nil {
		return errors.New("group is not running")
	}
	seen := map[string]bool{}
	for _, lc := range plan.Listeners {
		if seen[lc.Name] {
			return fmt.Errorf("listener %q: duplicate name", lc.Name)
		}
		seen[lc.Name] = true
		if err := lc.check(); err != nil {
			return err
		}
	}
	opened := map[string]net.Listener{}
	fail := func(err error) error {
		for _, ln := range opened {
			_ = ln.Close()
		}
		return err
	}
	for _, lc := range plan.Listeners {
		if m, ok := g.members[lc.Name]; ok && m.listen == lc.Listen {
			continue
		}
		ln, err := g.opts.Listen(lc.Listen)
		if err != nil {
			return fail(fmt.Errorf("listener %q: %w", lc.Name, err))
		}
		opened[lc.Name] = ln
	}
	opts := g.opts
	var newPool *Pool
	if plan.Pool != nil && (g.pool == nil || g.pool.listen != plan.Pool.Listen) {
		po := opts
		var err error
		if newPool, err = NewPool(plan.Pool, &po, g.opts.Listen); err != nil {
			return fail(err)
		}
		newPool.setGlobal(g.opts.Global)
	}
	servers := map[string]*Server{}
	for name, ln := range opened {
		var lc *ListenerConfig
		for _, c := range plan.Listeners {
			if c.Name == name {
				lc = c
			}
		}
		s, err := NewServer(ln, lc, &opts)
		if err != nil {
			if newPool != nil {
				newPool.closeListener()
			}
			return fail(err)
		}
		s.opts.Global = g.opts.Global
		servers[name] = s
	}

	// Commit: nothing below can fail.
	g.opts.Global.SetMax(plan.MaxConns)
	for _, lc := range plan.Listeners {
		if s, ok := servers[lc.Name]; ok {
			if old, ok := g.members[lc.Name]; ok {
				old.cancel() // moved to a new address: the old socket drains
			}
			g.start(lc, s)
			continue
		}
		_ = g.members[lc.Name].srv.Update(lc)
	}
	for name, m := range g.members {
		if !seen[name] {
			m.cancel()
			delete(g.members, name)
		}
	}
	g.expiry.note(g.opts.Metrics, g.opts.Log, plan.Listeners, time.Now())
	g.applyPool(plan.Pool, newPool)
	return nil
}

// applyPool starts a new pool socket (stopping the one it replaces),
// updates the running one, or stops it when the plan has none.
func (g *Group) applyPool(pc *PoolConfig, p *Pool) {
	switch {
	case p != nil:
		if g.pool != nil {
			g.pool.cancel()
		}
		ctx, cancel := context.WithCancel(g.ctx)
		g.pool = &poolMember{p: p, listen: pc.Listen, cancel: cancel, cfg: pc}
		g.opts.Log.Info("listening", "listener", "pool", "addr", pc.Listen, "services", len(pc.Services))
		g.wg.Add(1)
		go func() {
			defer g.wg.Done()
			if err := p.Serve(ctx); err != nil {
				select {
				case g.fatal <- fmt.Errorf("pool: %w", err):
				default:
				}
			}
		}()
	case pc != nil:
		g.pool.p.Update(pc)
		g.pool.cfg = pc
	case g.pool != nil:
		g.pool.cancel()
		g.pool = nil
	}
}

// PoolAddr returns the pool socket's address, or nil without a pool.
func (g *Group) PoolAddr() net.Addr {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.pool == nil {
		return nil
	}
	return g.pool.p.Addr()
}

func (g *Group) start(lc *ListenerConfig, s *Server) {
	ctx, cancel := context.WithCancel(g.ctx)
	g.members[lc.Name] = &member{srv: s, listen: lc.Listen, cancel: cancel}
	g.opts.Log.Info("listening", "listener", lc.Name, "addr", s.Addr().String(), "mode", lc.Mode)
	g.wg.Add(1)
	go func() {
		defer g.wg.Done()
		if err := s.Serve(ctx); err != nil {
			select {
			case g.fatal <- fmt.Errorf("listener %q: %w", lc.Name, err):
			default:
			}
		}
	}()
}
