package unlock

import (
	"sync"

	"github.com/sealproxy/sealproxy/unlock/tang"
)

// Startup names one start-up of one host to the gates it asks: all of its
// recoveries at one gate are one approval group (tang.ApprovalGroup, the
// gate's "session"), approved by one decision. By default each Decrypt is
// a start-up of its own; Prepare makes several JWEs (all keys of one
// start-up) one.
type Startup struct {
	ID   string // random; NewStartup makes one
	Host string // a label for the operator, e.g. the host name

	mu       sync.Mutex
	prepared *recoveryPlan
}

// NewStartup returns a start-up with a fresh random id.
func NewStartup(host string) *Startup {
	return &Startup{ID: tang.NewSessionID(), Host: host}
}

// Prepare blinds every tang recovery of these JWEs now, so that each gate
// is told how many keys the whole start-up sends it and one decision
// approves them all; Decrypt of any of them with this start-up uses the
// prepared recoveries (each once). Call Close when done.
func (s *Startup) Prepare(jwes ...[]byte) {
	p := newRecoveryPlan(s.ID, s.Host, jwes...)
	s.mu.Lock()
	old := s.prepared
	s.prepared = p
	s.mu.Unlock()
	if old != nil {
		old.wipe()
	}
}

// Close wipes the prepared recoveries that no Decrypt used.
func (s *Startup) Close() {
	s.mu.Lock()
	p := s.prepared
	s.prepared = nil
	s.mu.Unlock()
	if p != nil {
		p.wipe()
	}
}

func (s *Startup) current() *recoveryPlan {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.prepared
}

// recoveryPlan is a start-up's recoveries prepared up front: every tang
// recovery in its JWE trees is blinded, so that each gate can be told how
// many keys to expect, and the host can commit to all of its points there
// before the first request is sent (tang.Exchange).
type recoveryPlan struct {
	id        string
	host      string
	urls      map[string]string         // by the tang JWE's protected header: the gate's base URL
	points    map[string][][]byte       // by gate URL
	exchanges map[string]*tang.Exchange // by gate URL

	mu       sync.Mutex
	blinds   map[string]*tang.Blind // by protected header; taken by the recovery that uses it
	reported map[string]bool        // gate URL
}

func newRecoveryPlan(id, host string, jwes ...[]byte) *recoveryPlan {
	p := &recoveryPlan{
		id: id, host: host, blinds: map[string]*tang.Blind{}, urls: map[string]string{},
		points: map[string][][]byte{}, exchanges: map[string]*tang.Exchange{}, reported: map[string]bool{},
	}
	for _, data := range jwes {
		p.add(data)
	}
	for url, pts := range p.points {
		p.exchanges[url] = tang.NewExchange(pts...)
	}
	return p
}

// add prepares the recoveries of data, through its pin. A JWE that does
// not parse, or whose pin this build lacks, is skipped: decrypt reports
// it when it gets there.
func (p *recoveryPlan) add(data []byte) {
	j, err := parseJWE(data)
	if err != nil {
		return
	}
	if pin, ok := lookup(j.header.Clevis.Pin); ok {
		pin.plan(p, j)
	}
}

// take hands the prepared blind of a tang JWE over to its caller, who
// wipes it, with the plan's options for its gate. The blind is nil if it
// was not prepared, or was already taken or wiped.
func (p *recoveryPlan) take(j *jwe, opts *Options) (string, *tang.Blind, *tang.RecoverOptions) {
	p.mu.Lock()
	blind := p.blinds[j.protected]
	delete(p.blinds, j.protected)
	p.mu.Unlock()
	if blind == nil {
		return "", nil, &tang.RecoverOptions{}
	}
	url := p.urls[j.protected]
	ro := &tang.RecoverOptions{
		Group: &tang.ApprovalGroup{ID: p.id, Host: p.host, Keys: len(p.points[url]), Exchange: p.exchanges[url]},
	}
	if opts != nil && opts.OnPending != nil {
		report := opts.OnPending
		ro.OnPending = func(pd tang.Pending) { p.onPending(pd, report) }
	}
	return url, blind, ro
}

// onPending reports each gate's code once, however many of its
// recoveries are held.
func (p *recoveryPlan) onPending(pd tang.Pending, report func(tang.Pending)) {
	p.mu.Lock()
	seen := p.reported[pd.URL]
	p.reported[pd.URL] = true
	p.mu.Unlock()
	if !seen {
		report(pd)
	}
}

// wipe erases the blinds no recovery took. Recoveries still running (sss
// children no longer needed) wipe their own.
func (p *recoveryPlan) wipe() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for key, b := range p.blinds {
		b.Wipe()
		delete(p.blinds, key)
	}
}
