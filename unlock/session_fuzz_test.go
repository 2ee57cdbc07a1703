package unlock

import (
	"testing"

	"github.com/sealproxy/sealproxy/unlock/tang"
)

// FuzzSessionPrepare feeds JWE files to an approval session, which walks
// the tang and sss tree before any recovery to prepare a blinded point
// for each Tang server (Session.Prepare; the files are the sealed keys an
// attacker may swap). Seeds: the FuzzParseJWE corpus. Properties: no
// panic, no network; every prepared tang JWE parses, names a gate URL
// with points, and each gate's code is ApprovalCode over its points;
// each blind is handed out once; wipe leaves none.
func FuzzSessionPrepare(f *testing.F) {
	f.Add([]byte("eyJhbGciOiJkaXIiLCJlbmMiOiJBMjU2R0NNIiwiY2xldmlzIjp7InBpbiI6InNzcyJ9fQ..AAAAAAAAAAAAAAAA.AA.AAAAAAAAAAAAAAAAAAAAAA"))
	f.Fuzz(func(t *testing.T, data []byte) {
		s := newSession("c2Vzc2lvbg", "host", data)
		defer s.wipe()
		npoints := 0
		for url, pts := range s.points {
			if len(pts) == 0 {
				t.Fatalf("gate %s with no points", url)
			}
			npoints += len(pts)
			if want := tang.ApprovalCode(pts...); s.codes[url] != want {
				t.Fatalf("gate %s code %q, want %q", url, s.codes[url], want)
			}
		}
		if len(s.codes) != len(s.points) || len(s.blinds) != npoints || len(s.urls) != npoints {
			t.Fatalf("%d codes, %d gates, %d blinds, %d urls, %d points", len(s.codes), len(s.points), len(s.blinds), len(s.urls), npoints)
		}
		for protected, url := range s.urls {
			if _, ok := s.points[url]; !ok {
				t.Fatalf("tang JWE for %s has no points", url)
			}
			j := &jwe{protected: protected}
			got, blind, ro := s.recovery(j, nil)
			if blind == nil || got != url || ro.Session == nil || ro.Session.Keys != len(s.points[url]) || ro.Code != s.codes[url] {
				t.Fatalf("recovery of a prepared JWE: %q %v %+v", got, blind != nil, ro)
			}
			blind.Wipe()
			if _, again, _ := s.recovery(j, nil); again != nil {
				t.Fatal("a blind was handed out twice")
			}
		}
		s.wipe()
		if len(s.blinds) != 0 {
			t.Fatalf("%d blinds after wipe", len(s.blinds))
		}
	})
}
