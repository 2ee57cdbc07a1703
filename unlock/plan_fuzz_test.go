package unlock

import (
	"bytes"
	"testing"

	"github.com/sealproxy/sealproxy/unlock/tang"
)

// FuzzSessionPrepare feeds JWE files to a start-up's recovery plan, which
// walks the tang and sss tree before any recovery to prepare a blinded
// point for each Tang server (Startup.Prepare; the files are the sealed keys an
// attacker may swap). Seeds: the FuzzParseJWE corpus. Properties: no
// panic, no network; every prepared tang JWE parses, names a gate URL
// with points, and each gate's exchange commits to exactly its points;
// each blind is handed out once; wipe leaves none.
func FuzzSessionPrepare(f *testing.F) {
	f.Add([]byte("eyJhbGciOiJkaXIiLCJlbmMiOiJBMjU2R0NNIiwiY2xldmlzIjp7InBpbiI6InNzcyJ9fQ..AAAAAAAAAAAAAAAA.AA.AAAAAAAAAAAAAAAAAAAAAA"))
	f.Fuzz(func(t *testing.T, data []byte) {
		s := newRecoveryPlan("c2Vzc2lvbg", "host", data)
		defer s.wipe()
		npoints := 0
		for url, pts := range s.points {
			if len(pts) == 0 {
				t.Fatalf("gate %s with no points", url)
			}
			npoints += len(pts)
			x := s.exchanges[url]
			if x == nil {
				t.Fatalf("gate %s has no exchange", url)
			}
			nh, err1 := tang.DecodeNonce(x.Reveal())
			commit, err2 := tang.DecodeNonce(x.Commitment())
			if err1 != nil || err2 != nil || !bytes.Equal(commit, tang.Commitment(nh, pts...)) {
				t.Fatalf("gate %s: the exchange does not commit to the gate's points", url)
			}
		}
		if len(s.exchanges) != len(s.points) || len(s.blinds) != npoints || len(s.urls) != npoints {
			t.Fatalf("%d exchanges, %d gates, %d blinds, %d urls, %d points", len(s.exchanges), len(s.points), len(s.blinds), len(s.urls), npoints)
		}
		for protected, url := range s.urls {
			if _, ok := s.points[url]; !ok {
				t.Fatalf("tang JWE for %s has no points", url)
			}
			j := &jwe{protected: protected}
			got, blind, ro := s.take(j, nil)
			if blind == nil || got != url || ro.Group == nil || ro.Group.Keys != len(s.points[url]) || ro.Group.Exchange != s.exchanges[url] {
				t.Fatalf("recovery of a prepared JWE: %q %v %+v", got, blind != nil, ro)
			}
			blind.Wipe()
			if _, again, _ := s.take(j, nil); again != nil {
				t.Fatal("a blind was handed out twice")
			}
		}
		s.wipe()
		if len(s.blinds) != 0 {
			t.Fatalf("%d blinds after wipe", len(s.blinds))
		}
	})
}
