package tang_test

import (
	"bytes"
	"crypto/ecdh"
	"crypto/rand"
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/sealproxy/sealproxy/unlock/tang"
)

func TestKeygen(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "new") // Keygen creates the directory
	thp, err := tang.Keygen(dir)
	if err != nil {
		t.Fatal(err)
	}
	kp := activeKeys(t, dir)
	if kp.sig.Thumbprint() != thp {
		t.Errorf("Keygen returned %s, the signing key's thumbprint is %s", thp, kp.sig.Thumbprint())
	}
	for _, tc := range []struct {
		k    *tang.JWK
		path string
		alg  string
		ops  []string
	}{
		{kp.sig, kp.sigPath, "ES512", []string{"sign", "verify"}},
		{kp.exc, kp.excPath, "ECMR", []string{"deriveKey"}},
	} {
		if want := tc.k.Thumbprint() + ".jwk"; filepath.Base(tc.path) != want {
			t.Errorf("key file %s, want it named %s", filepath.Base(tc.path), want)
		}
		if tc.k.Crv != "P-521" || tc.k.Alg != tc.alg || !slices.Equal(tc.k.KeyOps, tc.ops) || tc.k.D == "" {
			t.Errorf("%s: %+v, want %s on P-521 with key_ops %v and d", tc.path, tc.k.Public(), tc.alg, tc.ops)
		}
		st, err := os.Stat(tc.path)
		if err != nil {
			t.Fatal(err)
		}
		if runtime.GOOS != "windows" && st.Mode().Perm() != 0o440 {
			t.Errorf("%s has mode %v, want 0440", tc.path, st.Mode().Perm())
		}
	}
	// A second Keygen adds a pair; it never replaces one.
	thp2, err := tang.Keygen(dir)
	if err != nil {
		t.Fatal(err)
	}
	if thp2 == thp {
		t.Fatal("Keygen made the same key twice")
	}
	if files, _ := filepath.Glob(filepath.Join(dir, "*.jwk")); len(files) != 4 {
		t.Fatalf("after two Keygen: %d files, want 4", len(files))
	}
	if ths := loadKeys(t, dir).Thumbprints(); !slices.Contains(ths, thp) || !slices.Contains(ths, thp2) || len(ths) != 2 {
		t.Fatalf("Thumbprints = %v, want %s and %s", ths, thp, thp2)
	}
}

func writeFile(t *testing.T, dir, name, data string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
}

// copyKeys copies the named files of a key pair into a fresh directory.
func copyKeys(t *testing.T, files ...string) string {
	t.Helper()
	dir := t.TempDir()
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		writeFile(t, dir, filepath.Base(f), string(data))
	}
	return dir
}

