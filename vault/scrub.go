package vault

import (
	"runtime"
	"runtime/debug"
	"sync"
	"time"
)

// Parsing and using a key leaves copies in freed heap memory (crypto/ecdsa
// and crypto/rsa derive their own forms of the key; math/big allocates).
// With GOEXPERIMENT=runtimesecret, wipe.Do marks those allocations to be
// erased when the garbage collector frees them, but a quiet proxy may not
// collect for minutes. The scrubber forces collections shortly after
// signing goes idle, so that erasure actually happens.

// scrubIdle is how long signing must be quiet before a scrub.
const scrubIdle = 200 * time.Millisecond

// scrubSettle lets cleanups queued by the first collection (crypto's weak
// per-key caches evict their entries in runtime cleanups) run before the
// second collection frees what they released.
const scrubSettle = 20 * time.Millisecond

type scrubber struct {
	kick chan struct{}
	done chan struct{} // closed after each scrub; replaced under mu
	mu   sync.Mutex
	n    uint64 // scrubs completed
}

var (
	scrubOnce sync.Once
	scrubVal  *scrubber
)

func defaultScrubber() *scrubber {
	scrubOnce.Do(func() {
		scrubVal = &scrubber{kick: make(chan struct{}, 1), done: make(chan struct{})}
		go scrubVal.run()
	})
	return scrubVal
}

// touch records that a secret was used.
func (s *scrubber) touch() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

func (s *scrubber) run() {
	t := time.NewTimer(scrubIdle)
	t.Stop()
	for range s.kick {
		t.Reset(scrubIdle)
	quiet:
		for {
			select {
			case <-s.kick:
				t.Reset(scrubIdle)
			case <-t.C:
				break quiet
			}
		}
		Scrub()
		s.mu.Lock()
		s.n++
		close(s.done)
		s.done = make(chan struct{})
		s.mu.Unlock()
	}
}

// Scrub forces the garbage collector to free, and with
// GOEXPERIMENT=runtimesecret erase, what wipe.Do-guarded code left behind,
// and returns freed pages to the operating system. Sealed keys trigger it
// on their own after signing goes idle; a daemon may also call it after
// start-up.
func Scrub() {
	runtime.GC()
	time.Sleep(scrubSettle)
	runtime.GC()
	debug.FreeOSMemory()
}

// Scrubs returns the number of idle scrubs so far and a channel closed at
// the next one (for tests and a daemon's status).
func Scrubs() (uint64, <-chan struct{}) {
	s := defaultScrubber()
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.n, s.done
}
