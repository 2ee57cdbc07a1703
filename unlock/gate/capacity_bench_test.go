package gate

import (
	"fmt"
	"net/netip"
	"testing"
	"time"
)

// BenchmarkAdmitFull is what each new request of a flood costs under the
// gate's lock once the gate is full: MaxPending requests from 1,024
// networks plus a reserved pool's worth, with a few policy rules.
func BenchmarkAdmitFull(b *testing.B) {
	rules := []Rule{
		{Name: "a", Action: StateApproved, Sources: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("2001:db8::/32")}},
		{Name: "d", Action: StateDenied, Hosts: []string{"evil-*"}},
	}
	g := New(Config{Rules: rules})
	now := time.Now()
	add := func(source string) {
		rec := &recovery{kid: "k", source: source, keys: 2, session: source}
		room, err := g.admit(rec, now)
		if err != nil {
			b.Fatalf("filling from %s: %v", source, err)
		}
		g.requests["s:"+source] = &request{key: "s:" + source, source: source, keys: 2, state: StatePending, expires: now.Add(time.Hour), room: room}
	}
	for i := range DefaultMaxPending {
		add(fmt.Sprintf("100.%d.%d.1", 64+i/256, i%256))
	}
	for i := range DefaultMaxPendingReserved {
		add(fmt.Sprintf("10.1.%d.%d", i/256, i%256))
	}
	rec := &recovery{kid: "k", source: "198.51.100.1", keys: 2, session: "x"}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := g.admit(rec, now); err == nil {
			b.Fatal("a full gate admitted a request")
		}
	}
}
