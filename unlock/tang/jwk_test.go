package tang_test

import (
	"crypto/sha1"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sealproxy/sealproxy/testenv"
	"github.com/sealproxy/sealproxy/unlock/tang"
)

var b64 = base64.RawURLEncoding

// knownJWK was made by `jose jwk gen -i '{"alg":"ES512"}'` (jose 11); its
// thumbprints below are what `jose jwk thp -a S256|S1|S512` printed.
const knownJWK = `{"alg":"ES512","crv":"P-521","d":"AEhtPbaAFJ0MbBywO8WxWE4hJXDP7HxjmxrXYn1KMUAS7JwYsoq-R7y9eCYe4uha1KfiOr7uN-GDdOMGKAqAomEp","key_ops":["sign","verify"],"kty":"EC","x":"AZ37TXs16srlvBi-MhWRGIyVc8oyNHmXxPAnzwvcL3TWGYmPvadNlZFEOiTcoDnNSycOb_d26BWi1mniqRf9Abr9","y":"AW2k_2ZWOMHF4J__twdBK7Ed4lvELWY_Kb27j3Lq-83lqroyapAbsztEJWMcHq0Rg6tyGXd3_I3JXpPmFjH5A-4k"}`

const (
	knownThpS256 = "RsrQjDgP07hMdQCc_CeLtH4EXhTLZl83po7TLf9-M10"
	knownThpS1   = "Svh6zij37DEWTTHuZYWxFxOWYeU"
	knownThpS512 = "MVzzX_GCqrhChgUbQJWa7Y5x4yMnSpH2etbOYi750XM9q7i1z8Knaw_Hokm7kxHvQUj6hTX2Qfk7DEqzTIGG2Q"
)

// rfc7638 computes a thumbprint by the RFC's recipe, written out by hand:
// the required EC members crv, kty, x, y in lexicographic order, no white
// space, hashed.
func rfc7638(k *tang.JWK, sum func([]byte) []byte) string {
	canonical := `{"crv":"` + k.Crv + `","kty":"EC","x":"` + k.X + `","y":"` + k.Y + `"}`
	return b64.EncodeToString(sum([]byte(canonical)))
}

func sha256Sum(b []byte) []byte { s := sha256.Sum256(b); return s[:] }
func sha1Sum(b []byte) []byte   { s := sha1.Sum(b); return s[:] }

func TestThumbprintKnownAnswer(t *testing.T) {
	k, err := tang.ParseJWK([]byte(knownJWK))
	if err != nil {
		t.Fatal(err)
	}
	if got := k.Thumbprint(); got != knownThpS256 {
		t.Errorf("Thumbprint = %s, want %s (jose jwk thp)", got, knownThpS256)
	}
	if got := rfc7638(k, sha256Sum); got != knownThpS256 {
		t.Errorf("the RFC 7638 recipe gives %s, want %s: the test's recipe is wrong", got, knownThpS256)
	}
	// The thumbprint is of the public members only: d, alg and key_ops
	// do not change it.
	if got := k.Public().Thumbprint(); got != knownThpS256 {
		t.Errorf("Public().Thumbprint = %s, want %s", got, knownThpS256)
	}
	for _, thp := range []string{knownThpS256, knownThpS1, knownThpS512} {
		if !k.HasThumbprint(thp) {
			t.Errorf("HasThumbprint(%s) = false", thp)
		}
	}
	for _, thp := range []string{
		"", knownThpS256[:42], knownThpS256 + "A", strings.ToLower(knownThpS256),
		knownThpS1[:26] + "V", rfc7638(k, func(b []byte) []byte { return sha256Sum(append(b, ' ')) }),
	} {
		if k.HasThumbprint(thp) {
			t.Errorf("HasThumbprint(%q) = true", thp)
		}
	}
}

