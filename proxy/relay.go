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

// smallBufSize is the buffer of a TLS upstream's first read: the first
// record from a TLS 1.3 server is often a session ticket, after which
// crypto/tls waits inside Read for data that may be long in coming; a
// small buffer is what the connection holds meanwhile.
const smallBufSize = 1 << 10

var smallBufPool = sync.Pool{New: func() any { b := make([]byte, smallBufSize); return &b }}

// endpoint is one side of a relayed connection.
type endpoint struct {
	rw  net.Conn  // bytes are read and written here: a *tls.Conn or the socket
	raw net.Conn  // the socket: deadlines, readiness, half-close
	tls *tls.Conn // nil for plain sides
	// pending is data read from this side before the relay started.
	pending []byte
}

func plainEndpoint(c net.Conn) *endpoint { return &endpoint{rw: c, raw: c} }

func tlsEndpoint(t *tls.Conn, raw net.Conn) *endpoint { return &endpoint{rw: t, raw: raw, tls: t} }

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
	hdr  [5]byte
	nhdr int
	left int // bytes of the current record's body still to read
	// nonblock makes Read fail with errWouldBlock instead of waiting.
	nonblock bool
}

// errWouldBlock is a temporary net.Error: crypto/tls keeps the connection
// usable after it.
var errWouldBlock error = wouldBlock{}

type wouldBlock struct{}

func (wouldBlock) Error() string   { return "no data ready" }
func (wouldBlock) Timeout() bool   { return true }
func (wouldBlock) Temporary() bool { return true }

func (r *recordConn) Read(p []byte) (int, error) {
	if r.nonblock && !readableNow(r.Conn) {
		return 0, errWouldBlock
	}
	if r.left == 0 {
		if need := len(r.hdr) - r.nhdr; len(p) > need {
			p = p[:need]
		}
		n, err := r.Conn.Read(p)
		copy(r.hdr[r.nhdr:], p[:n])
		r.nhdr += n
		if r.nhdr == len(r.hdr) {
			r.left = int(binary.BigEndian.Uint16(r.hdr[3:]))
			r.nhdr = 0
		}
		return n, err
	}
	if len(p) > r.left+len(r.hdr) {
		p = p[:r.left+len(r.hdr)]
	}
	n, err := r.Conn.Read(p)
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
}

type direction struct {
	fresh          bool // running in a goroutine started to wait
	more           bool // the last read filled its buffer: TLS may hold more
	small          bool // the next read uses a small buffer
	src, dst       *endpoint
	n              *atomic.Int64
	c              prometheus.Counter
	srcIsClient    bool
	eof            bool
	timeout        bool
	readErr, wrErr error
}

// start relays both ways in two goroutines; when both directions have
// ended, done receives why: the first direction to finish decides,
// unless the second then outstayed the close timeout.
func (r *relay) start(done func(reason closeReason)) {
	r.touch()
	up := &direction{src: r.client, dst: r.backend, n: &r.in, c: r.inC, srcIsClient: true}
	down := &direction{src: r.backend, dst: r.client, n: &r.out, c: r.outC, small: r.backend.tls != nil}
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
	})
}

// abortAll is closeAll after a failure: both sides are reset.
func (r *relay) abortAll() {
	r.once.Do(func() {
		r.client.abort()
		r.backend.abort()
	})
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
// calls end. It borrows a buffer only once the source is readable, so
// idle connections hold none. When the source has nothing to read, it
// hands the wait to a fresh goroutine and returns: the stack a direction
// keeps while idle is a new goroutine's smallest one, not the one TLS
// record processing grew.
func (r *relay) copy(d *direction, end func(*direction)) {
	for {
		var err error
		if !d.more && (d.fresh || !readableNow(d.src.raw)) {
			if !d.fresh {
				d.fresh = true
				go r.copy(d, end)
				return
			}
			d.fresh = false
			_ = d.src.raw.SetReadDeadline(r.deadline())
			err = waitReadable(d.src.raw)
		}
		if err == nil {
			pool := &bufPool
			if d.small {
				pool, d.small = &smallBufPool, false
			}
			if !canPeek {
				// No readiness check here (wait_other.go): the Read itself
				// waits for the client, so it carries the idle deadline.
				_ = d.src.raw.SetReadDeadline(r.deadline())
			}
			bp := pool.Get().(*[]byte)
			n, rerr := d.src.rw.Read(*bp)
			// A read that fills its buffer may leave the rest of a TLS
			// record inside crypto/tls, where the socket cannot show it:
			// read again before waiting.
			d.more = d.src.tls != nil && n == len(*bp)
			if n > 0 {
				_ = d.dst.raw.SetWriteDeadline(time.Now().Add(r.limit()))
				_, werr := d.dst.rw.Write((*bp)[:n])
				pool.Put(bp)
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
				pool.Put(bp)
			}
			err = rerr
		}
		switch {
		case err == nil:
		case errors.Is(err, os.ErrDeadlineExceeded):
			if time.Now().Before(r.deadline()) {
				d.fresh = true // the other direction moved bytes: not idle, wait on
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
