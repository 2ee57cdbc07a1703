package unlock

import (
	"context"
	"errors"
	"net/http"
	"reflect"
	"testing"

	"github.com/sealproxy/sealproxy/unlock/tang"
)

// offline is a Tang client that never reaches the network: every request
// fails as if the server were down. Decrypt then runs every step before and
// after the exchange on fuzzed input without contacting anything.
var offline = &tang.Client{HTTP: &http.Client{Transport: roundTripFunc(func(*http.Request) (*http.Response, error) {
	return nil, errors.New("offline")
})}}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// FuzzParseJWE feeds the parser that Decrypt and Inspect share. The seed
// corpus (testdata/fuzz/FuzzParseJWE) holds real tang, sss and nested sss
// JWEs and damaged ones. Properties: nothing panics; the parser accepts
// exactly what it can serialize again (round trip); Inspect and Decrypt
// fail with the package's errors and never return plaintext without a
// Tang server.
func FuzzParseJWE(f *testing.F) {
	f.Add([]byte("eyJhbGciOiJkaXIiLCJlbmMiOiJBMjU2R0NNIiwiY2xldmlzIjp7InBpbiI6InNzcyJ9fQ..AAAAAAAAAAAAAAAA.AA.AAAAAAAAAAAAAAAAAAAAAA"))
	f.Fuzz(func(t *testing.T, data []byte) {
		j, err := parseJWE(data)
		if err != nil {
			if j != nil {
				t.Fatal("parseJWE returned a JWE with an error")
			}
			if !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrJSONSerialization) {
				t.Fatalf("parseJWE error %v is neither ErrMalformed nor ErrJSONSerialization", err)
			}
			if _, ierr := Inspect(data); ierr == nil {
				t.Fatal("Inspect accepted what parseJWE rejects")
			}
		} else {
			// Round trip: serialized again (canonical base64url), it parses
			// to the same JWE.
			again := j.protected + ".." + b64.EncodeToString(j.iv) + "." + b64.EncodeToString(j.ciphertext) + "." + b64.EncodeToString(j.tag)
			j2, err := parseJWE([]byte(again))
			if err != nil {
				t.Fatalf("re-serialized JWE does not parse: %v", err)
			}
			if !reflect.DeepEqual(j, j2) {
				t.Fatalf("round trip changed the JWE:\n%+v\n%+v", j, j2)
			}
			n, err := Inspect(data)
			if err == nil && n.Pin != j.header.Clevis.Pin {
				t.Fatalf("Inspect pin %q, header pin %q", n.Pin, j.header.Clevis.Pin)
			}
		}

		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		buf, err := Decrypt(ctx, data, &Options{Tang: offline})
		if err == nil {
			buf.Destroy()
			t.Fatal("Decrypt succeeded without any Tang server")
		}
		if buf != nil {
			t.Fatal("Decrypt returned a buffer with an error")
		}
		var te *tang.Error
		switch {
		case errors.Is(err, ErrMalformed), errors.Is(err, ErrJSONSerialization),
			errors.Is(err, ErrUnknownPin), errors.Is(err, ErrNotEnoughShares),
			errors.As(err, &te):
		default:
			t.Fatalf("Decrypt error %q (%T) is none of the package's errors", err, err)
		}
	})
}
