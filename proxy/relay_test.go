package proxy

import (
	"bytes"
	"encoding/binary"
	"io"
	"math/rand/v2"
	"net"
	"testing"
)

// chunkConn serves a byte stream in reads of at most chunk bytes.
type chunkConn struct {
	net.Conn
	r     *bytes.Reader
	chunk int
	reads int
}

func (c *chunkConn) Read(p []byte) (int, error) {
	if len(p) > c.chunk {
		p = p[:c.chunk]
	}
	c.reads++
	return c.r.Read(p)
}

// TestRecordConnBoundaries checks recordConn's promise to crypto/tls: no
// read goes past the end of the record it started in by more than the
// next record's 5-byte header, so crypto/tls never holds a whole record
// that the socket can no longer show; and the stream arrives intact.
func TestRecordConnBoundaries(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	var (
		stream []byte
		ends   []int // end offset of each record
	)
	for range 300 {
		body := make([]byte, 1+rng.IntN(20000)%16401)
		for i := range body {
			body[i] = byte(rng.Uint32())
		}
		stream = append(stream, 23, 3, 3, 0, 0)
		binary.BigEndian.PutUint16(stream[len(stream)-2:], uint16(len(body)))
		stream = append(stream, body...)
		ends = append(ends, len(stream))
	}
	recordEnd := func(off int) int {
		for _, e := range ends {
			if off < e {
				return e
			}
		}
		return len(stream)
	}
	all, allEnds := stream, ends
	for _, chunk := range []int{1, 3, 5, 6, 700, 16384 + 5, 16384 + 10, 1 << 20} {
		for _, bufSize := range []int{1, 5, 17, 4096, 32 << 10, 1 << 20} {
			// Tiny reads: a few records are enough (and keep -race quick).
			stream, ends = all, allEnds
			if chunk < 100 || bufSize < 100 {
				stream, ends = all[:allEnds[9]], allEnds[:10]
			}
			cc := &chunkConn{r: bytes.NewReader(stream), chunk: chunk}
			rc := &recordConn{Conn: cc}
			var got []byte
			buf := make([]byte, bufSize)
			for {
				start := len(got)
				n, err := rc.Read(buf)
				got = append(got, buf[:n]...)
				if limit := recordEnd(start) + 5; len(got) > limit {
					t.Fatalf("chunk %d, buffer %d: a read from %d reached %d, past the record's end and the next header (%d)",
						chunk, bufSize, start, len(got), limit)
				}
				if err == io.EOF {
					break
				}
				if err != nil {
					t.Fatal(err)
				}
			}
			if !bytes.Equal(got, stream) {
				t.Fatalf("chunk %d, buffer %d: stream changed (%d of %d bytes)", chunk, bufSize, len(got), len(stream))
			}
			// In a stream, a record's header comes with the previous
			// record's body: one read per record (plus the first header
			// and the final EOF).
			if chunk >= 1<<20 && bufSize >= 32<<10 && cc.reads > len(ends)+2 {
				t.Errorf("buffer %d: %d reads for %d records", bufSize, cc.reads, len(ends))
			}
		}
	}
}
