package unlock

import (
	"sync"

	"github.com/sealproxy/sealproxy/unlock/tang"
)

// session is one Decrypt's approval session: every tang recovery in the
// JWE tree is prepared up front, so that each gate can be told how many
// keys to expect, and the host can commit to all of its points there
// before the first request is sent (tang.Exchange).
type session struct {
	id        string
	host      string
	urls      map[string]string         // by the tang JWE's protected header: the gate's base URL
	points    map[string][][]byte       // by gate URL
	exchanges map[string]*tang.Exchange // by gate URL

	mu       sync.Mutex
	blinds   map[string]*tang.Blind // by protected header; taken by the recovery that uses it
	reported map[string]bool        // gate URL
}

func newSession(id, host string, jwes ...[]byte) *session {
	s := &session{
		id: id, host: host, blinds: map[string]*tang.Blind{}, urls: map[string]string{},
		points: map[string][][]byte{}, exchanges: map[string]*tang.Exchange{}, reported: map[string]bool{},
	}
	for _, data := range jwes {
		s.walk(data)
	}
	for url, pts := range s.points {
		s.exchanges[url] = tang.NewExchange(pts...)
	}
	return s
}

// walk prepares the recoveries of data and its sss children. A JWE that
// does not parse is skipped: decrypt reports it when it gets there.
func (s *session) walk(data []byte) {
	j, err := parseJWE(data)
	if err != nil || j.header.Clevis == nil {
		return
	}
	switch j.header.Clevis.Pin {
	case "tang":
		if _, seen := s.blinds[j.protected]; seen {
			return
		}
		url, blind, err := tangBlind(j)
		if err != nil {
			return
		}
		s.blinds[j.protected] = blind
		s.urls[j.protected] = url
		s.points[url] = append(s.points[url], blind.Point())
	case "sss":
		if node := j.header.Clevis.SSS; node != nil {
			for _, child := range node.JWE {
				s.walk([]byte(child))
			}
		}
	}
}

// recovery hands the prepared blind of a tang JWE over to its caller,
// who wipes it, with the session's options for its gate. The blind is nil
// if it was not prepared, or was already taken or wiped.
func (s *session) recovery(j *jwe, opts *Options) (string, *tang.Blind, *tang.RecoverOptions) {
	s.mu.Lock()
	blind := s.blinds[j.protected]
	delete(s.blinds, j.protected)
	s.mu.Unlock()
	if blind == nil {
		return "", nil, &tang.RecoverOptions{}
	}
	url := s.urls[j.protected]
	ro := &tang.RecoverOptions{
		Session: &tang.Session{ID: s.id, Host: s.host, Keys: len(s.points[url]), Exchange: s.exchanges[url]},
	}
	if opts != nil && opts.OnPending != nil {
		report := opts.OnPending
		ro.OnPending = func(p tang.Pending) { s.onPending(p, report) }
	}
	return url, blind, ro
}

// onPending reports each gate's code once, however many of its
// recoveries are held.
func (s *session) onPending(p tang.Pending, report func(tang.Pending)) {
	s.mu.Lock()
	seen := s.reported[p.URL]
	s.reported[p.URL] = true
	s.mu.Unlock()
	if !seen {
		report(p)
	}
}

// wipe erases the blinds no recovery took. Recoveries still running (sss
// children no longer needed) wipe their own.
func (s *session) wipe() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for key, b := range s.blinds {
		b.Wipe()
		delete(s.blinds, key)
	}
}
