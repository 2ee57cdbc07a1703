//go:build linux

package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"
)

// outcome is what every scenario reports besides its numbers: the
// properties that did not hold, and how long it took.
type outcome struct {
	Problems []string `json:"problems"`
	Seconds  float64  `json:"seconds"`
}

func (o *outcome) fail(format string, args ...any) {
	o.Problems = append(o.Problems, fmt.Sprintf(format, args...))
}

func (o *outcome) failErrs(what string, errs []error, count int) {
	if count == 0 {
		return
	}
	o.fail("%s: %d errors, e.g. %v", what, count, errors.Join(errs...))
}

// env is what the scenarios share: the proxy, its backends, the clients.
type env struct {
	p      params
	proxy  *proxyProcess
	d      *dialer
	echo   *backend
	stream *streamer
	hello  []byte // a TLS 1.3 client's first flight
	hello1 []byte // a TLS 1.0-only client's first flight
	logf   func(format string, args ...any)
	keep   bool // keep the temporary directory (the log) for a look
}

// ---- 1. hold

type holdResult struct {
	outcome
	Connections     int       `json:"connections"`
	Held            int       `json:"held"`
	Errors          int       `json:"errors"`
	HoldSeconds     float64   `json:"hold_seconds"`
	Handshake       latencies `json:"handshake"`
	ActiveWhileHeld int       `json:"connections_active_while_held"`
	Before          snapshot  `json:"before"`
	During          snapshot  `json:"during"`
	// Later is taken at the end of the hold; During keeps the larger RSS.
	Later        snapshot `json:"during_end_of_hold"`
	After        snapshot `json:"after"`
	BytesPerConn int64    `json:"rss_bytes_per_held_connection"`
}

func (e *env) hold(ctx context.Context) (r holdResult, err error) {
	n := e.p.holdN
	r.Connections, r.HoldSeconds = n, e.p.holdFor.Seconds()
	addr := e.proxy.addrs["hold"]
	if r.Before, err = e.proxy.quiesce(ctx); err != nil {
		return r, err
	}
	conns := make([]*tls.Conn, n)
	var (
		mu  sync.Mutex
		hds []time.Duration
	)
	e.logf("hold: opening %d connections", n)
	errs, count := parallel(n, e.p.dialers, func(i int) error {
		c, hd, err := e.d.tls(ctx, addr)
		if err != nil {
			return err
		}
		mu.Lock()
		hds = append(hds, hd)
		mu.Unlock()
		if err := echo(c, fmt.Sprintf("hold %d open\n", i)); err != nil {
			c.Close()
			return err
		}
		conns[i] = c
		return nil
	})
	r.Errors += count
	r.failErrs("opening and proving connections", errs, count)
	r.Handshake = summarise(hds)
	defer func() {
		for _, c := range conns {
			if c != nil {
				c.Close()
			}
		}
	}()
	if r.During, err = e.proxy.snapshot(ctx); err != nil {
		return r, err
	}
	r.ActiveWhileHeld = r.During.Active
	if want := n - count; r.ActiveWhileHeld != want {
		r.fail("sealproxy_connections_active is %d with %d connections held", r.ActiveWhileHeld, want)
	}
	e.logf("hold: %d open; holding %v", n-count, e.p.holdFor)
	select {
	case <-time.After(e.p.holdFor):
	case <-ctx.Done():
		return r, ctx.Err()
	}
	if s, err := e.proxy.snapshot(ctx); err == nil {
		r.Later = s
		if s.RSS > r.During.RSS {
			r.During.RSS = s.RSS
		}
	}
	errs, count2 := parallel(n, e.p.dialers, func(i int) error {
		if conns[i] == nil {
			return nil
		}
		return echo(conns[i], fmt.Sprintf("hold %d still\n", i))
	})
	r.Errors += count2
	r.failErrs("proving held connections again", errs, count2)
	r.Held = n - count - count2
	if r.Held > 0 {
		r.BytesPerConn = (r.During.RSS - r.Before.RSS) / int64(r.Held)
	}
	for i, c := range conns {
		if c != nil {
			c.Close()
			conns[i] = nil
		}
	}
	e.logf("hold: closed; waiting for the proxy to recover")
	r.After, err = e.proxy.waitBaseline(ctx, r.Before)
	if err != nil {
		r.fail("%v", err)
	}
	return r, nil
}

