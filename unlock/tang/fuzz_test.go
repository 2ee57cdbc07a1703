package tang_test

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/sealproxy/sealproxy/unlock/tang"
)

// The seed corpora are in testdata/fuzz/<FuzzName>/: advertisements of our
// server (one and two signing keys) and of tangd 11, keys of every kind,
// and edge cases. `make fuzz` runs these targets.

func FuzzParseAdvertisement(f *testing.F) {
	for _, name := range []string{"tangd11-adv-flattened.json", "tangd11-adv-general.json"} {
		if data, err := os.ReadFile(filepath.Join("testdata", name)); err == nil {
			f.Add(data)
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		adv, err := tang.ParseAdvertisement(data)
		if err != nil {
			if adv != nil {
				t.Fatal("advertisement returned with an error")
			}
			if !errors.Is(err, tang.ErrBadAdvertisement) && !errors.Is(err, tang.ErrBadSignature) {
				t.Fatalf("error %v wraps neither ErrBadAdvertisement nor ErrBadSignature", err)
			}
			return
		}
		thps := adv.SigningThumbprints()
		if len(thps) == 0 {
			t.Fatal("a verified advertisement without signing keys")
		}
		for _, thp := range thps {
			if err := adv.Trust(thp); err != nil {
				t.Fatalf("Trust(own thumbprint %s): %v", thp, err)
			}
		}
		for _, k := range adv.Keys {
			if k.D != "" {
				t.Fatal("a key with a private part was accepted")
			}
			if err := k.Validate(); err != nil {
				t.Fatalf("an accepted key does not validate: %v", err)
			}
		}
		// The payload alone (what a JWE header stores) gives the same keys.
		again, err := tang.AdvertisementFromPayload(adv.Payload)
		if err != nil {
			t.Fatalf("AdvertisementFromPayload of a verified payload: %v", err)
		}
		if !slices.Equal(again.SigningThumbprints(), thps) || len(again.Keys) != len(adv.Keys) {
			t.Fatal("the payload parses to other keys")
		}
	})
}

func FuzzParseJWK(f *testing.F) {
	f.Add([]byte(knownJWK))
	f.Fuzz(func(t *testing.T, data []byte) {
		k, err := tang.ParseJWK(data)
		if err != nil {
			if k != nil {
				t.Fatal("key returned with an error")
			}
			if !errors.Is(err, tang.ErrBadKey) {
				t.Fatalf("error %v does not wrap ErrBadKey", err)
			}
			return
		}
		if k.Kty != "EC" {
			t.Fatalf("accepted kty %q", k.Kty)
		}
		thp := k.Thumbprint()
		if !k.HasThumbprint(thp) || len(thp) != 43 {
			t.Fatalf("HasThumbprint(own thumbprint %q) = false", thp)
		}
		// Round trip: what we write, we read back as the same key.
		out, err := json.Marshal(k)
		if err != nil {
			t.Fatal(err)
		}
		k2, err := tang.ParseJWK(out)
		if err != nil {
			t.Fatalf("re-parsing %s: %v", out, err)
		}
		if k2.Alg != k.Alg || k2.Crv != k.Crv || k2.D != k.D || k2.X != k.X || k2.Y != k.Y || !slices.Equal(k2.KeyOps, k.KeyOps) {
			t.Fatalf("round trip changed the key:\n%+v\n%+v", k, k2)
		}
		out2, _ := json.Marshal(k2)
		if string(out2) != string(out) {
			t.Fatalf("round trip is not stable:\n%s\n%s", out, out2)
		}
		// The public half is a valid key with the same thumbprint.
		p := k.Public()
		if p.D != "" || p.Validate() != nil || p.Thumbprint() != thp || slices.Contains(p.KeyOps, tang.OpSign) {
			t.Fatalf("Public() = %+v", p)
		}
	})
}
