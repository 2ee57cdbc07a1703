package tang_test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha512"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/sealproxy/sealproxy/unlock/tang"
)

// editJWS decodes a JWS JSON object, lets f change it and encodes it again.
func editJWS(t *testing.T, jws []byte, f func(m map[string]any)) []byte {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(jws, &m); err != nil {
		t.Fatal(err)
	}
	f(m)
	out, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// flipB64 flips one bit of the bytes a base64url string encodes.
func flipB64(s string, i int) string {
	b, err := b64.DecodeString(s)
	if err != nil {
		panic(err)
	}
	b[i%len(b)] ^= 0x10
	return b64.EncodeToString(b)
}

// twoSignerAdv makes a directory with two active key pairs, whose
// advertisement is the general JWS form with two signatures.
func twoSignerAdv(t *testing.T) ([]byte, []string) {
	t.Helper()
	dir := t.TempDir()
	thp1, err := tang.Keygen(dir)
	if err != nil {
		t.Fatal(err)
	}
	thp2, err := tang.Keygen(dir)
	if err != nil {
		t.Fatal(err)
	}
	adv, err := loadKeys(t, dir).Advertisement("")
	if err != nil {
		t.Fatal(err)
	}
	return adv, []string{thp1, thp2}
}

func TestParseAdvertisement(t *testing.T) {
	dir, kp := newKeyDir(t)
	adv, err := loadKeys(t, dir).Advertisement("")
	if err != nil {
		t.Fatal(err)
	}
	general, thps := twoSignerAdv(t)

	if _, sigs := jwsSigs(t, adv); len(sigs) != 1 || strings.Contains(string(adv), `"signatures"`) {
		t.Fatalf("one signing key: want the flattened form, got %s", adv)
	}
	if _, sigs := jwsSigs(t, general); len(sigs) != 2 || !strings.Contains(string(general), `"signatures"`) {
		t.Fatalf("two signing keys: want the general form with 2 signatures, got %s", general)
	}
	if !signedBy(t, adv, kp.sig) {
		t.Fatal("the advertisement does not verify with its signing key (checked independently)")
	}

	privPayload := b64.EncodeToString([]byte(`{"keys":[` + knownJWK + `]}`))
	excPub, _ := json.Marshal(kp.exc.Public())
	excOnly := b64.EncodeToString([]byte(`{"keys":[` + string(excPub) + `]}`))
	_, sigs := jwsSigs(t, adv)

	tests := []struct {
		name    string
		in      []byte
		wantErr error
		thps    []string
	}{
		{"flattened", adv, nil, []string{kp.sig.Thumbprint()}},
		{"general", general, nil, thps},
		{"signature bit flipped", editJWS(t, adv, func(m map[string]any) { m["signature"] = flipB64(m["signature"].(string), 7) }), tang.ErrBadSignature, nil},
		{"s of signature flipped", editJWS(t, adv, func(m map[string]any) { m["signature"] = flipB64(m["signature"].(string), 100) }), tang.ErrBadSignature, nil},
		{"signature truncated", editJWS(t, adv, func(m map[string]any) { m["signature"] = m["signature"].(string)[:40] }), tang.ErrBadSignature, nil},
		{"signature not base64url", editJWS(t, adv, func(m map[string]any) { m["signature"] = "*" + m["signature"].(string)[1:] }), tang.ErrBadSignature, nil},
		{"payload changed", editJWS(t, adv, func(m map[string]any) {
			// Drop the exchange key: still a valid key set, not what was signed.
			m["payload"] = b64.EncodeToString([]byte(`{"keys":[` + mustMarshal(t, kp.sig.Public()) + `]}`))
		}), tang.ErrBadSignature, nil},
		{"protected header alg ES256", editJWS(t, adv, func(m map[string]any) {
			m["protected"] = b64.EncodeToString([]byte(`{"alg":"ES256","cty":"jwk-set+json"}`))
		}), tang.ErrBadSignature, nil},
		{"protected header changed", editJWS(t, adv, func(m map[string]any) {
			m["protected"] = b64.EncodeToString([]byte(`{"cty":"jwk-set+json","alg":"ES512"}`))
		}), tang.ErrBadSignature, nil},
		{"one of two signatures removed", editJWS(t, general, func(m map[string]any) {
			m["signatures"] = m["signatures"].([]any)[:1]
		}), tang.ErrBadSignature, nil},
		{"one of two signatures duplicated over the other", editJWS(t, general, func(m map[string]any) {
			s := m["signatures"].([]any)
			s[1] = s[0]
		}), tang.ErrBadSignature, nil},
		{"signature of another key set", editJWS(t, general, func(m map[string]any) {
			m["payload"] = mustJWSPayload(t, adv)
		}), tang.ErrBadSignature, nil},
		{"not JSON", []byte("HTTP/1.1 200 OK"), tang.ErrBadAdvertisement, nil},
		{"empty", nil, tang.ErrBadAdvertisement, nil},
		{"compact JWS", []byte(sigs[0]["protected"] + "." + mustJWSPayload(t, adv) + "." + sigs[0]["signature"]), tang.ErrBadAdvertisement, nil},
		{"no signatures", []byte(`{"payload":"` + mustJWSPayload(t, adv) + `"}`), tang.ErrBadAdvertisement, nil},
		{"empty signatures", []byte(`{"payload":"` + mustJWSPayload(t, adv) + `","signatures":[]}`), tang.ErrBadAdvertisement, nil},
		{"flattened and general", editJWS(t, adv, func(m map[string]any) {
			m["signatures"] = []any{map[string]any{"protected": m["protected"], "signature": m["signature"]}}
		}), tang.ErrBadAdvertisement, nil},
		{"payload not base64url", editJWS(t, adv, func(m map[string]any) { m["payload"] = "{}" }), tang.ErrBadAdvertisement, nil},
		{"payload not a key set", editJWS(t, adv, func(m map[string]any) { m["payload"] = b64.EncodeToString([]byte(`[1]`)) }), tang.ErrBadAdvertisement, nil},
		{"payload without keys", editJWS(t, adv, func(m map[string]any) { m["payload"] = b64.EncodeToString([]byte(`{"keys":[]}`)) }), tang.ErrBadAdvertisement, nil},
		{"payload with a private key", editJWS(t, adv, func(m map[string]any) { m["payload"] = privPayload }), tang.ErrBadAdvertisement, nil},
		{"payload without a signing key", editJWS(t, adv, func(m map[string]any) { m["payload"] = excOnly }), tang.ErrBadAdvertisement, nil},
		{"payload with an off-curve key", editJWS(t, adv, func(m map[string]any) {
			bad := *kp.exc.Public()
			bad.Y = flipB64(bad.Y, 3)
			m["payload"] = b64.EncodeToString([]byte(`{"keys":[` + mustMarshal(t, &bad) + `]}`))
		}), tang.ErrNotOnCurve, nil},
		{"oversized", append(append([]byte(nil), adv[:len(adv)-1]...), []byte(`,"x":"`+strings.Repeat("a", 64<<10)+`"}`)...), tang.ErrBadAdvertisement, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			a, err := tang.ParseAdvertisement(tc.in)
			if tc.wantErr == nil {
				if err != nil {
					t.Fatalf("ParseAdvertisement: %v", err)
				}
				got, want := a.SigningThumbprints(), slices.Clone(tc.thps)
				slices.Sort(got) // in key file order, which is not Keygen's
				slices.Sort(want)
				if !slices.Equal(got, want) {
					t.Fatalf("signing thumbprints %v, want %v", got, want)
				}
				if string(a.JWS) != string(tc.in) {
					t.Fatal("JWS is not the input")
				}
				for _, k := range a.Keys {
					if k.D != "" {
						t.Fatal("a parsed key carries d")
					}
				}
				return
			}
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("ParseAdvertisement = %v, want %v", err, tc.wantErr)
			}
			if a != nil {
				t.Fatal("an advertisement was returned with the error")
			}
		})
	}
}

