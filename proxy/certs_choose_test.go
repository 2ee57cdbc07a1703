package proxy

import (
	"crypto/tls"
	"testing"
)

// TestChooseFoldsASCIIOnly: a certificate is chosen for a server name
// in ASCII case only, as names are compared everywhere else (matchDNS):
// the Kelvin sign (U+212A) is not a "k".
func TestChooseFoldsASCIIOnly(t *testing.T) {
	def, k, wild := &tls.Certificate{}, &tls.Certificate{}, &tls.Certificate{}
	s := &certSet{def: def, names: map[string]*tls.Certificate{"k.test": k, "*.svc.test": wild}}
	for name, want := range map[string]*tls.Certificate{
		"k.test":          k,
		"K.TEST.":         k,
		"\u212a.test":     def,
		"a.SVC.test":      wild,
		"a.svc.te\u212at": def,
		"":                def,
	} {
		if got := s.choose(name); got != want {
			t.Errorf("choose(%q) picked the wrong certificate", name)
		}
	}
}
