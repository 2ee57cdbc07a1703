package gate

import (
	"fmt"
	"sync"
	"time"
)

// Events that anyone on the network can cause (an unauthorized operator
// call, a refused recovery) are audited, but not one fsynced line per
// call: a flood would fill the disk and turn every call into a disk
// write. Per event and source, the first noisyBurst of each noisyWindow
// are written; the rest are counted and written as one "suppressed" line
// when the window ends.
const (
	noisyBurst   = 10
	noisyWindow  = time.Minute
	noisySources = 4096 // beyond this many, further sources share one entry
)

type noisyKey struct{ event, source string }

type noisyCount struct {
	start      time.Time
	written    int
	suppressed int
}

type noisyLimiter struct {
	mu      sync.Mutex
	entries map[noisyKey]*noisyCount
}

// recordNoisy audits e unless its source has had its burst this window.
func (g *Gate) recordNoisy(e Event) {
	now := g.cfg.Now()
	n := &g.noisy
	n.mu.Lock()
	if n.entries == nil {
		n.entries = map[noisyKey]*noisyCount{}
	}
	due := n.expired(now)
	k := noisyKey{e.Event, e.Source}
	c, ok := n.entries[k]
	if !ok && len(n.entries) >= noisySources {
		k.source = "*"
		c, ok = n.entries[k]
	}
	if !ok {
		c = &noisyCount{start: now}
		n.entries[k] = c
	}
	write := c.written < noisyBurst
	if write {
		c.written++
	} else {
		c.suppressed++
		g.metrics.suppressed.Inc()
	}
	n.mu.Unlock()
	for _, s := range due {
		g.record(s)
	}
	if write {
		g.record(e)
	}
}

// flushNoisy writes the summaries of the windows that have ended.
func (g *Gate) flushNoisy() {
	n := &g.noisy
	n.mu.Lock()
	due := n.expired(g.cfg.Now())
	n.mu.Unlock()
	for _, s := range due {
		g.record(s)
	}
}

// expired drops the windows that ended before now and returns a
// summary event for each that suppressed anything. Called with n.mu held.
func (n *noisyLimiter) expired(now time.Time) []Event {
	var out []Event
	for k, c := range n.entries {
		if now.Sub(c.start) < noisyWindow {
			continue
		}
		delete(n.entries, k)
		if c.suppressed > 0 {
			out = append(out, Event{Event: "suppressed", Source: k.source,
				Outcome: fmt.Sprintf("%d more %q events from this source in %v after %d written", c.suppressed, k.event, noisyWindow, c.written)})
		}
	}
	return out
}
