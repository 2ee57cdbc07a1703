package tang_test

import (
	"crypto/hmac"
	"crypto/sha512"
	"errors"
	"strings"
	"testing"

	"github.com/sealproxy/sealproxy/unlock/tang"
)

// The guarantees our code keeps around go-jose's JWS verification
// (docs/unlock.md, "go-jose and our code").

// TestAdvertisementAlgorithmAllowList: a signature counts only under
// ES512, ES384 or ES256 on a key of its curve. A signature under "none",
// an HMAC keyed with the public key (the classic algorithm confusion) or
// any other algorithm go-jose knows does not verify the advertisement,
// even alongside the valid one.
func TestAdvertisementAlgorithmAllowList(t *testing.T) {
	dir, kp := newKeyDir(t)
	adv, err := loadKeys(t, dir).Advertisement("")
	if err != nil {
		t.Fatal(err)
	}
	payload := mustJWSPayload(t, adv)
	forged := func(alg string) map[string]any {
		protected := b64.EncodeToString([]byte(`{"alg":"` + alg + `","cty":"jwk-set+json"}`))
		mac := hmac.New(sha512.New, []byte(mustMarshal(t, kp.sig.Public())))
		mac.Write([]byte(protected + "." + payload))
		return map[string]any{"protected": protected, "signature": b64.EncodeToString(mac.Sum(nil))}
	}
	for _, alg := range []string{"none", "HS512", "HS256", "RS512", "PS512", "EdDSA", "ES256K", ""} {
		// Alone: nothing verifies.
		alone := editJWS(t, adv, func(m map[string]any) {
			sig := forged(alg)
			m["protected"], m["signature"] = sig["protected"], sig["signature"]
		})
		if _, err := tang.ParseAdvertisement(alone); !errors.Is(err, tang.ErrBadSignature) {
			t.Errorf("alg %q alone: %v, want ErrBadSignature", alg, err)
		}
		// Next to the valid signature: the JWS is refused as a whole.
		both := editJWS(t, adv, func(m map[string]any) {
			valid := map[string]any{"protected": m["protected"], "signature": m["signature"]}
			delete(m, "protected")
			delete(m, "signature")
			m["signatures"] = []any{forged(alg), valid}
		})
		if _, err := tang.ParseAdvertisement(both); !errors.Is(err, tang.ErrBadSignature) {
			t.Errorf("alg %q next to a valid ES512 signature: %v, want ErrBadSignature", alg, err)
		}
	}
}

// TestOversizedAdvertisementRefusedBeforeParse: the 64 KiB bound runs
// before any JSON is read, by us or by go-jose: an advertisement padded past
// it costs a handful of allocations, where parsing it costs dozens.
func TestOversizedAdvertisementRefusedBeforeParse(t *testing.T) {
	dir, _ := newKeyDir(t)
	adv, err := loadKeys(t, dir).Advertisement("")
	if err != nil {
		t.Fatal(err)
	}
	pad := func(n int) []byte {
		return []byte(string(adv[:len(adv)-1]) + `,"x":"` + strings.Repeat("a", n-len(adv)-7) + `"}`)
	}
	over, under := pad(64<<10+1), pad(64<<10)
	if _, err := tang.ParseAdvertisement(under); err != nil {
		t.Fatalf("an advertisement of exactly 64 KiB: %v", err)
	}
	if _, err := tang.ParseAdvertisement(over); !errors.Is(err, tang.ErrBadAdvertisement) || !strings.Contains(err.Error(), "larger than") {
		t.Fatalf("an advertisement over 64 KiB: %v, want ErrBadAdvertisement: larger than", err)
	}
	nOver := testing.AllocsPerRun(3, func() { tang.ParseAdvertisement(over) })
	nUnder := testing.AllocsPerRun(3, func() { tang.ParseAdvertisement(under) })
	if nOver > 4 || nUnder < 10*nOver {
		t.Fatalf("ParseAdvertisement allocates %.0f times over the bound, %.0f under it: the bound does not run first", nOver, nUnder)
	}
}