// ---- 2. flood

type floodResult struct {
	outcome
	Limit            int            `json:"limit"`
	Attempted        int            `json:"attempted"`
	Refused          int            `json:"refused_seen_by_clients"`
	Accepted         int            `json:"accepted_beyond_limit"`
	OtherErrors      int            `json:"other_errors"`
	RejectedCounted  map[string]int `json:"rejected_counted"`
	FloodSeconds     float64        `json:"flood_seconds"`
	TimeToRefusal    latencies      `json:"time_to_refusal"`
	HeldStillWorking int            `json:"held_still_working"`
	Alive            bool           `json:"proxy_alive"`
	Before           snapshot       `json:"before"`
	During           snapshot       `json:"during"`
	After            snapshot       `json:"after"`
	HeapTolerance    int64          `json:"heap_tolerance_bytes"`
}

// heapTolerance bounds go_memstats_heap_inuse_bytes after the flood, both
// measured after two GC cycles: the live heap is back where it was, but
// heap_inuse counts whole spans, and the flood leaves some partly used
// (and sync.Pool buffers survive one cycle); 8 MiB is that slack, well
// under what a leak of 20,000 refused connections (a few KiB each) would
// show.
const heapTolerance = 8 << 20

func (e *env) flood(ctx context.Context) (r floodResult, err error) {
	r.Limit, r.Attempted, r.HeapTolerance = e.p.floodL, e.p.floodM, heapTolerance
	addr := e.proxy.addrs["flood"]
	start0, err := e.proxy.quiesce(ctx)
	if err != nil {
		return r, err
	}
	if err := e.settleGC(ctx); err != nil {
		return r, err
	}
	// The settling connections have closed: wait for their fds to go.
	if r.Before, err = e.proxy.waitBaseline(ctx, start0); err != nil {
		return r, fmt.Errorf("before the flood: %w", err)
	}
	held := make([]*tls.Conn, r.Limit)
	defer func() {
		for _, c := range held {
			if c != nil {
				c.Close()
			}
		}
	}()
	errs, count := parallel(r.Limit, e.p.dialers, func(i int) error {
		c, _, err := e.d.tls(ctx, addr)
		if err != nil {
			return err
		}
		held[i] = c
		return echo(c, fmt.Sprintf("flood held %d\n", i))
	})
	r.failErrs("holding the limit's connections", errs, count)
	m0, err := e.proxy.scrape(ctx)
	if err != nil {
		return r, err
	}

	e.logf("flood: %d held; %d handshakes over %v", r.Limit, r.Attempted, e.p.floodFor)
	var (
		mu       sync.Mutex
		times    []time.Duration
		refused  atomic.Int64
		accepted atomic.Int64
	)
	start := time.Now()
	errs, count = parallel(r.Attempted, e.p.floodDialers, func(i int) error {
		at := start.Add(time.Duration(int64(e.p.floodFor) * int64(i) / int64(r.Attempted)))
		time.Sleep(time.Until(at))
		t0 := time.Now()
		c, err := e.d.tcp(ctx, addr)
		if err != nil {
			if closedByPeer(err) { // the reset came before connect returned
				refused.Add(1)
				mu.Lock()
				times = append(times, time.Since(t0))
				mu.Unlock()
				return nil
			}
			return err
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(20 * time.Second))
		_, werr := c.Write(e.hello)
		buf := make([]byte, 1024)
		n, rerr := c.Read(buf)
		d := time.Since(t0)
		switch {
		case n > 0:
			accepted.Add(1)
			return fmt.Errorf("attempt %d: the proxy answered a handshake beyond max_connections", i)
		case closedByPeer(rerr) || (werr != nil && closedByPeer(werr)):
			refused.Add(1)
			mu.Lock()
			times = append(times, d)
			mu.Unlock()
			return nil
		}
		return fmt.Errorf("attempt %d: neither refused nor answered: write %v, read %v", i, werr, rerr)
	})
	r.FloodSeconds = time.Since(start).Seconds()
	r.Refused, r.Accepted = int(refused.Load()), int(accepted.Load())
	r.OtherErrors = count - r.Accepted
	r.TimeToRefusal = summarise(times)
	r.failErrs("flood attempts", errs, count)
	if r.Refused != r.Attempted {
		r.fail("%d of %d flood connections were refused", r.Refused, r.Attempted)
	}

	m1, err := e.proxy.scrape(ctx)
	if err != nil {
		return r, err
	}
	r.RejectedCounted = map[string]int{}
	total := 0
	for k, v := range delta(m1.byLabel("sealproxy_connections_rejected_total", "reason", "listener", "flood"),
		m0.byLabel("sealproxy_connections_rejected_total", "reason", "listener", "flood")) {
		r.RejectedCounted[k] = int(v)
		total += int(v)
	}
	if total != r.Attempted {
		r.fail("sealproxy_connections_rejected_total{listener=\"flood\"} rose by %d for %d refused attempts", total, r.Attempted)
	}
	if r.During, err = e.proxy.snapshot(ctx); err != nil {
		return r, err
	}
	r.Alive = e.proxy.alive() && e.proxy.get(ctx, "/healthz") == nil
	if !r.Alive {
		r.fail("the proxy is not alive and healthy after the flood")
	}
	errs, count = parallel(r.Limit, e.p.dialers, func(i int) error {
		if held[i] == nil {
			return nil
		}
		return echo(held[i], fmt.Sprintf("flood held %d after\n", i))
	})
	r.failErrs("held connections after the flood", errs, count)
	r.HeldStillWorking = r.Limit - count
	for i, c := range held {
		if c != nil {
			c.Close()
			held[i] = nil
		}
	}
	e.logf("flood: closed; waiting for the proxy to recover")
	if r.After, err = e.proxy.waitBaseline(ctx, r.Before); err != nil {
		r.fail("%v", err)
	}
	if err := e.settleGC(ctx); err != nil {
		return r, err
	}
	s, err := e.proxy.snapshot(ctx)
	if err != nil {
		return r, err
	}
	r.After.HeapInuse, r.After.RSS = s.HeapInuse, s.RSS
	if r.After.HeapInuse > r.Before.HeapInuse+heapTolerance {
		r.fail("heap in use %d bytes after the flood, baseline %d (+%d allowed)", r.After.HeapInuse, r.Before.HeapInuse, heapTolerance)
	}
	return r, nil
}

