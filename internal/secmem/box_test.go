package secmem

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestBoxRoundTrip checks that a box opens to what was sealed, that the
// box holds no copy of it, that the caller's buffer is left alone and
// that a tampered box does not open.
func TestBoxRoundTrip(t *testing.T) {
	for _, n := range []int{1, 66, 1500, MaxSecret} {
		s := bytes.Repeat([]byte("a secret scalar!"), MaxSecret/16+1)[:n]
		want := bytes.Clone(s)
		b, err := Seal(s)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(s, want) {
			t.Fatal("Seal changed the caller's buffer")
		}
		if n >= 16 && bytes.Contains(b.box, s[:16]) {
			t.Fatal("the box holds the secret in the clear")
		}
		var seen []byte
		if err := b.Open(func(got []byte) error {
			if cap(got) != n {
				t.Errorf("Open lends %d bytes of capacity for a %d-byte secret", cap(got), n)
			}
			seen = bytes.Clone(got)
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(seen, want) {
			t.Fatalf("%d bytes: opened %q, want %q", n, seen, want)
		}
		fail := errors.New("f failed")
		if err := b.Open(func([]byte) error { return fail }); !errors.Is(err, fail) {
			t.Fatalf("Open = %v, want f's error", err)
		}
		b.box[len(b.box)-1] ^= 1
		if err := b.Open(func([]byte) error { t.Fatal("f ran with a tampered box"); return nil }); err == nil {
			t.Fatal("a tampered box opened")
		}
	}
}

// TestSealSize checks that an empty secret and one longer than a scratch
// buffer are refused, with an error that gives the bounds.
func TestSealSize(t *testing.T) {
	for _, n := range []int{0, MaxSecret + 1, 3 * scratchSize} {
		_, err := Seal(make([]byte, n))
		if err == nil {
			t.Fatalf("Seal accepted %d bytes", n)
		}
		if !strings.Contains(err.Error(), fmt.Sprintf("want 1 to %d", MaxSecret)) {
			t.Errorf("Seal(%d bytes) = %v, want the bounds named", n, err)
		}
	}
}

// TestBoxDestroyed checks that a destroyed box no longer opens and that
// its ciphertext is gone.
func TestBoxDestroyed(t *testing.T) {
	b, err := Seal([]byte("secret"))
	if err != nil {
		t.Fatal(err)
	}
	sealed := b.box[:cap(b.box)]
	b.Destroy()
	if err := b.Open(func([]byte) error { t.Fatal("f ran with a destroyed box"); return nil }); err == nil || !strings.Contains(err.Error(), "destroyed") {
		t.Fatalf("Open after Destroy = %v", err)
	}
	if !bytes.Equal(sealed, make([]byte, len(sealed))) {
		t.Fatal("Destroy left the sealed secret in memory")
	}
}

// TestBoxScratchWiped checks that no slot of the pool holds the key or
// the secret after Open returns, including when f fails.
func TestBoxScratchWiped(t *testing.T) {
	p, err := newPool(2)
	if err != nil {
		t.Fatal(err)
	}
	b, err := p.seal(bytes.Repeat([]byte{0xa5}, 700))
	if err != nil {
		t.Fatal(err)
	}
	for _, fail := range []bool{false, true} {
		err := b.Open(func(s []byte) error {
			if fail {
				return errors.New("f failed")
			}
			return nil
		})
		if (err != nil) != fail {
			t.Fatal(err)
		}
		for range 2 {
			buf := <-p.slots
			wiped := bytes.Equal(buf.Bytes(), make([]byte, scratchSize))
			p.slots <- buf
			if !wiped {
				t.Fatal("a scratch buffer was not wiped")
			}
		}
	}
}

// TestBoxConcurrent opens many boxes from more goroutines than the pool
// has slots (run it with -race): each sees its own secret, two are open
// at once in a pool of two, and never a third.
func TestBoxConcurrent(t *testing.T) {
	const slots = 2
	p, err := newPool(slots)
	if err != nil {
		t.Fatal(err)
	}
	boxes := make([]*Box, 8)
	for i := range boxes {
		if boxes[i], err = p.seal(bytes.Repeat([]byte{byte(i + 1)}, 66+i)); err != nil {
			t.Fatal(err)
		}
	}
	var (
		open, most atomic.Int32
		both       = make(chan struct{})
		bothOnce   sync.Once
		wg         sync.WaitGroup
	)
	for g := range 4 * len(boxes) {
		wg.Go(func() {
			i := g % len(boxes)
			err := boxes[i].Open(func(s []byte) error {
				n := open.Add(1)
				defer open.Add(-1)
				for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
				}
				if n == slots {
					bothOnce.Do(func() { close(both) })
				}
				// Hold the slot until a second one is lent, or give up.
				select {
				case <-both:
				case <-time.After(5 * time.Second):
				}
				if !bytes.Equal(s, bytes.Repeat([]byte{byte(i + 1)}, 66+i)) {
					t.Errorf("box %d opened to another secret", i)
				}
				return nil
			})
			if err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if m := most.Load(); m != slots {
		t.Fatalf("at most %d secrets were open at once, want %d", m, slots)
	}
}

// BenchmarkBoxOpen is what custody adds to each signature or exchange:
// opening a P-521 scalar into locked scratch, inside Do, and wiping it.
func BenchmarkBoxOpen(b *testing.B) {
	benchOpen(b, func(s []byte) (opener, error) { return Seal(s) })
}

// BenchmarkEnclaveOpen is the same with a memguard Enclave per use.
func BenchmarkEnclaveOpen(b *testing.B) {
	benchOpen(b, func(s []byte) (opener, error) { return NewEnclave(s) })
}

type opener interface {
	Open(func([]byte) error) error
}

func benchOpen(b *testing.B, seal func([]byte) (opener, error)) {
	c, err := seal(make([]byte, 66))
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if err := c.Open(func([]byte) error { return nil }); err != nil {
			b.Fatal(err)
		}
	}
}
