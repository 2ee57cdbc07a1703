package gate

import (
	"fmt"
	"net/http"
	"net/netip"
	"time"
)

// admit decides whether the recovery rec, which starts a new request, may
// wait for a decision. Anyone who reaches the gate can start requests, so
// they are bounded per source address, per network and in all; what keeps
// a flood from locking hosts out:
//
//   - A request that a policy rule decides the moment it arrives (a
//     single recovery, or a one-key session) never waits, so it needs no
//     room: rules run before the bounds.
//   - Sources an approve rule names, or Config.Reserved lists, wait in a
//     pool of their own (MaxPendingReserved), which requests from
//     elsewhere cannot fill; the per-network bound does not apply to
//     them, so a rack of known hosts can start at once.
//   - Other sources share MaxPending, at most MaxPendingPerNetwork per /24
//     or /64: filling the pool takes addresses in many networks.
//
// Called with g.mu held. It returns the room the request takes.
func (g *Gate) admit(rec *recovery, now time.Time) (room, error) {
	// A flood calls this for every request, under the lock: the loop
	// below compares only what each request's room holds.
	in := room{network: networkOf(rec.source), reserved: g.reserved(rec.source)}
	probe := &request{source: rec.source, host: rec.host, keys: rec.keys, points: []*point{{kid: rec.kid}}}
	if probe.complete() && g.ruleFor(probe, now) >= 0 {
		return in, nil
	}
	pool, fromSource, fromNetwork := 0, 0, 0
	for _, r := range g.requests {
		if r.state != StatePending {
			continue
		}
		if r.source == rec.source {
			fromSource++
		}
		if r.room.reserved != in.reserved {
			continue
		}
		pool++
		if r.room.network == in.network {
			fromNetwork++
		}
	}
	var err error
	switch {
	case fromSource >= g.cfg.MaxPendingPerSource:
		err = &errRefused{http.StatusTooManyRequests, fmt.Sprintf("%d requests from this source are already pending", fromSource)}
	case !in.reserved && fromNetwork >= g.cfg.MaxPendingPerNetwork:
		err = &errRefused{http.StatusTooManyRequests, fmt.Sprintf("%d requests from this source's network %s are already pending", fromNetwork, in.network)}
	case in.reserved && pool >= g.cfg.MaxPendingReserved:
		err = &errRefused{http.StatusServiceUnavailable, fmt.Sprintf("gate full: %d requests from reserved sources are waiting for a decision; try again once an operator decided some", pool)}
	case !in.reserved && pool >= g.cfg.MaxPending:
		err = &errRefused{http.StatusServiceUnavailable, fmt.Sprintf("gate full: %d requests are waiting for a decision; try again later, or ask the gate's operators to name this source in a policy rule or reserved_sources", pool)}
	}
	return in, err
}

// room is where a pending request counts against the bounds: its source's
// network, and whether the source is reserved.
type room struct {
	network  string
	reserved bool
}

// reserved reports whether source waits in the reserved pool: it is in
// Config.Reserved or in the sources of an approve rule.
func (g *Gate) reserved(source string) bool {
	a, err := netip.ParseAddr(source)
	if err != nil {
		return false
	}
	a = a.Unmap().WithZone("")
	for _, p := range g.cfg.Reserved {
		if p.Contains(a) {
			return true
		}
	}
	for i := range g.cfg.Rules {
		if g.cfg.Rules[i].Action != StateApproved {
			continue
		}
		for _, p := range g.cfg.Rules[i].Sources {
			if p.Contains(a) {
				return true
			}
		}
	}
	return false
}

// networkOf is the /24 (IPv4) or /64 (IPv6) of source, or source itself
// if it is no address.
func networkOf(source string) string {
	a, err := netip.ParseAddr(source)
	if err != nil {
		return source
	}
	a = a.Unmap().WithZone("")
	bits := 64
	if a.Is4() {
		bits = 24
	}
	p, err := a.Prefix(bits)
	if err != nil {
		return source
	}
	return p.String()
}