func TestLoadKeysRejects(t *testing.T) {
	_, kp := newKeyDir(t)
	noOps := *kp.exc
	noOps.KeyOps = nil
	encOnly := *kp.exc
	encOnly.Alg, encOnly.KeyOps = "", []string{"encrypt"}

	tests := []struct {
		name    string
		setup   func(dir string)
		wantErr error
		wantMsg string
	}{
		{"good pair", func(dir string) {}, nil, ""},
		{"key without key_ops", func(dir string) { writeFile(t, dir, "noops.jwk", mustMarshal(t, &noOps)) }, tang.ErrBadKey, "no key_ops"},
		{"key usable for neither", func(dir string) { writeFile(t, dir, "enc.jwk", mustMarshal(t, &encOnly)) }, tang.ErrBadKey, "allow neither"},
		{"garbage file", func(dir string) { writeFile(t, dir, "garbage.jwk", "this is not JSON") }, tang.ErrBadKey, "garbage.jwk"},
		{"public key only", func(dir string) { writeFile(t, dir, "pub.jwk", mustMarshal(t, kp.exc.Public())) }, tang.ErrBadKey, "no private part"},
		{"rotated garbage", func(dir string) { writeFile(t, dir, ".old.jwk", "{") }, tang.ErrBadKey, ".old.jwk"},
		{"other files ignored", func(dir string) {
			writeFile(t, dir, "README", "garbage")
			writeFile(t, dir, "x.jwk.bak", "garbage")
			os.Mkdir(filepath.Join(dir, "sub.jwk"), 0o700)
		}, nil, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := copyKeys(t, kp.sigPath, kp.excPath)
			tc.setup(dir)
			ks, err := tang.LoadKeys(dir)
			if tc.wantErr == nil {
				if err != nil {
					t.Fatal(err)
				}
				if ths := ks.Thumbprints(); len(ths) != 1 || ths[0] != kp.sig.Thumbprint() {
					t.Fatalf("Thumbprints = %v", ths)
				}
				return
			}
			if !errors.Is(err, tc.wantErr) || !strings.Contains(err.Error(), tc.wantMsg) {
				t.Fatalf("LoadKeys = %v, want %v mentioning %q", err, tc.wantErr, tc.wantMsg)
			}
			if ks != nil {
				t.Fatal("keys returned with the error")
			}
		})
	}

	for name, files := range map[string][]string{
		"empty directory":   nil,
		"only signing key":  {kp.sigPath},
		"only exchange key": {kp.excPath},
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := tang.LoadKeys(copyKeys(t, files...)); !errors.Is(err, tang.ErrNoKeys) {
				t.Fatalf("LoadKeys = %v, want ErrNoKeys", err)
			}
		})
	}
	t.Run("only rotated keys", func(t *testing.T) {
		dir := t.TempDir()
		for _, f := range []string{kp.sigPath, kp.excPath} {
			data, _ := os.ReadFile(f)
			writeFile(t, dir, "."+filepath.Base(f), string(data))
		}
		if _, err := tang.LoadKeys(dir); !errors.Is(err, tang.ErrNoKeys) {
			t.Fatalf("LoadKeys = %v, want ErrNoKeys", err)
		}
	})
	t.Run("missing directory", func(t *testing.T) {
		if _, err := tang.LoadKeys(filepath.Join(t.TempDir(), "nope")); !errors.Is(err, fs.ErrNotExist) {
			t.Fatalf("LoadKeys = %v, want fs.ErrNotExist", err)
		}
		if _, err := tang.OpenKeyDir(filepath.Join(t.TempDir(), "nope")); !errors.Is(err, fs.ErrNotExist) {
			t.Fatalf("OpenKeyDir = %v, want fs.ErrNotExist", err)
		}
	})
}

// recoverWith runs the server side with x·G and checks the answer against
// an independent ECDH computation x·S with the advertised exchange key.
func recoverWith(t *testing.T, ks *tang.Keys, kid string, exc *tang.JWK) error {
	t.Helper()
	x, err := ecdh.P521().GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	req := pointJWK(x.PublicKey().Bytes(), "ECMR")
	y, err := ks.Recover(kid, req)
	if err != nil {
		return err
	}
	sx, _ := b64.DecodeString(exc.X)
	sy, _ := b64.DecodeString(exc.Y)
	S, err := ecdh.P521().NewPublicKey(append(append([]byte{4}, sx...), sy...))
	if err != nil {
		t.Fatal(err)
	}
	want, err := x.ECDH(S)
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := b64.DecodeString(y.X); !bytes.Equal(got, want) {
		t.Fatalf("Recover(%s) = s·X with x %x, want %x", kid, got, want)
	}
	if y.D != "" || y.Crv != "P-521" || y.Validate() != nil {
		t.Fatalf("Recover answer %+v", y)
	}
	return nil
}

// pointJWK makes a public JWK from an uncompressed point.
func pointJWK(pt []byte, alg string) *tang.JWK {
	n := (len(pt) - 1) / 2
	crv := map[int]string{32: "P-256", 48: "P-384", 66: "P-521"}[n]
	return &tang.JWK{Alg: alg, Kty: "EC", Crv: crv, X: b64.EncodeToString(pt[1 : 1+n]), Y: b64.EncodeToString(pt[1+n:])}
}

