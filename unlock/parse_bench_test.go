package unlock

import (
	"testing"

	"github.com/sealproxy/sealproxy/testenv"
)

// BenchmarkParseTangJWE is the client-side parsing of one tang JWE:
// header, parts and (with go-jose) the allow-listed compact parse, and the
// lookup of its exchange key by thumbprint. The Tang round trip is not in it.
func BenchmarkParseTangJWE(b *testing.B) {
	srv := testenv.EmbeddedTang(b)
	jwe, err := Encrypt(b.Context(), "tang", []byte(srv.Config()), make([]byte, 241), nil)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		j, err := parseJWE(jwe)
		if err != nil {
			b.Fatal(err)
		}
		_, blind, err := tangBlind(j)
		if err != nil {
			b.Fatal(err)
		}
		blind.Wipe()
	}
}