// settleGC drives light traffic through the proxy until it has run two
// garbage collections, so that heap figures compare like with like: the
// proxy has no endpoint to force one, and an idle Go process collects
// only every two minutes.
func (e *env) settleGC(ctx context.Context) error {
	s, err := e.proxy.snapshot(ctx)
	if err != nil {
		return err
	}
	want := s.gcCycles + 2
	deadline := time.Now().Add(60 * time.Second)
	for s.gcCycles < want {
		if time.Now().After(deadline) {
			return errors.New("settling the heap: the proxy ran no garbage collection in 60s of traffic")
		}
		errs, count := parallel(20, 4, func(i int) error {
			c, _, err := e.d.tls(ctx, e.proxy.addrs["hold"])
			if err != nil {
				return err
			}
			defer c.Close()
			return echo(c, "settle\n")
		})
		if count > 0 {
			return fmt.Errorf("settling the heap: %w", errors.Join(errs...))
		}
		if s, err = e.proxy.snapshot(ctx); err != nil {
			return err
		}
	}
	return nil
}

// ---- 3. silent

type silentResult struct {
	outcome
	Silent           int            `json:"silent"`
	Partial          int            `json:"partial_client_hello"`
	HandshakeTimeout float64        `json:"handshake_timeout_seconds"`
	ClosedByProxy    int            `json:"closed_by_proxy"`
	TimeToClose      latencies      `json:"time_to_close"`
	RealAttempts     int            `json:"real_attempts"`
	RealSucceeded    int            `json:"real_succeeded"`
	RealSuccessRate  float64        `json:"real_success_rate"`
	RealHandshake    latencies      `json:"real_handshake"`
	HandshakeErrors  map[string]int `json:"handshake_errors_counted"`
	ClosedCounted    map[string]int `json:"closed_counted"`
	Before           snapshot       `json:"before"`
	During           snapshot       `json:"during"`
	After            snapshot       `json:"after"`
}

