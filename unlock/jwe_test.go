package unlock

import (
	"bytes"
	"context"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sealproxy/sealproxy/testenv"
	"github.com/sealproxy/sealproxy/unlock/sss"
	"github.com/sealproxy/sealproxy/unlock/tang"
)

func jweCtx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return c
}

// refConcatKDF is the Concat KDF of NIST SP 800-56A as RFC 7518 §4.6.2
// profiles it, written out in full (any key length, PartyUInfo and
// PartyVInfo), so that it can be checked against the RFC's own example.
func refConcatKDF(z []byte, alg, apu, apv string, keyBits int) []byte {
	lenPrefixed := func(s string) []byte {
		return binary.BigEndian.AppendUint32(nil, uint32(len(s)))
	}
	var otherInfo []byte
	otherInfo = append(append(otherInfo, lenPrefixed(alg)...), alg...)
	otherInfo = append(append(otherInfo, lenPrefixed(apu)...), apu...)
	otherInfo = append(append(otherInfo, lenPrefixed(apv)...), apv...)
	otherInfo = binary.BigEndian.AppendUint32(otherInfo, uint32(keyBits))
	var out []byte
	for counter := uint32(1); len(out)*8 < keyBits; counter++ {
		h := sha256.New()
		h.Write(binary.BigEndian.AppendUint32(nil, counter))
		h.Write(z)
		h.Write(otherInfo)
		out = h.Sum(out)
	}
	return out[:keyBits/8]
}

func TestConcatKDFKnownAnswer(t *testing.T) {
	// RFC 7518 Appendix C: ECDH-ES with A128GCM, apu "Alice", apv "Bob".
	z := []byte{158, 86, 217, 29, 129, 113, 53, 211, 114, 131, 66, 131, 191,
		132, 38, 156, 251, 49, 110, 163, 218, 128, 106, 72, 246, 218, 167,
		121, 140, 254, 144, 196}
	const wantRFC = "VqqN6vgjbSBcIijNcacQGg"
	if got := b64.EncodeToString(refConcatKDF(z, "A128GCM", "Alice", "Bob", 128)); got != wantRFC {
		t.Fatalf("reference KDF gives %s for RFC 7518 Appendix C, want %s: the reference is wrong", got, wantRFC)
	}

	// Ours has no apu/apv and always makes 256 bits, as clevis does.
	for _, n := range []int{32, 48, 66} {
		z := make([]byte, n)
		for i := range z {
			z[i] = byte(i*7 + n)
		}
		want := refConcatKDF(z, "A256GCM", "", "", 256)
		if got := concatKDF(z, "A256GCM"); !bytes.Equal(got, want) {
			t.Errorf("concatKDF(%d-byte z) = %x, want %x", n, got, want)
		}
	}
	// A fixed answer, so that a change to both implementations shows: z is
	// 66 bytes 0x00..0x41 (a P-521 x coordinate's length); the value was
	// computed with Python's hashlib over the same layout.
	z66 := make([]byte, 66)
	for i := range z66 {
		z66[i] = byte(i)
	}
	const want66 = "woou9VDuLsGJQVC06PWyQn_YWbMjLadqRCSiHbGhWt0"
	if got := b64.EncodeToString(concatKDF(z66, "A256GCM")); got != want66 {
		t.Errorf("concatKDF(0x00..0x41) = %s, want %s", got, want66)
	}
	if bytes.Equal(concatKDF(z66, "A256GCM"), concatKDF(z66, "A128GCM")) {
		t.Error("the algorithm id does not enter the KDF")
	}
}

// TestTangJWEOpensWithJose decrypts a JWE of ours with `jose jwe dec` and
// the server's exchange key used as a plain ECDH-ES key: K = s·C is the
// ECDH-ES shared secret, so this checks the header layout, the KDF and the
// AAD against an independent JOSE implementation, without clevis.
func TestTangJWEOpensWithJose(t *testing.T) {
	jose := testenv.LookTool(t, "jose", "jose")
	srv := testenv.EmbeddedTang(t)
	secret := []byte("opened by jose with the server's exchange key")
	jwe, err := Encrypt(jweCtx(t), "tang", []byte(srv.Config()), secret, nil)
	if err != nil {
		t.Fatal(err)
	}
	j, err := parseJWE(jwe)
	if err != nil {
		t.Fatal(err)
	}
	var key map[string]any
	files, _ := filepath.Glob(filepath.Join(srv.Dir, "*.jwk"))
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		k, err := tang.ParseJWK(data)
		if err != nil {
			t.Fatal(err)
		}
		if k.IsExchange() && k.HasThumbprint(j.header.Kid) {
			json.Unmarshal(data, &key)
		}
	}
	if key == nil {
		t.Fatalf("no exchange key with kid %s in %s", j.header.Kid, srv.Dir)
	}
	key["alg"] = "ECDH-ES"
	delete(key, "key_ops")
	keyFile := filepath.Join(t.TempDir(), "key.jwk")
	data, _ := json.Marshal(key)
	if err := os.WriteFile(keyFile, data, 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(jose, "jwe", "dec", "-k", keyFile, "-i-")
	cmd.Stdin = bytes.NewReader(jwe)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("jose jwe dec: %v: %s", err, stderr.Bytes())
	}
	if !bytes.Equal(out, secret) {
		t.Fatalf("jose decrypted %q, want %q", out, secret)
	}
}

