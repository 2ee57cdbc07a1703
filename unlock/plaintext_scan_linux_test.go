package unlock_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/awnumar/memguard"

	"github.com/sealproxy/sealproxy/testenv"
	"github.com/sealproxy/sealproxy/unlock"
)

// TestPlaintextOnlyInLockedMemory: Decrypt hands the plaintext over in a
// memguard buffer and leaves no copy of it anywhere else. The secret is
// made in locked memory and the test keeps only a masked form (secret XOR
// mask), so after the buffers are destroyed and the garbage collected, a
// scan of this process's own memory must find it nowhere. Decrypting to
// the heap first, as go-jose's JSONWebEncryption.Decrypt does, and copying
// into a locked buffer leaves a copy in freed memory that this finds.
func TestPlaintextOnlyInLockedMemory(t *testing.T) {
	srv := testenv.EmbeddedTang(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	const n = 48
	mask := make([]byte, n)
	rand.Read(mask)
	secret := memguard.NewBufferRandom(n)
	masked := make([]byte, n)
	for i, b := range secret.Bytes() {
		masked[i] = b ^ mask[i]
	}
	jwe, err := unlock.Encrypt(ctx, "tang", []byte(srv.Config()), secret.Bytes(), nil)
	secret.Destroy()
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		buf, err := unlock.Decrypt(ctx, jwe, nil)
		if err != nil {
			t.Fatal(err)
		}
		for i, b := range buf.Bytes() {
			if b^mask[i] != masked[i] {
				buf.Destroy()
				t.Fatal("Decrypt returned other bytes")
			}
		}
		buf.Destroy()
	}
	runtime.GC()
	runtime.GC()
	if found := scanSelf(t, masked, mask); found > 0 {
		t.Fatalf("the plaintext is still in memory %d times after its buffers were destroyed", found)
	}
}

// scanSelf counts the occurrences in this process's readable memory of
// the bytes masked XOR mask, without ever putting them together.
func scanSelf(t *testing.T, masked, mask []byte) int {
	maps, err := os.ReadFile("/proc/self/maps")
	if err != nil {
		t.Skipf("no /proc/self/maps: %v", err)
	}
	mem, err := os.Open("/proc/self/mem")
	if err != nil {
		t.Skipf("no /proc/self/mem: %v", err)
	}
	defer mem.Close()
	first := masked[0] ^ mask[0]
	found := 0
	var chunk []byte
	for line := range strings.Lines(string(maps)) {
		f := strings.Fields(line)
		if len(f) < 2 || f[1][0] != 'r' || (len(f) >= 6 && strings.HasPrefix(f[5], "[v")) {
			continue
		}
		lo, hi, _ := strings.Cut(f[0], "-")
		start, err1 := strconv.ParseUint(lo, 16, 64)
		end, err2 := strconv.ParseUint(hi, 16, 64)
		if err1 != nil || err2 != nil {
			t.Fatalf("bad maps line %q", line)
		}
		if size := int(end - start); cap(chunk) < size {
			chunk = make([]byte, size)
		}
		c := chunk[:end-start]
		got, _ := mem.ReadAt(c, int64(start))
		c = c[:got]
		for i := bytes.IndexByte(c, first); i >= 0 && i+len(masked) <= len(c); {
			match := true
			for k := 1; k < len(masked); k++ {
				if c[i+k]^mask[k] != masked[k] {
					match = false
					break
				}
			}
			if match {
				found++
				t.Logf("found in %s", strings.Join(f[5:], " "))
			}
			next := bytes.IndexByte(c[i+1:], first)
			if next < 0 {
				break
			}
			i += 1 + next
		}
	}
	return found
}