func (e *env) silent(ctx context.Context) (r silentResult, err error) {
	r.Silent, r.Partial, r.HandshakeTimeout = e.p.silentS, e.p.silentS/10, silentTimeout.Seconds()
	addr := e.proxy.addrs["silent"]
	if r.Before, err = e.proxy.quiesce(ctx); err != nil {
		return r, err
	}
	m0, err := e.proxy.scrape(ctx)
	if err != nil {
		return r, err
	}
	total := r.Silent + r.Partial
	var (
		wg         sync.WaitGroup
		mu         sync.Mutex
		closeTimes []time.Duration
		closed     atomic.Int64
		closeErrs  []error
	)
	e.logf("silent: opening %d silent and %d stalled connections", r.Silent, r.Partial)
	errs, count := parallel(total, e.p.dialers, func(i int) error {
		c, err := e.d.tcp(ctx, addr)
		if err != nil {
			return err
		}
		opened := time.Now()
		if i >= r.Silent { // a partial ClientHello, then nothing
			if _, err := c.Write(e.hello[:len(e.hello)/2]); err != nil {
				c.Close()
				return fmt.Errorf("partial ClientHello: %w", err)
			}
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer c.Close()
			err := waitClosed(c, opened.Add(silentTimeout+15*time.Second))
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				if len(closeErrs) < maxErrs {
					closeErrs = append(closeErrs, err)
				}
				return
			}
			closed.Add(1)
			closeTimes = append(closeTimes, time.Since(opened))
		}()
		return nil
	})
	r.failErrs("opening silent connections", errs, count)

	// Real clients while the silent ones are held: for two thirds of the
	// handshake timeout, so that none of the silent ones has been closed
	// yet when the last real one starts.
	window := silentTimeout * 2 / 3
	e.logf("silent: real clients for %v", window)
	var (
		hds       []time.Duration
		attempts  atomic.Int64
		realErrs  []error
		realCount int
	)
	if r.During, err = e.proxy.snapshot(ctx); err != nil {
		return r, err
	}
	end := time.Now().Add(window)
	var rwg sync.WaitGroup
	for range e.p.realClients {
		rwg.Add(1)
		go func() {
			defer rwg.Done()
			for time.Now().Before(end) {
				attempts.Add(1)
				c, hd, err := e.d.tls(ctx, addr)
				if err == nil {
					err = echo(c, "real client\n")
					c.Close()
				}
				mu.Lock()
				if err != nil {
					realCount++
					if len(realErrs) < maxErrs {
						realErrs = append(realErrs, err)
					}
				} else {
					hds = append(hds, hd)
				}
				mu.Unlock()
			}
		}()
	}
	rwg.Wait()
	r.RealAttempts = int(attempts.Load())
	r.RealSucceeded = r.RealAttempts - realCount
	if r.RealAttempts > 0 {
		r.RealSuccessRate = float64(r.RealSucceeded) / float64(r.RealAttempts)
	}
	r.RealHandshake = summarise(hds)
	r.failErrs("real clients beside the silent ones", realErrs, realCount)
	if r.RealAttempts == 0 {
		r.fail("no real client ran")
	}

	e.logf("silent: waiting for the proxy to close the silent connections")
	wg.Wait()
	r.ClosedByProxy = int(closed.Load())
	r.TimeToClose = summarise(closeTimes)
	if r.ClosedByProxy != total-count {
		r.fail("the proxy closed %d of %d silent connections: %v", r.ClosedByProxy, total-count, errors.Join(closeErrs...))
	}
	m1, err := e.proxy.scrape(ctx)
	if err != nil {
		return r, err
	}
	r.HandshakeErrors = intMap(delta(m1.byLabel("sealproxy_handshake_errors_total", "kind", "listener", "silent"),
		m0.byLabel("sealproxy_handshake_errors_total", "kind", "listener", "silent")))
	r.ClosedCounted = intMap(delta(m1.byLabel("sealproxy_connections_closed_total", "reason", "listener", "silent"),
		m0.byLabel("sealproxy_connections_closed_total", "reason", "listener", "silent")))
	if got := r.HandshakeErrors["timeout"]; got != total-count {
		r.fail("sealproxy_handshake_errors_total{listener=\"silent\",kind=\"timeout\"} rose by %d for %d silent connections", got, total-count)
	}
	if r.After, err = e.proxy.waitBaseline(ctx, r.Before); err != nil {
		r.fail("%v", err)
	}
	return r, nil
}