// TestHeaderLayout pins the Clevis tang header: member names and order, an
// epk with only the public members, a SHA-256 kid, the advertisement
// payload (not the JWS) as adv, and an empty encrypted-key part.
func TestHeaderLayout(t *testing.T) {
	srv := testenv.EmbeddedTang(t)
	jwe, err := Encrypt(jweCtx(t), "tang", []byte(srv.Config()), []byte("x"), nil)
	if err != nil {
		t.Fatal(err)
	}
	parts := strings.Split(string(jwe), ".")
	if len(parts) != 5 || parts[1] != "" {
		t.Fatalf("not a compact JWE with an empty encrypted key: %s", jwe)
	}
	raw, err := b64.DecodeString(parts[0])
	if err != nil {
		t.Fatal(err)
	}
	var order []string
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.Token()
	for dec.More() {
		tok, _ := dec.Token()
		order = append(order, tok.(string))
		var skip json.RawMessage
		dec.Decode(&skip)
	}
	if got := strings.Join(order, ","); got != "alg,enc,kid,epk,clevis" {
		t.Errorf("header members %s, want alg,enc,kid,epk,clevis", got)
	}
	var h struct {
		Alg, Enc, Kid string
		Epk           map[string]any
		Clevis        struct {
			Pin  string
			Tang struct {
				URL string
				Adv map[string]json.RawMessage
			}
		}
	}
	if err := json.Unmarshal(raw, &h); err != nil {
		t.Fatal(err)
	}
	if h.Alg != "ECDH-ES" || h.Enc != "A256GCM" || h.Clevis.Pin != "tang" || h.Clevis.Tang.URL != srv.URL {
		t.Errorf("header %s", raw)
	}
	if len(h.Kid) != 43 {
		t.Errorf("kid %q is not a SHA-256 thumbprint", h.Kid)
	}
	if len(h.Epk) != 4 || h.Epk["kty"] != "EC" || h.Epk["crv"] != "P-521" || h.Epk["x"] == nil || h.Epk["y"] == nil {
		t.Errorf("epk %v, want exactly crv, kty, x, y", h.Epk)
	}
	if _, ok := h.Clevis.Tang.Adv["keys"]; !ok || len(h.Clevis.Tang.Adv) != 1 {
		t.Errorf("adv %v, want the JWK set payload", h.Clevis.Tang.Adv)
	}
	adv, err := tang.AdvertisementFromPayload(mustJSON(t, h.Clevis.Tang.Adv))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := adv.FindExchangeKey(h.Kid); err != nil {
		t.Errorf("kid names no exchange key of adv: %v", err)
	}
	if adv.Trust(srv.Thp) != nil {
		t.Error("adv lacks the trusted signing key")
	}
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestSHA1KidBinding opens a binding whose kid is a SHA-1 thumbprint (27
// characters), as old clevis versions wrote them.
func TestSHA1KidBinding(t *testing.T) {
	srv := testenv.EmbeddedTang(t)
	adv, err := (&tang.Client{}).Advertisement(jweCtx(t), srv.URL, srv.Thp)
	if err != nil {
		t.Fatal(err)
	}
	exc, err := adv.ExchangeKey()
	if err != nil {
		t.Fatal(err)
	}
	sum := sha1.Sum([]byte(`{"crv":"` + exc.Crv + `","kty":"EC","x":"` + exc.X + `","y":"` + exc.Y + `"}`))
	kid := b64.EncodeToString(sum[:])
	if len(kid) != 27 {
		t.Fatalf("SHA-1 kid %q", kid)
	}
	epk, z, err := tang.Bind(exc)
	if err != nil {
		t.Fatal(err)
	}
	hdr := &header{
		Alg: "ECDH-ES", Enc: encA256GCM, Kid: kid, Epk: epk,
		Clevis: &clevisNode{Pin: "tang", Node: &tangNode{URL: srv.URL, Adv: adv.Payload}},
	}
	secret := []byte("sealed under a SHA-1 kid")
	jwe, err := sealContent(hdr, concatKDF(z, encA256GCM), secret)
	if err != nil {
		t.Fatal(err)
	}
	buf, err := Decrypt(jweCtx(t), jwe, nil)
	if err != nil {
		t.Fatalf("Decrypt: %v", err)
	}
	defer buf.Destroy()
	if !bytes.Equal(buf.Bytes(), secret) {
		t.Fatalf("got %q", buf.Bytes())
	}
}

func TestContentEncryption(t *testing.T) {
	cek := bytes.Repeat([]byte{7}, cekSize)
	hdr := &header{Alg: "dir", Enc: encA256GCM, Clevis: &clevisNode{Pin: "sss"}}
	for _, plaintext := range [][]byte{nil, {0}, bytes.Repeat([]byte("k"), 5000)} {
		out, err := sealContent(hdr, cek, plaintext)
		if err != nil {
			t.Fatal(err)
		}
		j, err := parseJWE(out)
		if err != nil {
			t.Fatal(err)
		}
		buf, err := openContent(j, cek)
		if err != nil {
			t.Fatalf("openContent(%d bytes): %v", len(plaintext), err)
		}
		if !bytes.Equal(buf.Bytes(), plaintext) {
			t.Fatalf("openContent = %x, want %x", buf.Bytes(), plaintext)
		}
		buf.Destroy()

		wrong := bytes.Clone(cek)
		wrong[31] ^= 1
		if buf, err := openContent(j, wrong); !errors.Is(err, ErrTampered) || buf != nil {
			t.Fatalf("openContent(wrong key) = %v, %v; want ErrTampered", buf, err)
		}
		j.iv[0] ^= 1
		if buf, err := openContent(j, cek); !errors.Is(err, ErrTampered) || buf != nil {
			t.Fatalf("openContent(changed IV) = %v, %v; want ErrTampered", buf, err)
		}
		j.iv[0] ^= 1
		j.protected = j.protected + "e30"
		if buf, err := openContent(j, cek); !errors.Is(err, ErrTampered) || buf != nil {
			t.Fatalf("openContent(changed AAD) = %v, %v; want ErrTampered", buf, err)
		}
	}
	// Two seals of the same plaintext differ (fresh IV).
	a, _ := sealContent(hdr, cek, []byte("same"))
	b, _ := sealContent(hdr, cek, []byte("same"))
	if bytes.Equal(a, b) {
		t.Error("sealContent reused an IV")
	}
	if _, err := newGCM(cek[:16]); err == nil {
		t.Error("newGCM accepted a 16-byte key")
	}
}

func TestParseJWEDetails(t *testing.T) {
	hdr := func(s string) string { return b64.EncodeToString([]byte(s)) }
	good := hdr(`{"alg":"dir","enc":"A256GCM","clevis":{"pin":"sss"}}`)
	iv, ct, tag := b64.EncodeToString(make([]byte, 12)), "AAAA", b64.EncodeToString(make([]byte, 16))
	tests := []struct {
		name string
		in   string
		want error
		msg  string
	}{
		{"good", good + ".." + iv + "." + ct + "." + tag, nil, ""},
		{"surrounding white space", " \n\t" + good + ".." + iv + "." + ct + "." + tag + "\r\n", nil, ""},
		{"empty ciphertext", good + ".." + iv + ".." + tag, nil, ""},
		{"encrypted key present", good + ".AAAA." + iv + "." + ct + "." + tag, ErrMalformed, "encrypted-key"},
		{"six parts", good + ".." + iv + "." + ct + "." + tag + ".", ErrMalformed, "6 of 5"},
		{"enc A128GCM", hdr(`{"alg":"dir","enc":"A128GCM","clevis":{"pin":"sss"}}`) + ".." + iv + "." + ct + "." + tag, ErrMalformed, "A128GCM"},
		{"no enc", hdr(`{"alg":"dir","clevis":{"pin":"sss"}}`) + ".." + iv + "." + ct + "." + tag, ErrMalformed, "enc"},
		{"zip", hdr(`{"alg":"dir","enc":"A256GCM","zip":"DEF","clevis":{"pin":"sss"}}`) + ".." + iv + "." + ct + "." + tag, ErrMalformed, "zip"},
		{"no clevis", hdr(`{"alg":"dir","enc":"A256GCM"}`) + ".." + iv + "." + ct + "." + tag, ErrMalformed, "no clevis pin"},
		{"empty pin", hdr(`{"alg":"dir","enc":"A256GCM","clevis":{"pin":""}}`) + ".." + iv + "." + ct + "." + tag, ErrMalformed, "no clevis pin"},
		{"header is an array", hdr(`[]`) + ".." + iv + "." + ct + "." + tag, ErrMalformed, "not JSON"},
		{"header padded base64", good + "==.." + iv + "." + ct + "." + tag, ErrMalformed, "base64url"},
		{"header std base64", strings.NewReplacer("-", "+", "_", "/").Replace(hdr(`{"alg":"dir","enc":"A256GCM","clevis":{"pin":"sss","x":"???>>>"}}`)) + ".." + iv + "." + ct + "." + tag, ErrMalformed, "base64url"},
		{"IV 16 bytes", good + ".." + tag + "." + ct + "." + tag, ErrMalformed, "IV"},
		{"tag 12 bytes", good + ".." + iv + "." + ct + "." + iv, ErrMalformed, "tag"},
		{"ciphertext not base64url", good + ".." + iv + ".A*A." + tag, ErrMalformed, "part 4"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			j, err := parseJWE([]byte(tc.in))
			if tc.want == nil {
				if err != nil {
					t.Fatal(err)
				}
				if j.protected != good {
					t.Fatalf("protected %q, want the header exactly as it appeared", j.protected)
				}
				return
			}
			if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.msg) || j != nil {
				t.Fatalf("parseJWE = %v, %v; want %v mentioning %q", j, err, tc.want, tc.msg)
			}
		})
	}
}

