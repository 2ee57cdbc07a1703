package secmem

import (
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"runtime"
	"sync"

	"github.com/awnumar/memguard"
	"golang.org/x/crypto/nacl/secretbox"
)

// A Box keeps a secret (a vault key's numbers, a Tang server's private
// scalar) sealed with XSalsa20-Poly1305, the construction memguard's
// enclaves use, under a process-wide key-encryption key, and opens it for
// one use into one of a fixed set of long-lived locked scratch buffers,
// wiped before the buffer is lent again. No page is mapped, locked or
// protected per use: opening costs a microsecond or two, where a memguard
// Enclave per use costs tens of microseconds (see Enclave).
//
// The key-encryption key is never whole at rest: it is the XOR of two
// random halves in separate read-only locked buffers (as memguard's own
// coffer splits its key), recombined into the scratch buffer only while a
// secret is being sealed or opened.
type Box struct {
	box []byte // nonce ‖ secretbox(secret); only the nonce once destroyed
	n   int
	p   *pool
}

const (
	nonceSize = 24
	kekSize   = 32
	// scratchSize holds the key-encryption key and the largest secret we
	// seal: the CRT form of an RSA-8192 key (d, p, q, dp, dq, qinv:
	// 1024+5·512 bytes) with room for headers. It is one page on the
	// usual 4 KiB pages, as a smaller buffer would be anyway.
	scratchSize = 4096
)

// MaxSecret is the longest secret a Box holds.
const MaxSecret = scratchSize - kekSize

// Seal seals secret in a new Box. The caller still owns and wipes secret.
func Seal(secret []byte) (*Box, error) {
	p, err := defaultPool()
	if err != nil {
		return nil, err
	}
	return p.seal(secret)
}

func (p *pool) seal(secret []byte) (*Box, error) {
	if len(secret) == 0 || len(secret) > MaxSecret {
		return nil, fmt.Errorf("sealing a secret: %d bytes, want 1 to %d", len(secret), MaxSecret)
	}
	var nonce [nonceSize]byte
	if _, err := rand.Read(nonce[:]); err != nil {
		return nil, fmt.Errorf("sealing a secret: %w", err)
	}
	b := &Box{n: len(secret), p: p}
	Do(func() {
		p.borrow(0, func(kek *[kekSize]byte, _ []byte) {
			b.box = secretbox.Seal(append([]byte(nil), nonce[:]...), secret, &nonce, kek)
		})
	})
	return b, nil
}

// Open opens the secret into locked scratch memory and runs f with it
// inside Do; the scratch is wiped when f returns, and the use is reported
// to the scrubber (Used). f must not keep the secret or copy it outside
// Do. Open is safe for concurrent use; at most max(2, GOMAXPROCS) secrets
// are open at once, and further calls wait for a scratch buffer.
func (b *Box) Open(f func(secret []byte) error) error {
	if len(b.box) <= nonceSize {
		return errors.New("opening a sealed secret: the box was destroyed")
	}
	var err error
	Do(func() {
		b.p.borrow(b.n, func(kek *[kekSize]byte, scratch []byte) {
			var nonce [nonceSize]byte
			copy(nonce[:], b.box[:nonceSize])
			s, ok := secretbox.Open(scratch[:0], b.box[nonceSize:], &nonce, kek)
			// The key-encryption key is no longer needed: wipe it before f runs.
			Bytes(kek[:])
			if !ok || len(s) != b.n {
				err = errors.New("opening a sealed secret: authentication failed")
				return
			}
			// Capped, so that f cannot write past the part borrow wipes.
			err = f(s[:b.n:b.n])
		})
	})
	Used()
	return err
}

// Destroy wipes the box; Open fails from then on. It must not run
// concurrently with Open.
func (b *Box) Destroy() {
	clear(b.box)
	b.box = b.box[:nonceSize]
}

// A pool owns the key-encryption key's halves and the locked scratch
// buffers. Its size bounds how many secrets are open at once.
type pool struct {
	left, right *memguard.LockedBuffer // frozen; kek = left ⊕ right
	slots       chan *memguard.LockedBuffer
}

var (
	poolOnce sync.Once
	poolVal  *pool
	poolErr  error
)

// defaultPool is shared by every Box of the process.
func defaultPool() (*pool, error) {
	poolOnce.Do(func() { poolVal, poolErr = newPool(Slots()) })
	return poolVal, poolErr
}

// Slots is the number of secrets open at once: one per CPU the Go
// scheduler uses, since what is done with an open secret (a signature, a
// point multiplication) is CPU-bound.
func Slots() int { return max(2, runtime.GOMAXPROCS(0)) }

// PoolNeed is the locked memory, in bytes, the process's boxes need: the
// pool (each memguard buffer locks its data pages, rounded up, between
// two unlocked guard pages) and memguard's own key. Callers add what they
// lock themselves and check the sum with CheckMemlock first, so that the
// error names them.
func PoolNeed() int { return poolBytes(Slots()) + memguardOwn() }

func poolBytes(slots int) int {
	page := os.Getpagesize()
	round := func(n int) int { return (n + page - 1) / page * page }
	return 2*round(kekSize) + slots*round(scratchSize)
}

// memguardOwn is memguard's coffer (three one-page buffers) and a page of
// slack.
func memguardOwn() int { return 4 * os.Getpagesize() }

func newPool(slots int) (*pool, error) {
	// memguard panics (and can hang) when mlock fails: check the limit
	// first.
	if err := CheckMemlock(poolBytes(slots)+memguardOwn(), "the sealed-secret pool"); err != nil {
		return nil, err
	}
	p := &pool{
		left:  memguard.NewBufferRandom(kekSize),
		right: memguard.NewBufferRandom(kekSize),
		slots: make(chan *memguard.LockedBuffer, slots),
	}
	p.left.Freeze()
	p.right.Freeze()
	for range slots {
		p.slots <- memguard.NewBuffer(scratchSize)
	}
	return p, nil
}

// borrow lends f a scratch buffer: the recombined key-encryption key and
// the rest, free for a secret of up to n bytes. The key and those n bytes
// are wiped before the buffer goes back to the pool (the rest is never
// written: Open caps what it hands out at n).
func (p *pool) borrow(n int, f func(kek *[kekSize]byte, scratch []byte)) {
	buf := <-p.slots
	defer func() { p.slots <- buf }()
	b := buf.Bytes()
	defer Bytes(b[:kekSize+n])
	kek := (*[kekSize]byte)(b[:kekSize])
	l, r := p.left.Bytes(), p.right.Bytes()
	for i := range kek {
		kek[i] = l[i] ^ r[i]
	}
	f(kek, b[kekSize:])
}