func TestRotate(t *testing.T) {
	dir, old := newKeyDir(t)
	newThp, err := tang.Rotate(dir)
	if err != nil {
		t.Fatal(err)
	}
	if newThp == old.sig.Thumbprint() {
		t.Fatal("Rotate kept the signing key")
	}
	for _, f := range []string{old.sigPath, old.excPath} {
		if _, err := os.Stat(f); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("%s still active after Rotate", f)
		}
		if _, err := os.Stat(filepath.Join(dir, "."+filepath.Base(f))); err != nil {
			t.Errorf("%s was not kept as a dot-file: %v", f, err)
		}
	}
	cur := activeKeys(t, dir)
	if cur.sig.Thumbprint() != newThp {
		t.Fatalf("active signing key %s, Rotate returned %s", cur.sig.Thumbprint(), newThp)
	}
	ks := loadKeys(t, dir)
	if ths := ks.Thumbprints(); len(ths) != 1 || ths[0] != newThp {
		t.Fatalf("Thumbprints = %v, want [%s]", ths, newThp)
	}
	adv, err := ks.Advertisement("")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(adv), old.sig.X) || bytes.Contains(mustDecodePayload(t, adv), []byte(old.exc.X)) {
		t.Fatal("the advertisement still lists a rotated key")
	}
	// Old bindings still recover, by SHA-256 or SHA-1 kid; new ones too.
	for _, kid := range []string{old.exc.Thumbprint(), rfc7638(old.exc, sha1Sum)} {
		if err := recoverWith(t, ks, kid, old.exc); err != nil {
			t.Errorf("Recover with rotated key %s: %v", kid, err)
		}
	}
	if err := recoverWith(t, ks, cur.exc.Thumbprint(), cur.exc); err != nil {
		t.Errorf("Recover with the new key: %v", err)
	}
	if err := recoverWith(t, ks, old.sig.Thumbprint(), old.exc); !errors.Is(err, tang.ErrWrongKeyUse) {
		t.Errorf("Recover with a (rotated) signing key = %v, want ErrWrongKeyUse", err)
	}
	if err := recoverWith(t, ks, knownThpS256, old.exc); !errors.Is(err, tang.ErrUnknownKey) {
		t.Errorf("Recover with an unknown kid = %v, want ErrUnknownKey", err)
	}

	// /adv/{old thp} is signed by the rotated key and the active one.
	byOld, err := ks.Advertisement(old.sig.Thumbprint())
	if err != nil {
		t.Fatal(err)
	}
	if !signedBy(t, byOld, old.sig) || !signedBy(t, byOld, cur.sig) {
		t.Fatal("advertisement for the rotated thumbprint is not signed by both keys")
	}
	if _, err := tang.ParseAdvertisement(byOld); err != nil {
		t.Fatalf("advertisement for the rotated thumbprint: %v", err)
	}
	if _, err := ks.Advertisement(old.exc.Thumbprint()); !errors.Is(err, tang.ErrUnknownKey) {
		t.Errorf("Advertisement(exchange key thp) = %v, want ErrUnknownKey", err)
	}
}