// TestSSSShareOfWrongSize: a child that opens to something other than a
// 64-byte x‖y share makes the sss JWE malformed (it cannot be combined).
func TestSSSShareOfWrongSize(t *testing.T) {
	srv := testenv.EmbeddedTang(t)
	poly, err := sss.New(1)
	if err != nil {
		t.Fatal(err)
	}
	defer poly.Wipe()
	for _, size := range []int{0, 63, 65} {
		child, err := Encrypt(jweCtx(t), "tang", []byte(srv.Config()), bytes.Repeat([]byte{1}, size), nil)
		if err != nil {
			t.Fatal(err)
		}
		hdr := &header{Alg: "dir", Enc: encA256GCM, Clevis: &clevisNode{Pin: "sss", Node: &sssNode{
			JWE: []string{string(child)}, P: b64.EncodeToString(poly.Prime()), T: 1,
		}}}
		jwe, err := sealContent(hdr, poly.Secret(), []byte("x"))
		if err != nil {
			t.Fatal(err)
		}
		buf, err := Decrypt(jweCtx(t), jwe, nil)
		if !errors.Is(err, ErrMalformed) || !errors.Is(err, sss.ErrBadShare) || buf != nil {
			t.Fatalf("share of %d bytes: Decrypt = %v, %v; want ErrMalformed and sss.ErrBadShare", size, buf, err)
		}
	}
}

