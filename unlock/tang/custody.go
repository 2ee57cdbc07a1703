package tang

import (
	"crypto/rand"
	"errors"
	"fmt"
	"runtime"
	"sync"

	"github.com/awnumar/memguard"
	"golang.org/x/crypto/nacl/secretbox"

	"github.com/sealproxy/sealproxy/unlock/wipe"
)

// A server's private scalars (the exchange keys' s and the signing keys' d)
// never stay in ordinary memory. Each is sealed (XSalsa20-Poly1305, as
// memguard's enclaves and the vault's sealed keys) under a process-wide
// key-encryption key, and opened for one exchange or one signature into a
// locked scratch buffer that is wiped before it is reused. The
// key-encryption key is the XOR of two random halves in separate read-only
// locked buffers and is whole only while a scalar is being opened.
//
// Opening costs a microsecond or two; a memguard Enclave per key would
// cost tens of microseconds (it maps, locks and unmaps pages every time).

// sealedScalar is one private scalar, sealed.
type sealedScalar struct {
	box []byte // nonce ‖ secretbox(scalar)
	n   int
}

const (
	nonceSize = 24
	kekSize   = 32
	// scratchSize holds the key-encryption key and the largest scalar
	// (66 bytes on P-521); memguard rounds it up to a page anyway.
	scratchSize = 256
)

// sealScalar seals s. The caller wipes s.
func sealScalar(s []byte) (*sealedScalar, error) {
	a, err := scalarArena()
	if err != nil {
		return nil, err
	}
	if len(s) == 0 || len(s) > scratchSize-kekSize {
		return nil, fmt.Errorf("sealing a Tang key: %d-byte scalar", len(s))
	}
	var nonce [nonceSize]byte
	if _, err := rand.Read(nonce[:]); err != nil {
		return nil, fmt.Errorf("sealing a Tang key: %w", err)
	}
	sc := &sealedScalar{n: len(s)}
	a.borrow(func(kek *[kekSize]byte, _ []byte) {
		sc.box = secretbox.Seal(append([]byte(nil), nonce[:]...), s, &nonce, kek)
	})
	return sc, nil
}

// with opens the scalar into locked memory for f, inside wipe.Do, and
// wipes it when f returns. f must not keep it or copy it elsewhere.
func (sc *sealedScalar) with(f func(s []byte) error) error {
	a, err := scalarArena()
	if err != nil {
		return err
	}
	wipe.Do(func() {
		a.borrow(func(kek *[kekSize]byte, scratch []byte) {
			var nonce [nonceSize]byte
			copy(nonce[:], sc.box[:nonceSize])
			s, ok := secretbox.Open(scratch[:0], sc.box[nonceSize:], &nonce, kek)
			wipe.Bytes(kek[:])
			if !ok || len(s) != sc.n {
				err = errors.New("opening a sealed Tang key: authentication failed")
				return
			}
			err = f(s)
		})
	})
	wipe.Used()
	return err
}

// keyArena owns the key-encryption key's halves and a pool of locked
// scratch buffers; the pool bounds how many scalars are open at once.
type keyArena struct {
	left, right *memguard.LockedBuffer // frozen; kek = left ⊕ right
	slots       chan *memguard.LockedBuffer
}

var (
	arenaOnce sync.Once
	arenaVal  *keyArena
	arenaErr  error
)

// scalarArena returns the process's arena, making it on first use.
func scalarArena() (*keyArena, error) {
	arenaOnce.Do(func() { arenaVal, arenaErr = newKeyArena(max(2, runtime.GOMAXPROCS(0))) })
	return arenaVal, arenaErr
}

func newKeyArena(slots int) (*keyArena, error) {
	// memguard panics (and can hang) when mlock fails: check the limit
	// first. Each buffer locks at least a page; memguard keeps a few of
	// its own, and loading a key file locks one more.
	if err := checkMemlock((2 + slots + 1 + 4) * pageSize()); err != nil {
		return nil, err
	}
	a := &keyArena{
		left:  memguard.NewBufferRandom(kekSize),
		right: memguard.NewBufferRandom(kekSize),
		slots: make(chan *memguard.LockedBuffer, slots),
	}
	a.left.Freeze()
	a.right.Freeze()
	for range slots {
		a.slots <- memguard.NewBuffer(scratchSize)
	}
	return a, nil
}

// borrow lends f a scratch buffer whose first kekSize bytes hold the
// recombined key-encryption key and whose rest is free for a scalar. The
// whole buffer is wiped before it goes back to the pool.
func (a *keyArena) borrow(f func(kek *[kekSize]byte, scratch []byte)) {
	buf := <-a.slots
	defer func() { a.slots <- buf }()
	b := buf.Bytes()
	defer wipe.Bytes(b)
	kek := (*[kekSize]byte)(b[:kekSize])
	l, r := a.left.Bytes(), a.right.Bytes()
	for i := range kek {
		kek[i] = l[i] ^ r[i]
	}
	f(kek, b[kekSize:])
}

// ErrMemlock reports a locked-memory limit too small to hold the keys.
var ErrMemlock = errors.New("locked memory limit too low")