func intMap(m map[string]float64) map[string]int {
	out := make(map[string]int, len(m))
	for k, v := range m {
		out[k] = int(v)
	}
	return out
}

// ---- 4. slowread

type slowResult struct {
	outcome
	Clients         int      `json:"clients"`
	NeverRead       int      `json:"never_read"`
	Read1KiBps      int      `json:"read_1kib_per_second"`
	StreamLimit     int64    `json:"stream_limit_bytes"`
	HoldSeconds     float64  `json:"hold_seconds"`
	BackendWritten  int64    `json:"backend_bytes_written"`
	MaxPerConn      int64    `json:"backend_max_bytes_one_connection"`
	LastWindowBytes int64    `json:"backend_bytes_written_last_2s"`
	Finished        int64    `json:"streams_finished"`
	WrittenBySecond []int64  `json:"backend_bytes_written_by_second"`
	RSSBase         int64    `json:"rss_base_bytes"`
	RSSMax          int64    `json:"rss_max_bytes"`
	RSSPerClient    int64    `json:"rss_bytes_per_client"`
	RSSBound        int64    `json:"rss_bound_bytes"`
	Before          snapshot `json:"before"`
	During          snapshot `json:"during"`
	After           snapshot `json:"after"`
}

// slowRSSPerClient bounds the proxy's memory per stalled stream: a relay
// holds one 32 KiB copy buffer per direction and crypto/tls a record or
// two (about 34 KiB) while its write blocks; 512 KiB is several times
// that and a small fraction of the megabytes each stream has pushed into
// the proxy when it stalls, so growth with the bytes sent would show.
// slowRSSSlack covers GC and allocator slack.
const (
	slowRSSPerClient = 512 << 10
	slowRSSSlack     = 32 << 20
)