// TestEncryptOutputOpens: what Encrypt writes, Decrypt reads. A plaintext
// whose JWE would exceed MaxJWE is refused when sealing, not discovered
// when the key is needed.
func TestEncryptOutputOpens(t *testing.T) {
	srv := testenv.EmbeddedTang(t)
	fits := MaxJWE*3/4 - 8<<10
	for _, size := range []int{fits, MaxJWE*3/4 + 1} {
		secret := bytes.Repeat([]byte{0xa5}, size)
		jwe, err := Encrypt(jweCtx(t), "tang", []byte(srv.Config()), secret, nil)
		if err != nil {
			if size == fits {
				t.Fatalf("Encrypt(%d bytes): %v", size, err)
			}
			if !strings.Contains(err.Error(), "larger than") || jwe != nil {
				t.Fatalf("Encrypt(%d bytes) = %v, want it to say the JWE would be larger than %d bytes", size, err, MaxJWE)
			}
			continue
		}
		buf, err := Decrypt(jweCtx(t), jwe, nil)
		if err != nil {
			t.Fatalf("Encrypt(%d bytes) made a %d-byte JWE that Decrypt refuses: %v", size, len(jwe), err)
		}
		if !bytes.Equal(buf.Bytes(), secret) {
			t.Fatal("wrong plaintext")
		}
		buf.Destroy()
	}
}
