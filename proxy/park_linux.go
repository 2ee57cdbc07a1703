//go:build linux

package proxy

import (
	"errors"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Idle directions of a relay are parked on one epoll instance instead of
// each keeping a goroutine blocked on its socket: a goroutine costs its
// stack (2 KiB at least, and crypto/tls grows the ones that read) and its
// runtime record, which at thousands of idle connections is a third of
// what each connection holds. One goroutine waits on the epoll instance
// and starts a fresh copy goroutine for a socket that becomes readable;
// a timer per parked direction ends the wait at the idle deadline. The
// sockets stay in the runtime's own poller as well (a descriptor may be
// in several epoll sets); the relay reads them without waiting
// (sock.read), so the runtime's readiness state is never relied on.

// canPark reports that idle directions are parked without a goroutine.
const canPark = true

// parking is one parked direction.
type parking struct {
	id    uint64
	r     *relay
	d     *direction
	end   func(*direction)
	timer *time.Timer
}

type parker struct {
	once sync.Once
	epfd int
	err  error

	mu     sync.Mutex
	parked map[uint64]*parking
	next   uint64
}

var idle parker

// startParker creates the epoll instance and its goroutine now, before
// connections: they live as long as the process. If it fails,
// connections wait in goroutines as elsewhere.
func startParker() { _ = idle.init() }

func (p *parker) init() error {
	p.once.Do(func() {
		p.epfd, p.err = unix.EpollCreate1(unix.EPOLL_CLOEXEC)
		if p.err != nil {
			return
		}
		p.parked = map[uint64]*parking{}
		go p.loop()
	})
	return p.err
}

// loop resumes the directions whose sockets became readable, for the
// life of the process.
func (p *parker) loop() {
	var events [128]unix.EpollEvent
	for {
		n, err := unix.EpollWait(p.epfd, events[:], -1)
		if err != nil {
			if errors.Is(err, unix.EINTR) {
				continue
			}
			// Not expected (EBADF, EFAULT, EINVAL): fall back to timers,
			// which still end every parked direction at its deadline.
			return
		}
		for _, ev := range events[:n] {
			id := uint64(uint32(ev.Fd)) | uint64(uint32(ev.Pad))<<32
			p.resume(p.take(id))
		}
	}
}

// take claims a parked direction: exactly one of its readiness event,
// its timer and a wake-up gets it; the others get nil.
func (p *parker) take(id uint64) *parking {
	p.mu.Lock()
	k := p.parked[id]
	delete(p.parked, id)
	p.mu.Unlock()
	return k
}

// resume takes k's socket out of the epoll set and starts a copy
// goroutine for it.
func (p *parker) resume(k *parking) {
	if k == nil {
		return
	}
	k.timer.Stop()
	if rc := k.d.src.sock.rc; rc != nil {
		// Under Control the descriptor cannot be closed and its number
		// reused; a closed one has left the epoll set by itself.
		_ = rc.Control(func(fd uintptr) { _ = unix.EpollCtl(p.epfd, unix.EPOLL_CTL_DEL, int(fd), nil) })
	}
	k.d.park.CompareAndSwap(k, nil)
	go k.r.copy(k.d, k.end)
}

// park waits for d's source to become readable, or for deadline, without
// a goroutine, then runs r.copy(d, end) in a new one. It reports false
// when parking is not possible; the caller then waits itself.
func (r *relay) park(d *direction, end func(*direction), deadline time.Time) bool {
	rc := d.src.sock.rc
	if rc == nil || idle.init() != nil {
		return false
	}
	k := &parking{r: r, d: d, end: end}
	idle.mu.Lock()
	idle.next++
	k.id = idle.next
	idle.parked[k.id] = k
	// The timer exists before anyone can take k.
	k.timer = time.AfterFunc(time.Until(deadline), func() { idle.resume(idle.take(k.id)) })
	idle.mu.Unlock()
	d.park.Store(k)
	ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLRDHUP | unix.EPOLLONESHOT,
		Fd: int32(uint32(k.id)), Pad: int32(uint32(k.id >> 32))}
	var addErr error
	if err := rc.Control(func(fd uintptr) { addErr = unix.EpollCtl(idle.epfd, unix.EPOLL_CTL_ADD, int(fd), &ev) }); err != nil || addErr != nil {
		// Closed meanwhile, or not pollable: go on at once, the read
		// will say what happened.
		idle.resume(idle.take(k.id))
	}
	return true
}

// wake resumes d at once if it is parked: its socket was closed, which
// takes it out of the epoll set without an event, or its deadline moved.
func (d *direction) wake() {
	if k := d.park.Load(); k != nil {
		idle.resume(idle.take(k.id))
	}
}