func mustDecodePayload(t *testing.T, jws []byte) []byte {
	t.Helper()
	p, err := b64.DecodeString(mustJWSPayload(t, jws))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestKeyDirFollowsRotate(t *testing.T) {
	dir, old := newKeyDir(t)
	kd, err := tang.OpenKeyDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	ks, err := kd.Keys()
	if err != nil {
		t.Fatal(err)
	}
	if ths := ks.Thumbprints(); len(ths) != 1 || ths[0] != old.sig.Thumbprint() {
		t.Fatalf("before rotation: %v", ths)
	}
	for i := range 3 {
		before, err := os.Stat(dir)
		if err != nil {
			t.Fatal(err)
		}
		newThp, err := tang.Rotate(dir)
		if err != nil {
			t.Fatal(err)
		}
		if i == 1 {
			// File systems with coarse timestamps (a jiffy, or a second)
			// leave the directory's mtime unchanged by a rotation that
			// follows the last read closely; the rotation must still show.
			mt := before.ModTime()
			if err := os.Chtimes(dir, mt, mt); err != nil {
				t.Fatal(err)
			}
		}
		ks, err = kd.Keys()
		if err != nil {
			t.Fatal(err)
		}
		if ths := ks.Thumbprints(); len(ths) != 1 || ths[0] != newThp {
			t.Fatalf("after rotation %d: KeyDir serves %v, want [%s]", i+1, ths, newThp)
		}
		if err := recoverWith(t, ks, old.exc.Thumbprint(), old.exc); err != nil {
			t.Fatalf("after rotation %d: the first key no longer recovers: %v", i+1, err)
		}
	}

	// A directory that breaks keeps serving the last good keys, and says so.
	good := ks
	writeFile(t, dir, "broken.jwk", "{")
	ks, err = kd.Keys()
	if !errors.Is(err, tang.ErrBadKey) || ks != good {
		t.Fatalf("broken directory: Keys = %p, %v; want the previous keys and ErrBadKey", ks, err)
	}
}

func TestKeysJSONHasNoSecrets(t *testing.T) {
	dir, kp := newKeyDir(t)
	ks := loadKeys(t, dir)
	adv, err := ks.Advertisement("")
	if err != nil {
		t.Fatal(err)
	}
	payload := mustDecodePayload(t, adv)
	for _, k := range []*tang.JWK{kp.sig, kp.exc} {
		if bytes.Contains(adv, []byte(k.D)) || bytes.Contains(payload, []byte(k.D)) {
			t.Fatal("the advertisement contains a private key")
		}
	}
	var set struct{ Keys []map[string]any }
	if err := json.Unmarshal(payload, &set); err != nil || len(set.Keys) != 2 {
		t.Fatalf("payload %s: %v", payload, err)
	}
	for _, k := range set.Keys {
		if _, ok := k["d"]; ok {
			t.Fatalf("payload key with d: %v", k)
		}
		if ops := k["key_ops"].([]any); slices.Contains(ops, any("sign")) {
			t.Fatalf("payload key with key_ops sign: %v", k)
		}
	}
}

// TestKeyDirConcurrent reads a KeyDir from many goroutines while it is
// rotated (run with -race): every read sees a complete key set.
func TestKeyDirConcurrent(t *testing.T) {
	dir, old := newKeyDir(t)
	kd, err := tang.OpenKeyDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	start := make(chan struct{})
	errs := make(chan error, 8)
	for range 8 {
		go func() {
			<-start
			for range 25 {
				// A read racing a rename may fail; it then returns the
				// previous keys, which the server keeps serving.
				ks, err := kd.Keys()
				if ks != nil {
					err = nil
					if len(ks.Thumbprints()) == 0 {
						err = errors.New("a key set without signing keys")
					} else {
						_, err = ks.Advertisement("")
					}
				}
				if err != nil {
					errs <- err
					return
				}
			}
			errs <- nil
		}()
	}
	close(start)
	newThp, err := tang.Rotate(dir)
	if err != nil {
		t.Fatal(err)
	}
	for range 8 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	ks, err := kd.Keys()
	if err != nil {
		t.Fatal(err)
	}
	if ths := ks.Thumbprints(); len(ths) != 1 || ths[0] != newThp {
		t.Fatalf("after the rotation: %v, want [%s]", ths, newThp)
	}
	if err := recoverWith(t, ks, old.exc.Thumbprint(), old.exc); err != nil {
		t.Fatal(err)
	}
}

// TestRotateWhileServing rotates a directory while a server re-reads it
// without pause: no rotation may fail. On Windows a key file that is
// open could not be renamed ("sharing violation") before key files were
// opened with FILE_SHARE_DELETE.
func TestRotateWhileServing(t *testing.T) {
	dir, _ := newKeyDir(t)
	kd, err := tang.OpenKeyDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			default:
			}
			// A read that meets a half-done rotation may fail (the
			// previous keys keep serving); only the rotation must not.
			_, _ = kd.Keys()
			_, _ = tang.LoadKeys(dir)
		}
	}()
	var last string
	for i := range 10 {
		if last, err = tang.Rotate(dir); err != nil {
			close(stop)
			<-done
			t.Fatalf("rotation %d while the directory is read: %v", i+1, err)
		}
	}
	close(stop)
	<-done
	ks, err := kd.Keys()
	if err != nil {
		t.Fatal(err)
	}
	if ths := ks.Thumbprints(); len(ths) != 1 || ths[0] != last {
		t.Fatalf("after the rotations KeyDir serves %v, want [%s]", ths, last)
	}
}