// TestThumbprintMatchesJose checks fresh keys of ours against jose, when
// jose is installed.
func TestThumbprintMatchesJose(t *testing.T) {
	dir := t.TempDir()
	if _, err := tang.Keygen(dir); err != nil {
		t.Fatal(err)
	}
	files, _ := filepath.Glob(filepath.Join(dir, "*.jwk"))
	if len(files) != 2 {
		t.Fatalf("Keygen wrote %d keys, want 2", len(files))
	}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		k, err := tang.ParseJWK(data)
		if err != nil {
			t.Fatal(err)
		}
		if got, want := k.Thumbprint(), rfc7638(k, sha256Sum); got != want {
			t.Errorf("%s: Thumbprint = %s, RFC 7638 by hand gives %s", f, got, want)
		}
		if !k.HasThumbprint(rfc7638(k, sha1Sum)) {
			t.Errorf("%s: HasThumbprint(SHA-1 thumbprint) = false", f)
		}
	}
	jose := testenv.LookTool(t, "jose", "jose")
	for _, f := range files {
		data, _ := os.ReadFile(f)
		k, _ := tang.ParseJWK(data)
		for alg, want := range map[string]string{"S256": k.Thumbprint(), "S1": rfc7638(k, sha1Sum)} {
			out, err := exec.Command(jose, "jwk", "thp", "-i", f, "-a", alg).Output()
			if err != nil {
				t.Fatalf("jose jwk thp: %v", err)
			}
			if got := strings.TrimSpace(string(out)); got != want {
				t.Errorf("%s: jose jwk thp -a %s = %s, we compute %s", f, alg, got, want)
			} else if !k.HasThumbprint(got) {
				t.Errorf("%s: HasThumbprint(jose's %s) = false", f, alg)
			}
		}
	}
}

func mutateJWK(t *testing.T, src string, f func(m map[string]any)) string {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal([]byte(src), &m); err != nil {
		t.Fatal(err)
	}
	f(m)
	out, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return string(out)
}

func TestParseJWK(t *testing.T) {
	pub, err := json.Marshal(mustParseJWK(t, knownJWK).Public())
	if err != nil {
		t.Fatal(err)
	}
	flipY := func(m map[string]any) {
		y, _ := b64.DecodeString(m["y"].(string))
		y[len(y)-1] ^= 1
		m["y"] = b64.EncodeToString(y)
	}
	tests := []struct {
		name     string
		in       string
		wantErr  error
		wantErr2 error
	}{
		{"private key", knownJWK, nil, nil},
		{"public key", string(pub), nil, nil},
		{"not JSON", `{"kty":`, tang.ErrBadKey, nil},
		{"JSON array", `[]`, tang.ErrBadKey, nil},
		{"empty", ``, tang.ErrBadKey, nil},
		{"RSA", `{"kty":"RSA","n":"AQAB","e":"AQAB"}`, tang.ErrBadKey, nil},
		{"oct", `{"kty":"oct","k":"AAAA"}`, tang.ErrBadKey, nil},
		{"no kty", mutateJWK(t, string(pub), func(m map[string]any) { delete(m, "kty") }), tang.ErrBadKey, nil},
		{"unsupported curve", mutateJWK(t, string(pub), func(m map[string]any) { m["crv"] = "P-192" }), tang.ErrBadKey, nil},
		{"curve of the wrong size", mutateJWK(t, string(pub), func(m map[string]any) { m["crv"] = "P-256" }), tang.ErrBadKey, nil},
		{"x missing", mutateJWK(t, string(pub), func(m map[string]any) { delete(m, "x") }), tang.ErrBadKey, nil},
		{"x not base64url", mutateJWK(t, string(pub), func(m map[string]any) { m["x"] = "+/+/" + m["x"].(string)[4:] }), tang.ErrBadKey, nil},
		{"x short", mutateJWK(t, string(pub), func(m map[string]any) { m["x"] = m["x"].(string)[2:] }), tang.ErrBadKey, nil},
		{"x padded", mutateJWK(t, string(pub), func(m map[string]any) { m["x"] = m["x"].(string) + "==" }), tang.ErrBadKey, nil},
		{"off the curve", mutateJWK(t, string(pub), flipY), tang.ErrBadKey, tang.ErrNotOnCurve},
		{"d of another key", mutateJWK(t, knownJWK, func(m map[string]any) {
			d, _ := b64.DecodeString(m["d"].(string))
			d[len(d)-1] ^= 1
			m["d"] = b64.EncodeToString(d)
		}), tang.ErrBadKey, nil},
		{"d short", mutateJWK(t, knownJWK, func(m map[string]any) { m["d"] = m["d"].(string)[4:] }), tang.ErrBadKey, nil},
		{"d not base64url", mutateJWK(t, knownJWK, func(m map[string]any) { m["d"] = "!" + m["d"].(string)[1:] }), tang.ErrBadKey, nil},
		{"key_ops not a list", mutateJWK(t, string(pub), func(m map[string]any) { m["key_ops"] = "verify" }), tang.ErrBadKey, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			k, err := tang.ParseJWK([]byte(tc.in))
			if tc.wantErr == nil {
				if err != nil {
					t.Fatalf("ParseJWK: %v", err)
				}
				if k.Thumbprint() != knownThpS256 {
					t.Fatalf("thumbprint %s, want %s", k.Thumbprint(), knownThpS256)
				}
				return
			}
			if !errors.Is(err, tc.wantErr) || (tc.wantErr2 != nil && !errors.Is(err, tc.wantErr2)) {
				t.Fatalf("ParseJWK = %v, want %v %v", err, tc.wantErr, tc.wantErr2)
			}
			if k != nil {
				t.Fatalf("ParseJWK returned a key with the error: %+v", k)
			}
		})
	}
}

