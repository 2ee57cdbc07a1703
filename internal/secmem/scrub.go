package secmem

import (
	"runtime"
	"runtime/debug"
	"sync"
	"time"
)

// With GOEXPERIMENT=runtimesecret, Do marks the heap allocations of its
// function to be erased when the garbage collector frees them; a quiet
// server may not collect for minutes. Used starts (or restarts) an idle
// timer: once secrets have not been used for ScrubIdle, the process
// collects twice and returns freed pages to the operating system, so the
// erasure happens soon after the last use.

// ScrubIdle is how long secret use must be quiet before a scrub.
const ScrubIdle = 200 * time.Millisecond

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

// Used records that a secret was just used (under Do). It never blocks.
func Used() {
	select {
	case defaultScrubber().kick <- struct{}{}:
	default:
	}
}

func (s *scrubber) run() {
	t := time.NewTimer(ScrubIdle)
	t.Stop()
	for range s.kick {
		t.Reset(ScrubIdle)
	quiet:
		for {
			select {
			case <-s.kick:
				t.Reset(ScrubIdle)
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
// GOEXPERIMENT=runtimesecret erase, what Do-guarded code left behind, and
// returns freed pages to the operating system. Users of secrets trigger it
// on their own after going idle (Used); a daemon may also call it after
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