func (e *env) slowread(ctx context.Context) (r slowResult, err error) {
	k := e.p.slowK
	r.Clients, r.NeverRead, r.Read1KiBps = k, k-k/2, k/2
	r.StreamLimit, r.HoldSeconds = e.stream.limit, e.p.slowFor.Seconds()
	r.RSSBound = int64(k)*slowRSSPerClient + slowRSSSlack
	addr := e.proxy.addrs["slow"]
	if r.Before, err = e.proxy.quiesce(ctx); err != nil {
		return r, err
	}
	r.RSSBase = r.Before.RSS
	written0, finished0 := e.stream.written.Load(), e.stream.finished.Load()
	conns := make([]*tls.Conn, k)
	var rwg sync.WaitGroup
	defer func() {
		for _, c := range conns {
			if c != nil {
				c.Close()
			}
		}
		rwg.Wait()
	}()
	e.logf("slowread: %d clients, half never read, half read 1 KiB/s", k)
	errs, count := parallel(k, e.p.dialers, func(i int) error {
		c, _, err := e.d.tls(ctx, addr)
		if err != nil {
			return err
		}
		conns[i] = c
		if i%2 == 1 {
			rwg.Add(1)
			go func() {
				defer rwg.Done()
				buf := make([]byte, 1024)
				for {
					if _, err := io.ReadFull(c, buf); err != nil {
						return
					}
					time.Sleep(time.Second)
				}
			}()
		}
		return nil
	})
	r.failErrs("opening slow readers", errs, count)
	// Hold for slowFor, and on until the backend's writes have stalled:
	// once the socket buffers along the path are full, the backend can
	// write only what the 1 KiB/s readers drain, plus TCP window steps.
	// stallBound is that, generously; stallWait bounds the wait for the
	// buffers to fill (they hold megabytes per stream).
	const stallWait = 60 * time.Second
	stallBound := int64(k) * 64 << 10
	start := time.Now()
	for {
		rss, err := e.proxy.rss()
		if err != nil {
			return r, err
		}
		r.RSSMax = max(r.RSSMax, rss)
		el := time.Since(start)
		if sec := int(el / time.Second); sec >= len(r.WrittenBySecond) {
			r.WrittenBySecond = append(r.WrittenBySecond, e.stream.written.Load()-written0)
		}
		if w := r.WrittenBySecond; el >= e.p.slowFor && len(w) >= 3 {
			if r.LastWindowBytes = w[len(w)-1] - w[len(w)-3]; r.LastWindowBytes <= stallBound {
				break
			}
		}
		if el > e.p.slowFor+stallWait {
			r.fail("the backend still wrote %d bytes in 2s after %v: its writes are not blocked (bound %d)", r.LastWindowBytes, el.Round(time.Second), stallBound)
			break
		}
		select {
		case <-ctx.Done():
			return r, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	r.HoldSeconds = time.Since(start).Seconds()
	if r.During, err = e.proxy.snapshot(ctx); err != nil {
		return r, err
	}
	r.BackendWritten = e.stream.written.Load() - written0
	r.MaxPerConn = e.stream.maxPerConn()
	r.Finished = e.stream.finished.Load() - finished0
	if r.Finished > 0 {
		r.fail("%d streams of %d bytes finished into clients that do not read: no back-pressure", r.Finished, r.StreamLimit)
	}
	if k > 0 {
		r.RSSPerClient = (r.RSSMax - r.RSSBase) / int64(k)
	}
	if r.RSSMax > r.RSSBase+r.RSSBound {
		r.fail("proxy RSS reached %d bytes, baseline %d + bound %d", r.RSSMax, r.RSSBase, r.RSSBound)
	}
	for i, c := range conns {
		if c != nil {
			c.Close()
			conns[i] = nil
		}
	}
	rwg.Wait()
	e.logf("slowread: closed; waiting for the proxy to recover")
	if r.After, err = e.proxy.waitBaseline(ctx, r.Before); err != nil {
		r.fail("%v", err)
	}
	return r, nil
}

// ---- 5. hostile

type hostileCase struct {
	Kind          string         `json:"kind"`
	Connections   int            `json:"connections"`
	ClosedByProxy int            `json:"closed_by_proxy"`
	TimeToClose   latencies      `json:"time_to_close"`
	Counted       map[string]int `json:"handshake_errors_counted"`
}

type hostileResult struct {
	outcome
	HandshakeTimeout float64       `json:"handshake_timeout_seconds"`
	Cases            []hostileCase `json:"cases"`
	NormalAfter      int           `json:"normal_clients_after"`
	Alive            bool          `json:"proxy_alive"`
	Before           snapshot      `json:"before"`
	After            snapshot      `json:"after"`
}

// hostileInputs are the byte strings sent on the TLS port, each on its
// own connection. Random bytes come from a fixed seed: a failure repeats.
func (e *env) hostileInputs() []struct {
	kind    string
	payload []byte
	fin     bool // half-close after sending
} {
	rng := rand.New(rand.NewPCG(1, 2))
	random := func(n int) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		return b
	}
	malformed := append([]byte{0x16, 0x03, 0x01, 0x00, 0xc8, 0x01, 0x00, 0x00, 0xc4}, random(0xc4)...)
	badVersion := append([]byte{}, e.hello...)
	badVersion[1], badVersion[2] = 0x7f, 0x7f
	var zeros []byte
	for range 32 {
		zeros = append(zeros, 0x16, 0x03, 0x01, 0x00, 0x00)
	}
	return []struct {
		kind    string
		payload []byte
		fin     bool
	}{
		{"record_65535", append([]byte{0x16, 0x03, 0x01, 0xff, 0xff}, make([]byte, 1024)...), false},
		{"handshake_16MiB", []byte{0x16, 0x03, 0x01, 0x00, 0x04, 0x01, 0xff, 0xff, 0xff}, false},
		{"random_after_header", malformed, false},
		{"truncated_then_fin", e.hello[:len(e.hello)/2], true},
		{"tls10_only", e.hello1, false},
		{"bad_record_version", badVersion, false},
		{"zero_length_records", zeros, false},
		{"http_get", []byte("GET / HTTP/1.1\r\nHost: soak\r\n\r\n"), false},
		{"ssh_banner", []byte("SSH-2.0-OpenSSH_9.6p1 Ubuntu-3ubuntu13\r\n"), false},
		{"random_1MiB", random(1 << 20), false},
		{"hello_then_garbage", append(append([]byte{}, e.hello...), random(4096)...), false},
	}
}

func (e *env) hostile(ctx context.Context) (r hostileResult, err error) {
	r.HandshakeTimeout = hostileTimeout.Seconds()
	addr := e.proxy.addrs["hostile"]
	if r.Before, err = e.proxy.quiesce(ctx); err != nil {
		return r, err
	}
	for _, in := range e.hostileInputs() {
		m0, err := e.proxy.scrape(ctx)
		if err != nil {
			return r, err
		}
		hc := hostileCase{Kind: in.kind, Connections: e.p.hostileReps}
		var (
			mu    sync.Mutex
			times []time.Duration
		)
		errs, count := parallel(hc.Connections, hc.Connections, func(i int) error {
			c, err := e.d.tcp(ctx, addr)
			if err != nil {
				return err
			}
			defer c.Close()
			t0 := time.Now()
			go func() {
				// The proxy may close before it has read everything: a
				// failed write is expected.
				_, _ = c.Write(in.payload)
				if in.fin {
					_ = c.CloseWrite()
				}
			}()
			if err := waitClosed(c, t0.Add(hostileTimeout+10*time.Second)); err != nil {
				return fmt.Errorf("%s: %w", in.kind, err)
			}
			mu.Lock()
			times = append(times, time.Since(t0))
			mu.Unlock()
			return nil
		})
		hc.ClosedByProxy = hc.Connections - count
		hc.TimeToClose = summarise(times)
		r.failErrs(in.kind, errs, count)
		m1, err := e.proxy.scrape(ctx)
		if err != nil {
			return r, err
		}
		hc.Counted = intMap(delta(m1.byLabel("sealproxy_handshake_errors_total", "kind", "listener", "hostile"),
			m0.byLabel("sealproxy_handshake_errors_total", "kind", "listener", "hostile")))
		n := 0
		for _, v := range hc.Counted {
			n += v
		}
		if n != hc.Connections {
			r.fail("%s: %d connections, %d handshake errors counted (%v)", in.kind, hc.Connections, n, hc.Counted)
		}
		// Closed before the handshake deadline, not by it: the proxy
		// recognised the input as bad rather than waiting it out.
		if t := hc.Counted["timeout"]; t > 0 {
			r.fail("%s: %d connections were closed only by the handshake timeout", in.kind, t)
		}
		r.Cases = append(r.Cases, hc)
		e.logf("hostile: %s: %d/%d closed, %v", in.kind, hc.ClosedByProxy, hc.Connections, hc.Counted)
	}
	r.Alive = e.proxy.alive() && e.proxy.get(ctx, "/healthz") == nil
	if !r.Alive {
		r.fail("the proxy is not alive and healthy after the hostile inputs")
	}
	errs, count := parallel(20, 4, func(i int) error {
		c, _, err := e.d.tls(ctx, addr)
		if err != nil {
			return err
		}
		defer c.Close()
		return echo(c, fmt.Sprintf("normal %d after hostile\n", i))
	})
	r.NormalAfter = 20 - count
	r.failErrs("normal clients after the hostile inputs", errs, count)
	if r.After, err = e.proxy.waitBaseline(ctx, r.Before); err != nil {
		r.fail("%v", err)
	}
	return r, nil
}