func mustParseJWK(t *testing.T, s string) *tang.JWK {
	t.Helper()
	k, err := tang.ParseJWK([]byte(s))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestJWKPublicAndUses(t *testing.T) {
	k := mustParseJWK(t, knownJWK)
	p := k.Public()
	if p.D != "" {
		t.Fatal("Public kept d")
	}
	if strings.Join(p.KeyOps, ",") != "verify" {
		t.Fatalf("Public key_ops = %v, want [verify] (as jose jwk pub)", p.KeyOps)
	}
	if k.D == "" || len(k.KeyOps) != 2 {
		t.Fatal("Public modified its receiver")
	}
	// The same bytes as `jose jwk pub -i sig.jwk`.
	const josePub = `{"alg":"ES512","crv":"P-521","key_ops":["verify"],"kty":"EC","x":"AZ37TXs16srlvBi-MhWRGIyVc8oyNHmXxPAnzwvcL3TWGYmPvadNlZFEOiTcoDnNSycOb_d26BWi1mniqRf9Abr9","y":"AW2k_2ZWOMHF4J__twdBK7Ed4lvELWY_Kb27j3Lq-83lqroyapAbsztEJWMcHq0Rg6tyGXd3_I3JXpPmFjH5A-4k"}`
	if out, _ := json.Marshal(p); string(out) != josePub {
		t.Errorf("Public marshals as\n%s\nwant (jose jwk pub)\n%s", out, josePub)
	}
	if !p.IsSigning() || p.IsExchange() || !k.Can(tang.OpSign) || p.Can(tang.OpSign) {
		t.Error("uses of a signing key are wrong")
	}

	signOnly := &tang.JWK{Kty: "EC", Alg: "ES512", KeyOps: []string{"sign"}}
	if sp := signOnly.Public(); len(sp.KeyOps) != 0 {
		t.Errorf("Public of a sign-only key has key_ops %v", sp.KeyOps)
	}

	for _, tc := range []struct {
		k                  tang.JWK
		signing, exchanger bool
	}{
		{tang.JWK{Alg: "ECMR", KeyOps: []string{"deriveKey"}}, false, true},
		{tang.JWK{KeyOps: []string{"deriveKey"}}, false, true},
		{tang.JWK{Alg: "ES512", KeyOps: []string{"deriveKey"}}, false, false},
		{tang.JWK{KeyOps: []string{"verify"}}, true, false},
		{tang.JWK{Alg: "ECMR", KeyOps: []string{"verify"}}, false, false},
		{tang.JWK{Alg: "ES512"}, false, false}, // no key_ops: good for nothing
		{tang.JWK{}, false, false},
	} {
		if tc.k.IsSigning() != tc.signing || tc.k.IsExchange() != tc.exchanger {
			t.Errorf("%+v: IsSigning %v IsExchange %v, want %v %v", tc.k, tc.k.IsSigning(), tc.k.IsExchange(), tc.signing, tc.exchanger)
		}
	}
}
