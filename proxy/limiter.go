package proxy

import "sync"

// Limiter bounds concurrent connections. A nil Limiter or a maximum of 0
// bounds nothing. The maximum can change at run time (reload); slots
// already taken above a lowered maximum drain naturally.
type Limiter struct {
	mu  sync.Mutex
	n   int
	max int
}

// NewLimiter returns a limiter of max slots (0: unbounded).
func NewLimiter(max int) *Limiter { return &Limiter{max: max} }

// TryAcquire takes a slot if one is free.
func (l *Limiter) TryAcquire() bool {
	if l == nil {
		return true
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.max > 0 && l.n >= l.max {
		return false
	}
	l.n++
	return true
}

// Release returns a slot.
func (l *Limiter) Release() {
	if l == nil {
		return
	}
	l.mu.Lock()
	l.n--
	l.mu.Unlock()
}

// SetMax changes the bound.
func (l *Limiter) SetMax(max int) {
	if l == nil {
		return
	}
	l.mu.Lock()
	l.max = max
	l.mu.Unlock()
}

// InUse reports the slots taken.
func (l *Limiter) InUse() int {
	if l == nil {
		return 0
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.n
}
