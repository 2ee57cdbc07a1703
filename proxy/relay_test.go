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

// TestRecordConnSplitsClientHello: a server's first record, a handshake
// record longer than fragSize, reaches crypto/tls as records of at most
// fragSize with the same bytes in them; what follows passes unchanged,
// and first records it must not touch (another type, a length no
// plaintext record may have, a header read in pieces) pass unchanged.
func TestRecordConnSplitsClientHello(t *testing.T) {
	record := func(typ byte, body []byte) []byte {
		r := []byte{typ, 3, 1, 0, 0}
		binary.BigEndian.PutUint16(r[3:], uint16(len(body)))
		return append(r, body...)
	}
	body := func(n int, seed byte) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = seed + byte(i*7)
		}
		return b
	}
	hello := body(1800, 1)
	rest := append(record(20, []byte{1}), record(23, body(3000, 2))...)
	readAll := func(rc *recordConn, bufSize int) []byte {
		var got []byte
		buf := make([]byte, bufSize)
		for {
			n, err := rc.Read(buf)
			got = append(got, buf[:n]...)
			if err == io.EOF {
				return got
			}
			if err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, bufSize := range []int{5, 517, 4096, 32 << 10} {
		in := append(record(22, hello), rest...)
		cc := &chunkConn{r: bytes.NewReader(in), chunk: 1 << 20}
		got := readAll(serverRecordConn(cc), bufSize)
		// Reassemble: handshake fragments first, then the rest unchanged.
		var hs []byte
		frags := 0
		for len(got) >= 5 && got[0] == 22 {
			n := int(binary.BigEndian.Uint16(got[3:5]))
			if n > fragSize || n == 0 {
				t.Fatalf("buffer %d: a fragment of %d bytes", bufSize, n)
			}
			if !bytes.Equal(got[:3], []byte{22, 3, 1}) {
				t.Fatalf("buffer %d: fragment header % x", bufSize, got[:3])
			}
			hs = append(hs, got[5:5+n]...)
			got = got[5+n:]
			frags++
		}
		if !bytes.Equal(hs, hello) || frags != (len(hello)+fragSize-1)/fragSize {
			t.Fatalf("buffer %d: %d fragments carrying %d bytes, want the %d-byte ClientHello in %d", bufSize, frags, len(hs), len(hello), (len(hello)+fragSize-1)/fragSize)
		}
		if !bytes.Equal(got, rest) {
			t.Fatalf("buffer %d: the records after the ClientHello changed", bufSize)
		}
	}
	for name, in := range map[string][]byte{
		"application data first": record(23, body(1800, 3)),
		"short hello":            record(22, body(fragSize, 4)),
		"oversized length":       append([]byte{22, 3, 1, 0xff, 0xff}, body(2000, 5)...),
	} {
		cc := &chunkConn{r: bytes.NewReader(in), chunk: 1 << 20}
		if got := readAll(serverRecordConn(cc), 32<<10); !bytes.Equal(got, in) {
			t.Errorf("%s: changed", name)
		}
	}
	// A header that arrives in pieces is not split (and not changed).
	in := append(record(22, hello), rest...)
	cc := &chunkConn{r: bytes.NewReader(in), chunk: 3}
	if got := readAll(serverRecordConn(cc), 32<<10); !bytes.Equal(got, in) {
		t.Error("a ClientHello whose header came in pieces changed")
	}
	// The client side never splits.
	cc = &chunkConn{r: bytes.NewReader(in), chunk: 1 << 20}
	if got := readAll(newRecordConn(cc), 32<<10); !bytes.Equal(got, in) {
		t.Error("newRecordConn split a record")
	}
}

// FuzzRecordConnSplit: whatever a client sends, what crypto/tls reads
// through a server's recordConn is the same bytes, except that a first
// handshake record may come as fragments of at most fragSize carrying
// its body in order, under its own type and version.
func FuzzRecordConnSplit(f *testing.F) {
	hello := append([]byte{22, 3, 1, 7, 8}, bytes.Repeat([]byte{1}, 1800)...)
	f.Add(hello, uint16(1<<15), uint16(1<<15))
	f.Add(hello[:900], uint16(7), uint16(600))
	f.Add([]byte{22, 3, 1, 0xff, 0xff, 1, 2}, uint16(5), uint16(5))
	f.Fuzz(func(t *testing.T, in []byte, chunk, bufSize uint16) {
		// Two maximal records are enough to cross every boundary; longer
		// inputs only slow the fuzzer (a byte per read is many reads).
		in = in[:min(len(in), 2*(5+1<<14))]
		cc := &chunkConn{r: bytes.NewReader(in), chunk: max(int(chunk), 1)}
		rc := serverRecordConn(cc)
		var out []byte
		buf := make([]byte, max(int(bufSize), 1))
		for reads := 0; ; reads++ {
			n, err := rc.Read(buf)
			out = append(out, buf[:n]...)
			if err != nil {
				break
			}
			if reads > 2*len(in)+20 {
				t.Fatalf("%d reads for %d bytes: no progress (%d out)", reads, len(in), len(out))
			}
		}
		if bytes.Equal(out, in) {
			return
		}
		if len(in) < 5 || in[0] != 22 {
			t.Fatalf("changed a stream that starts % x", in[:min(len(in), 5)])
		}
		want := int(binary.BigEndian.Uint16(in[3:5]))
		var body []byte
		rest := out
		for len(body) < want && len(rest) > 0 {
			if len(rest) < 5 || !bytes.Equal(rest[:3], in[:3]) {
				t.Fatalf("fragment header % x, want % x", rest[:min(len(rest), 5)], in[:3])
			}
			n := int(binary.BigEndian.Uint16(rest[3:5]))
			if n == 0 || n > fragSize {
				t.Fatalf("fragment of %d bytes", n)
			}
			n = min(n, len(rest)-5) // the stream may end inside it
			body, rest = append(body, rest[5:5+n]...), rest[5+n:]
		}
		orig := in[5:]
		if len(orig) > want {
			orig = orig[:want]
		}
		if !bytes.HasPrefix(orig, body) || (len(body) == want && !bytes.Equal(rest, in[5+want:])) || (len(body) < want && len(rest) > 0) {
			t.Fatalf("the split changed the bytes: %d of %d body bytes, %d after", len(body), want, len(rest))
		}
	})
}
