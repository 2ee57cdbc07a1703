package proxy

import (
	"crypto/tls"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// bufSize is the copy buffer: larger than a TLS record's plaintext
// (16 KiB), so one Read drains a whole record and nothing stays buffered
// inside crypto/tls (see recordConn).
const bufSize = 32 << 10

var bufPool = sync.Pool{New: func() any { b := make([]byte, bufSize); return &b }}

// endpoint is one side of a relayed connection.
type endpoint struct {
	rw  net.Conn  // bytes are read and written here: a *tls.Conn or the socket
	raw net.Conn  // the socket: deadlines, readiness, half-close
	tls *tls.Conn // nil for plain sides
	// rec is what tls reads from, when it is a recordConn: the relay puts
	// it in non-blocking mode.
	rec *recordConn
	// pending is data read from this side before the relay started.
	pending []byte
	sock    sock // raw's descriptor, for reads without waiting
}

func plainEndpoint(c net.Conn) *endpoint { return &endpoint{rw: c, raw: c, sock: sockOf(c)} }

func tlsEndpoint(t *tls.Conn, raw net.Conn) *endpoint {
	e := &endpoint{rw: t, raw: raw, tls: t}
	if rc, ok := t.NetConn().(*recordConn); ok {
		e.rec, e.sock = rc, rc.sock
	} else {
		e.sock = sockOf(raw)
	}
	return e
}

// readNow reads what the endpoint has now without waiting for more: TLS
// plaintext crypto/tls already holds, or what the socket has. It fails
// with errWouldBlock when there is nothing (where canPeek is false, it
// waits like Read). One system call when data is there, and none to ask
// first: a stream costs what io.Copy's reads cost.
// readWait is a read that waits for data, under the read deadline.
func (e *endpoint) readWait(p []byte) (int, error) {
	if e.rec != nil {
		e.rec.nonblock = false
		defer func() { e.rec.nonblock = true }()
	}
	return e.rw.Read(p)
}

func (e *endpoint) readNow(p []byte) (int, error) {
	switch {
	case e.rec != nil:
		return e.tls.Read(p) // the recordConn is non-blocking while relaying
	case e.tls != nil: // not over a recordConn: ask the socket first
		if !e.sock.readable() {
			return 0, errWouldBlock
		}
		return e.tls.Read(p)
	}
	return e.sock.read(e.raw, p)
}

// closeWrite half-closes: close_notify on TLS, then FIN where the socket
// supports it.
func (e *endpoint) closeWrite() {
	if e.tls != nil {
		_ = e.tls.CloseWrite()
	}
	if cw, ok := e.raw.(interface{ CloseWrite() error }); ok {
		_ = cw.CloseWrite()
	}
}

// abort ends the connection as broken: no close_notify, and a reset
// instead of a FIN. A relay aborts both sides when either fails mid-
// stream, so a peer cannot take a cut stream for a complete one (a TLS
// client would otherwise see a clean close_notify after truncated data).
func (e *endpoint) abort() {
	if tc, ok := e.raw.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	_ = e.raw.Close()
}

func (e *endpoint) close() {
	if e.tls != nil {
		// Do not let a dead peer hold Close for crypto/tls's 5s alert write.
		_ = e.raw.SetWriteDeadline(time.Now().Add(time.Second))
		_ = e.tls.Close()
		return
	}
	_ = e.raw.Close()
}

// recordConn hands crypto/tls at most one TLS record at a time: a read
// stops at the end of a record, or at the end of the next record's
// 5-byte header, never later. So after tls.Conn.Read returns less than
// its buffer, crypto/tls holds at most a header whose body is still in
// the socket (an encrypted record's body is never empty), and waiting for
// the socket to become readable cannot strand a record (a read that
// fills its buffer is followed by another before any wait). Reading the
// next header with a body keeps it at one read per record in a stream.
type recordConn struct {
	net.Conn
	sock sock // Conn's descriptor, for non-blocking reads
	hdr  [5]byte
	nhdr int
	left int // bytes of the current record's body still to read
	// nonblock makes Read fail with errWouldBlock instead of waiting.
	nonblock bool
	// splitFirst asks for the first record, when it is a handshake
	// record longer than fragSize, to be handed over as records of at
	// most fragSize (see split).
	splitFirst bool
	frag       int     // body bytes left in the current fragment of a split record
	synth      [5]byte // the header of the next fragment
	nsynth     int     // bytes of synth still to hand over
}

// fragSize bounds the records crypto/tls sees of a split ClientHello.
// crypto/tls keeps its raw input buffer at the size of the largest
// record it has read (plus 512 bytes) for the life of the connection; a
// ClientHello with a post-quantum key share is a 1.8 KB record, so every
// connection would keep 2.3 KB for a record it reads once. TLS allows
// handshake messages to be fragmented across records (RFC 8446, 5.1),
// and a plaintext record's boundaries are not part of the transcript, so
// the split changes nothing crypto/tls checks. It costs one read(2) per
// fragment, for large ClientHellos only.
const fragSize = 512

func newRecordConn(c net.Conn) *recordConn { return &recordConn{Conn: c, sock: sockOf(c)} }

// serverRecordConn is newRecordConn for the server side of a handshake:
// the ClientHello is split (fragSize).
func serverRecordConn(c net.Conn) *recordConn {
	r := newRecordConn(c)
	r.splitFirst = true
	return r
}

// read is one read of the socket, without waiting when nonblock is set.
func (r *recordConn) read(p []byte) (int, error) {
	if r.nonblock {
		return r.sock.read(r.Conn, p)
	}
	return r.Conn.Read(p)
}

// errWouldBlock is a temporary net.Error: crypto/tls keeps the connection
// usable after it.
var errWouldBlock error = wouldBlock{}

type wouldBlock struct{}

func (wouldBlock) Error() string   { return "no data ready" }
func (wouldBlock) Timeout() bool   { return true }
func (wouldBlock) Temporary() bool { return true }

func (r *recordConn) Read(p []byte) (int, error) {
	if r.nsynth > 0 { // a split record's next header
		n := copy(p, r.synth[len(r.synth)-r.nsynth:])
		r.nsynth -= n
		return n, nil
	}
	if r.frag > 0 {
		return r.readFragment(p)
	}
	if r.left == 0 {
		if need := len(r.hdr) - r.nhdr; len(p) > need {
			p = p[:need]
		}
		whole := r.nhdr == 0
		n, err := r.read(p)
		copy(r.hdr[r.nhdr:], p[:n])
		r.nhdr += n
		if r.nhdr == len(r.hdr) {
			r.left = int(binary.BigEndian.Uint16(r.hdr[3:]))
			r.nhdr = 0
			if r.splitFirst && whole {
				r.split(p[:n])
			}
			r.splitFirst = false
		}
		return n, err
	}
	if len(p) > r.left+len(r.hdr) {
		p = p[:r.left+len(r.hdr)]
	}
	n, err := r.read(p)
	if n <= r.left {
		r.left -= n
		return n, err
	}
	// The read ran on into the next record's header.
	r.nhdr = copy(r.hdr[:], p[r.left:n])
	r.left = 0
	if r.nhdr == len(r.hdr) {
		r.left = int(binary.BigEndian.Uint16(r.hdr[3:]))
		r.nhdr = 0
	}
	return n, err
}

// split starts handing over the record whose header is hdr (just read,
// and not yet seen by crypto/tls) as fragments of fragSize, when it is a
// handshake record longer than that and no longer than a plaintext
// record may be. Anything else (an oversized length, another type) is
// left for crypto/tls to judge.
func (r *recordConn) split(hdr []byte) {
	const typeHandshake, maxPlaintext = 22, 16384
	if hdr[0] != typeHandshake || r.left <= fragSize || r.left > maxPlaintext {
		return
	}
	binary.BigEndian.PutUint16(hdr[3:], fragSize)
	r.frag = fragSize
}

// readFragment reads the rest of the current fragment, never beyond; at
// its end it prepares the next fragment's header.
func (r *recordConn) readFragment(p []byte) (int, error) {
	if len(p) > r.frag {
		p = p[:r.frag]
	}
	n, err := r.read(p)
	r.frag -= n
	r.left -= n
	if r.frag == 0 && r.left > 0 {
		r.frag = min(r.left, fragSize)
		r.synth = r.hdr
		binary.BigEndian.PutUint16(r.synth[3:], uint16(r.frag))
		r.nsynth = len(r.synth)
	}
	return n, err
}

// closeReason says why a connection was refused or closed. Its value is
// both the log line's reason and the reason label of
// sealproxy_connections_rejected_total and
// sealproxy_connections_closed_total: one spelling per event.
type closeReason string

// Refused before a connection is taken (connections_rejected_total).
const (
	reasonListenerLimit closeReason = "listener_limit" // the listener's max_connections are open
	reasonGlobalLimit   closeReason = "global_limit"   // max_connections of the whole daemon are open
)

// Ended before the relay (connections_closed_total; bad_proxy_header is
// counted as rejected too).
const (
	reasonBadProxyHeader     closeReason = "bad_proxy_header"
	reasonHandshakeFailed    closeReason = "handshake_failed"
	reasonConnectRefused     closeReason = "connect_refused"
	reasonBackendUnavailable closeReason = "backend_unavailable"
	reasonACMEChallenge      closeReason = "acme_challenge"
)

// Ended while relaying, or forced (connections_closed_total).
const (
	reasonClientClosed  closeReason = "client_closed"
	reasonBackendClosed closeReason = "backend_closed"
	reasonClientError   closeReason = "client_error"
	reasonBackendError  closeReason = "backend_error"
	reasonIdleTimeout   closeReason = "idle_timeout"
	reasonCloseTimeout  closeReason = "close_timeout"
	reasonMaxLifetime   closeReason = "max_lifetime"
	reasonShutdown      closeReason = "shutdown"
)

// relay copies both ways between a client and a backend.
type relay struct {
	idle, closeTimeout time.Duration
	last               atomic.Int64 // unix nanoseconds of the last byte moved
	halfClosed         atomic.Bool
	in, out            atomic.Int64
	inC, outC          prometheus.Counter
	once               sync.Once
	client, backend    *endpoint
	// first is the direction that ended first, set before that end has
	// any effect on the other direction.
	first atomic.Pointer[direction]
	// up and down are set by start.
	up, down *direction
}

type direction struct {
	fresh          bool // running in a goroutine started to wait
	wait           bool // the last read found nothing: wait before the next
	src, dst       *endpoint
	n              *atomic.Int64
	c              prometheus.Counter
	srcIsClient    bool
	eof            bool
	timeout        bool
	readErr, wrErr error
	// wdl is the write deadline last set on dst: it is moved only when it
	// falls behind by wdlSlack, since each move resets a runtime timer.
	wdl time.Time
	// park is set while the direction is parked (park_linux.go).
	park atomic.Pointer[parking]
	// hot: the last read was a stream's (hotMin), so the next waits in
	// the runtime's poller, under rdl, holding its buffer.
	hot bool
	// cold: a wait in the runtime's poller ran out (hotWait): park.
	cold bool
	rdl  time.Time // the read deadline set on src for hot reads and waits; zero: none
}

// A read of at least hotMin bytes says a stream is flowing: the next read
// waits for data in the runtime's poller (as io.Copy does) for up to
// hotWait, rather than parking at every gap between TCP segments. Below
// it, and after hotWait without data, the direction parks without its
// buffer.
const (
	hotMin  = 4 << 10
	hotWait = 100 * time.Millisecond
)

// setHotDeadline keeps src's read deadline within [hotWait/2, hotWait]
// ahead, and never past the relay's deadline, moving it only when it
// falls out of that range: one timer reset per hotWait/2 of a stream.
func (d *direction) setHotDeadline(limit time.Time) {
	now := time.Now()
	if !d.rdl.IsZero() && d.rdl.Sub(now) >= hotWait/2 && !d.rdl.After(limit) {
		return
	}
	d.rdl = now.Add(hotWait)
	if d.rdl.After(limit) {
		d.rdl = limit
	}
	_ = d.src.raw.SetReadDeadline(d.rdl)
}

// start relays both ways in two goroutines; when both directions have
// ended, done receives why: the first direction to finish decides,
// unless the second then outstayed the close timeout.
func (r *relay) start(done func(reason closeReason)) {
	r.touch()
	up := &direction{src: r.client, dst: r.backend, n: &r.in, c: r.inC, srcIsClient: true}
	down := &direction{src: r.backend, dst: r.client, n: &r.out, c: r.outC}
	r.up, r.down = up, down
	for _, e := range []*endpoint{r.client, r.backend} {
		if e.rec != nil && canPeek {
			e.rec.nonblock = true // only the relay reads it from now on
		}
	}
	var ended atomic.Int32
	end := func(d *direction) {
		if ended.Add(1) < 2 {
			return
		}
		r.closeAll()
		first := r.first.Load()
		if d != first && d.timeout {
			done(d.reason(r.halfClosed.Load()))
			return
		}
		done(first.reason(r.halfClosed.Load()))
	}
	go r.copy(up, end)
	go r.copy(down, end)
}

func (d *direction) reason(halfClosed bool) closeReason {
	switch {
	case d.timeout && halfClosed:
		return reasonCloseTimeout
	case d.timeout:
		return reasonIdleTimeout
	case d.eof && d.srcIsClient:
		return reasonClientClosed
	case d.eof:
		return reasonBackendClosed
	case (d.readErr != nil) == d.srcIsClient:
		return reasonClientError
	}
	return reasonBackendError
}

func (r *relay) closeAll() {
	r.once.Do(func() {
		r.client.close()
		r.backend.close()
		r.wake()
	})
}

// abortAll is closeAll after a failure: both sides are reset.
func (r *relay) abortAll() {
	r.once.Do(func() {
		r.client.abort()
		r.backend.abort()
		r.wake()
	})
}

// wake resumes parked directions: their sockets were closed, or their
// deadline moved. Safe before start and from any goroutine.
func (r *relay) wake() {
	for _, d := range []*direction{r.up, r.down} {
		if d != nil {
			d.wake()
		}
	}
}

func (r *relay) touch() { r.last.Store(time.Now().UnixNano()) }

func (r *relay) limit() time.Duration {
	if r.halfClosed.Load() {
		return r.closeTimeout
	}
	return r.idle
}

func (r *relay) deadline() time.Time {
	return time.Unix(0, r.last.Load()).Add(r.limit())
}

// copy moves bytes from d.src to d.dst until the direction ends, then
// calls end. Its reads take what the source has without waiting, and it
// borrows a buffer only for such a read, so idle connections hold none;
// only a stream (hot) waits inside a read, under a short deadline. When
// the source has nothing to read, the direction waits up to hotWait in
// the runtime's poller, then parks without a goroutine (Linux,
// park_linux.go) and a new goroutine resumes it. Elsewhere it hands the
// wait to a fresh goroutine and returns: the stack a direction keeps
// while idle is a new goroutine's smallest one, not the one TLS record
// processing grew.
func (r *relay) copy(d *direction, end func(*direction)) {
	for {
		var err error
		if d.wait && canPark && canPeek && !d.cold {
			// Wait in the runtime's poller first, without a buffer, for
			// up to hotWait: a conversation's next message comes with no
			// more latency than in io.Copy. Only a longer silence parks.
			d.setHotDeadline(r.deadline())
			if err = d.src.sock.wait(); errors.Is(err, os.ErrDeadlineExceeded) && time.Now().Before(r.deadline()) {
				d.cold, err = true, nil
			} else {
				d.wait = false
			}
		}
		if d.wait && canPark && canPeek {
			d.wait, d.cold = false, false
			d.rdl = time.Time{}
			dl := r.deadline()
			if !time.Now().Before(dl) {
				err = os.ErrDeadlineExceeded
			} else if r.park(d, end, dl) {
				return // a new goroutine goes on when there is something to read
			} else {
				d.wait, d.fresh = true, true // wait below, in this goroutine
			}
		}
		if d.wait {
			if !d.fresh {
				d.fresh = true
				go r.copy(d, end)
				return
			}
			d.fresh, d.wait = false, false
			_ = d.src.raw.SetReadDeadline(r.deadline())
			d.rdl = time.Time{}
			err = d.src.sock.wait()
		}
		if err == nil && !d.wait {
			if !canPeek {
				// No waiting for readiness here (wait_other.go): the read
				// itself waits for the peer, so it carries the idle deadline.
				_ = d.src.raw.SetReadDeadline(r.deadline())
			}
			bp := bufPool.Get().(*[]byte)
			var n int
			var rerr error
			hot := d.hot && canPeek
			if hot {
				d.setHotDeadline(r.deadline())
				n, rerr = d.src.readWait(*bp)
			} else {
				n, rerr = d.src.readNow(*bp)
			}
			d.hot = n >= hotMin
			if n > 0 {
				d.setWriteDeadline(r.limit())
				_, werr := d.dst.rw.Write((*bp)[:n])
				bufPool.Put(bp)
				r.touch()
				d.n.Add(int64(n))
				d.c.Add(float64(n))
				if werr != nil {
					d.wrErr = werr
					r.first.CompareAndSwap(nil, d)
					r.abortAll()
					end(d)
					return
				}
			} else {
				bufPool.Put(bp)
			}
			switch {
			case errors.Is(rerr, errWouldBlock):
				d.wait, rerr = true, nil
			case hot && errors.Is(rerr, os.ErrDeadlineExceeded) && time.Now().Before(r.deadline()):
				d.wait, d.cold, rerr = true, true, nil // the stream paused: park without the buffer
			}
			err = rerr
		}
		switch {
		case err == nil:
		case errors.Is(err, os.ErrDeadlineExceeded):
			if time.Now().Before(r.deadline()) {
				// The other direction moved bytes: not idle, wait on.
				d.fresh, d.wait = true, true
				continue
			}
			d.timeout = true
			r.first.CompareAndSwap(nil, d)
			r.closeAll()
			end(d)
			return
		case errors.Is(err, io.EOF):
			d.eof = true
			r.first.CompareAndSwap(nil, d)
			r.touch() // the close_timeout starts now
			d.dst.closeWrite()
			if !r.halfClosed.Swap(true) {
				// The other direction now has close_timeout of silence left.
				_ = d.dst.raw.SetReadDeadline(r.deadline())
				r.wake() // a parked one looks at its deadline again
			}
			end(d)
			return
		default:
			d.readErr = err
			r.first.CompareAndSwap(nil, d)
			r.abortAll()
			end(d)
			return
		}
	}
}

// wdlSlack is how far a write deadline may lag behind now+limit before
// it is moved: at most this much earlier than the limit says.
const wdlSlack = time.Second

// setWriteDeadline keeps dst's write deadline within min(wdlSlack,
// limit/8) of now+limit, moving it at most about once a second in a
// stream instead of on every write. A shorter limit (half-closed) takes
// effect at once.
func (d *direction) setWriteDeadline(limit time.Duration) {
	now := time.Now()
	want := now.Add(limit)
	slack := min(wdlSlack, limit/8)
	if want.Before(d.wdl) || want.Sub(d.wdl) > slack {
		d.wdl = want
		_ = d.dst.raw.SetWriteDeadline(want)
	}
}
