package vault

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

// A custody holds the secret half of one key and lends it out, in the
// clear, only for the duration of a call to with. Between calls no
// plaintext copy exists in readable memory.
type custody interface {
	// with runs f with the secret in locked memory; f must not keep it.
	with(f func(secret []byte) error) error
	// size is the secret's length.
	size() int
	destroy()
}

// enclaveCustody keeps the secret in a memguard Enclave and opens it into
// a fresh LockedBuffer for every call: the simplest custody, and the
// slowest (each Open and Destroy maps, locks, protects and unmaps pages).
type enclaveCustody struct {
	enclave *memguard.Enclave
}

func newEnclaveCustody(secret []byte) (*enclaveCustody, error) {
	e := memguard.NewEnclave(secret) // wipes secret
	if e == nil {
		return nil, errors.New("creating an enclave: empty secret")
	}
	return &enclaveCustody{enclave: e}, nil
}

func (c *enclaveCustody) with(f func([]byte) error) error {
	buf, err := c.enclave.Open()
	if err != nil {
		return fmt.Errorf("opening the key's enclave: %w", err)
	}
	defer buf.Destroy()
	return f(buf.Bytes())
}

func (c *enclaveCustody) size() int { return c.enclave.Size() }
func (c *enclaveCustody) destroy()  {}

// boxCustody keeps the secret sealed (XSalsa20-Poly1305, the construction
// memguard's enclaves use) under a process-wide key-encryption key, and
// decrypts it for each call into one of a fixed set of long-lived locked
// scratch buffers. No page is mapped, locked or protected per call, which
// is what makes a signature with it nearly as cheap as with a plain key.
//
// The key-encryption key itself is never whole at rest: it is the XOR of
// two random halves in separate read-only locked buffers (as memguard's
// own coffer splits its key), and is recombined into the scratch buffer
// only while a secret is being decrypted.
type boxCustody struct {
	box   []byte // nonce ‖ secretbox(secret)
	n     int
	arena *arena
}

const (
	nonceSize = 24
	kekSize   = 32
)

func newBoxCustody(a *arena, secret []byte) (*boxCustody, error) {
	defer wipe.Bytes(secret)
	if len(secret) == 0 {
		return nil, errors.New("sealing a key: empty secret")
	}
	if len(secret) > a.maxSecret {
		return nil, fmt.Errorf("sealing a key: %d-byte secret exceeds the %d-byte scratch buffers", len(secret), a.maxSecret)
	}
	var nonce [nonceSize]byte
	if _, err := rand.Read(nonce[:]); err != nil {
		return nil, fmt.Errorf("sealing a key: %w", err)
	}
	c := &boxCustody{n: len(secret), arena: a}
	err := a.borrow(func(kek *[kekSize]byte, _ []byte) error {
		c.box = secretbox.Seal(append([]byte(nil), nonce[:]...), secret, &nonce, kek)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return c, nil
}

func (c *boxCustody) with(f func([]byte) error) error {
	return c.arena.borrow(func(kek *[kekSize]byte, scratch []byte) error {
		var nonce [nonceSize]byte
		copy(nonce[:], c.box[:nonceSize])
		secret, ok := secretbox.Open(scratch[:0], c.box[nonceSize:], &nonce, kek)
		// The key-encryption key is no longer needed: wipe it before f runs.
		wipe.Bytes(kek[:])
		if !ok || len(secret) != c.n {
			return errors.New("opening a sealed key: authentication failed")
		}
		return f(secret)
	})
}

func (c *boxCustody) size() int { return c.n }

func (c *boxCustody) destroy() {
	clear(c.box)
	c.box = c.box[:nonceSize] // Open fails from now on
}

// An arena owns the key-encryption key halves and a pool of locked scratch
// buffers. Its pool size bounds how many signatures run at once.
type arena struct {
	left, right *memguard.LockedBuffer // frozen, kek = left ⊕ right
	slots       chan *memguard.LockedBuffer
	maxSecret   int
}

// scratchSize holds a KEK and the largest secret we seal: the CRT form of
// an RSA-8192 key (d, p, q, dp, dq, qinv: 1024+5·512 bytes) with room
// for headers.
const scratchSize = 4096

var (
	defaultArenaOnce sync.Once
	defaultArenaVal  *arena
	defaultArenaErr  error
)

// defaultArena is shared by every sealed key of the process.
func defaultArena() (*arena, error) {
	defaultArenaOnce.Do(func() {
		defaultArenaVal, defaultArenaErr = newArena(scratchSlots())
	})
	return defaultArenaVal, defaultArenaErr
}

// scratchSlots is the number of concurrent signatures: one per CPU the
// Go scheduler uses, since signing is CPU-bound.
func scratchSlots() int { return max(2, runtime.GOMAXPROCS(0)) }

// lockedBytes is the memory the arena locks: each memguard buffer locks
// its data pages (rounded up) and maps two unlocked guard pages.
func lockedBytes(slots int) int {
	page := pageSize()
	round := func(n int) int { return (n + page - 1) / page * page }
	return 2*round(kekSize) + slots*round(scratchSize)
}

func newArena(slots int) (*arena, error) {
	if err := checkMemlock(lockedBytes(slots) + memguardReserve()); err != nil {
		return nil, err
	}
	a := &arena{
		left:      memguard.NewBufferRandom(kekSize),
		right:     memguard.NewBufferRandom(kekSize),
		slots:     make(chan *memguard.LockedBuffer, slots),
		maxSecret: scratchSize - kekSize,
	}
	a.left.Freeze()
	a.right.Freeze()
	for range slots {
		a.slots <- memguard.NewBuffer(scratchSize)
	}
	return a, nil
}

// borrow lends f a scratch buffer whose first kekSize bytes hold the
// recombined key-encryption key and whose rest is free for the secret.
// The whole buffer is wiped before it goes back to the pool.
func (a *arena) borrow(f func(kek *[kekSize]byte, scratch []byte) error) error {
	buf := <-a.slots
	defer func() { a.slots <- buf }()
	b := buf.Bytes()
	defer wipe.Bytes(b)
	kek := (*[kekSize]byte)(b[:kekSize])
	l, r := a.left.Bytes(), a.right.Bytes()
	for i := range kek {
		kek[i] = l[i] ^ r[i]
	}
	return f(kek, b[kekSize:])
}