func mustMarshal(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func mustJWSPayload(t *testing.T, jws []byte) string {
	t.Helper()
	p, _ := jwsSigs(t, jws)
	return p
}

func TestAdvertisementTrustAndKeys(t *testing.T) {
	dir, kp := newKeyDir(t)
	raw, err := loadKeys(t, dir).Advertisement("")
	if err != nil {
		t.Fatal(err)
	}
	adv, err := tang.ParseAdvertisement(raw)
	if err != nil {
		t.Fatal(err)
	}
	sigThp := kp.sig.Thumbprint()
	if err := adv.Trust(sigThp); err != nil {
		t.Errorf("Trust(signing key) = %v", err)
	}
	if err := adv.Trust(rfc7638(kp.sig, sha1Sum)); err != nil {
		t.Errorf("Trust(SHA-1 thumbprint of the signing key) = %v", err)
	}
	for name, thp := range map[string]string{
		"exchange key":  kp.exc.Thumbprint(), // not a signing key
		"other key":     knownThpS256,
		"empty":         "",
		"garbage":       "not a thumbprint",
		"SHA-1 of exch": rfc7638(kp.exc, sha1Sum),
	} {
		err := adv.Trust(thp)
		if !errors.Is(err, tang.ErrUntrusted) {
			t.Errorf("Trust(%s) = %v, want ErrUntrusted", name, err)
			continue
		}
		if !strings.Contains(err.Error(), sigThp) {
			t.Errorf("Trust(%s) error does not list the advertised thumbprint %s: %v", name, sigThp, err)
		}
	}

	exc, err := adv.ExchangeKey()
	if err != nil || exc.Thumbprint() != kp.exc.Thumbprint() {
		t.Fatalf("ExchangeKey = %v, %v", exc, err)
	}
	for _, kid := range []string{kp.exc.Thumbprint(), rfc7638(kp.exc, sha1Sum)} {
		if k, err := adv.FindExchangeKey(kid); err != nil || k.Thumbprint() != kp.exc.Thumbprint() {
			t.Errorf("FindExchangeKey(%s) = %v, %v", kid, k, err)
		}
	}
	if _, err := adv.FindExchangeKey(sigThp); !errors.Is(err, tang.ErrNoExchangeKey) {
		t.Errorf("FindExchangeKey(signing key) = %v, want ErrNoExchangeKey", err)
	}

	// The payload Clevis stores in a JWE rebuilds the same advertisement,
	// without the JWS.
	fromPayload, err := tang.AdvertisementFromPayload(adv.Payload)
	if err != nil {
		t.Fatal(err)
	}
	if fromPayload.JWS != nil || len(fromPayload.Keys) != 2 || fromPayload.Trust(sigThp) != nil {
		t.Fatalf("AdvertisementFromPayload = %+v", fromPayload)
	}
	if _, err := tang.AdvertisementFromPayload(raw); !errors.Is(err, tang.ErrBadAdvertisement) {
		t.Errorf("AdvertisementFromPayload(the JWS) = %v, want ErrBadAdvertisement", err)
	}

	excOnly, err := tang.AdvertisementFromPayload([]byte(`{"keys":[` + mustMarshal(t, kp.sig.Public()) + `]}`))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := excOnly.ExchangeKey(); !errors.Is(err, tang.ErrNoExchangeKey) {
		t.Errorf("ExchangeKey of a set without one = %v, want ErrNoExchangeKey", err)
	}
}

// TestAdvertisementOfImpostor builds the advertisement a man in the middle
// would serve: the victim's exchange key, signed by the impostor's own
// signing key. It verifies (it is self-consistent) but is not trusted.
func TestAdvertisementOfImpostor(t *testing.T) {
	_, victim := newKeyDir(t)
	_, impostor := newKeyDir(t)
	dir := t.TempDir()
	for _, f := range []string{victim.excPath, impostor.sigPath} {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, filepath.Base(f)), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	raw, err := loadKeys(t, dir).Advertisement("")
	if err != nil {
		t.Fatal(err)
	}
	adv, err := tang.ParseAdvertisement(raw)
	if err != nil {
		t.Fatal(err)
	}
	err = adv.Trust(victim.sig.Thumbprint())
	if !errors.Is(err, tang.ErrUntrusted) || !strings.Contains(err.Error(), impostor.sig.Thumbprint()) {
		t.Fatalf("Trust(victim) = %v, want ErrUntrusted naming %s", err, impostor.sig.Thumbprint())
	}
}

// TestParseTangdAdvertisement parses advertisements served by Debian's
// tangd 11 (testdata, captured with `tangd DIR < request`): the flattened
// form for one signing key, the general form for two. tangd writes its JSON
// with spaces, which a hand-rolled parser might trip on.
func TestParseTangdAdvertisement(t *testing.T) {
	for file, want := range map[string][]string{
		"tangd11-adv-flattened.json": {"w2mgmSa1Nu7RSJ8KPt1xxrn3igtiCQhSK-rmAdCjF1E"},
		"tangd11-adv-general.json":   {"QGw1DxsL6TbDUxZIdiMbCiqQOSnACdnSx8Mb78VES2Y", "w2mgmSa1Nu7RSJ8KPt1xxrn3igtiCQhSK-rmAdCjF1E"},
	} {
		t.Run(file, func(t *testing.T) {
			data, err := os.ReadFile(filepath.Join("testdata", file))
			if err != nil {
				t.Fatal(err)
			}
			adv, err := tang.ParseAdvertisement(data)
			if err != nil {
				t.Fatal(err)
			}
			got := adv.SigningThumbprints()
			slices.Sort(got)
			if !slices.Equal(got, want) {
				t.Fatalf("signing thumbprints %v, want %v (tangd's key file names)", got, want)
			}
			for _, thp := range want {
				if err := adv.Trust(thp); err != nil {
					t.Fatal(err)
				}
			}
			if _, err := adv.ExchangeKey(); err != nil {
				t.Fatal(err)
			}
			// Tampering with tangd's own signature is noticed too.
			bad := bytes.Replace(data, []byte(`"signature": "`), []byte(`"signature": "AAAA`), 1)
			if _, err := tang.ParseAdvertisement(bad); !errors.Is(err, tang.ErrBadSignature) {
				t.Fatalf("tampered tangd advertisement: %v, want ErrBadSignature", err)
			}
		})
	}
}

// signJWS signs payload with the ES512 key k as tangd does, returning one
// signature object of the general JWS form.
func signJWS(t *testing.T, k *tang.JWK, payload string) map[string]any {
	t.Helper()
	d, err := b64.DecodeString(k.D)
	if err != nil {
		t.Fatal(err)
	}
	priv, err := ecdsa.ParseRawPrivateKey(elliptic.P521(), d)
	if err != nil {
		t.Fatal(err)
	}
	protected := b64.EncodeToString([]byte(`{"alg":"ES512","cty":"jwk-set+json"}`))
	h := sha512.Sum512([]byte(protected + "." + payload))
	r, s, err := ecdsa.Sign(rand.Reader, priv, h[:])
	if err != nil {
		t.Fatal(err)
	}
	sig := make([]byte, 132)
	r.FillBytes(sig[:66])
	s.FillBytes(sig[66:])
	return map[string]any{"protected": protected, "signature": b64.EncodeToString(sig)}
}

// TestParseAdvertisementBoundsWork: every signing key is tried against
// every signature, so an advertisement of many repeated keys and bogus
// signatures would cost seconds of P-521 verifications that no timeout
// interrupts. The numbers of signatures and signing keys are bounded.
func TestParseAdvertisementBoundsWork(t *testing.T) {
	_, kp := newKeyDir(t)
	sigKey, excKey := mustMarshal(t, kp.sig.Public()), mustMarshal(t, kp.exc.Public())
	bogus := map[string]any{
		"protected": b64.EncodeToString([]byte(`{"alg":"ES512","cty":"jwk-set+json"}`)),
		"signature": b64.EncodeToString(bytes.Repeat([]byte{1}, 132)),
	}
	build := func(nKeys, nSigs int) []byte {
		keys := []string{excKey}
		for range nKeys {
			keys = append(keys, sigKey)
		}
		payload := b64.EncodeToString([]byte(`{"keys":[` + strings.Join(keys, ",") + `]}`))
		var sigs []any
		for range nSigs - 1 {
			sigs = append(sigs, bogus)
		}
		sigs = append(sigs, signJWS(t, kp.sig, payload)) // the valid one last
		return []byte(mustMarshal(t, map[string]any{"payload": payload, "signatures": sigs}))
	}
	if adv, err := tang.ParseAdvertisement(build(16, 16)); err != nil || adv.Trust(kp.sig.Thumbprint()) != nil {
		t.Fatalf("16 signing keys, 16 signatures: %v", err)
	}
	for _, n := range [][2]int{{17, 1}, {1, 17}, {100, 120}} {
		if _, err := tang.ParseAdvertisement(build(n[0], n[1])); !errors.Is(err, tang.ErrBadAdvertisement) {
			t.Errorf("%d signing keys, %d signatures: %v, want ErrBadAdvertisement", n[0], n[1], err)
		}
	}
}
