package vchan

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"sync/atomic"
	"testing"
)

// fuzzLayouts are the ring orders a fuzz input picks from.
var fuzzLayouts = []layout{{10, 11}, {11, 10}, {12, 12}, {11, 12}, {12, 10}}

// Fuzz operations: the first few are the peer's (it writes anything it
// likes to the shared page and its ring), the others ours.
const (
	fzPeerProd   = iota // u32: the peer's write index of our read ring
	fzPeerCons          // u32: the peer's read index of our write ring
	fzFlags             // u32: all four flag bytes, ours included
	fzRingBytes         // u16 offset, u8 n, n bytes: into our read ring
	fzOwnIndexes        // u32, u32: our own indexes in the page
	fzOrders            // u16, u16: the orders in the page
	fzPeerWrites        // u16: the peer advances its write index by that much
	fzPeerReads         // u16: the peer advances its read index by that much
	fzRead              // u16: we Read with a buffer of that size
	fzWrite             // u16: we Write that many bytes
	fzClose             // we Close
	fzOps
)

// fuzzInput reads a fuzz input; reads past its end give zeros.
type fuzzInput struct{ b []byte }

func (in *fuzzInput) take(n int) []byte {
	out := make([]byte, n)
	copy(out, in.b)
	in.b = in.b[min(n, len(in.b)):]
	return out
}
func (in *fuzzInput) u8() uint8   { return in.take(1)[0] }
func (in *fuzzInput) u16() uint16 { return binary.LittleEndian.Uint16(in.take(2)) }
func (in *fuzzInput) u32() uint32 { return binary.LittleEndian.Uint32(in.take(4)) }

// FuzzRing runs one side of a channel against a peer that writes arbitrary
// values into the shared page (its input), interleaved with our reads,
// writes and close, and checks each result against a model of the
// protocol: reads return the ring's bytes at our index and no more than the
// peer published, writes put their bytes at our index and no more than
// there is room for, a peer index out of bounds is a protocol error that
// sticks, and nothing panics or reaches outside the rings.
func FuzzRing(f *testing.F) {
	f.Add([]byte{0, fzPeerWrites, 50, 0, fzRead, 30, 0, fzRead, 100, 0})
	f.Add([]byte{1, fzPeerProd, 0x01, 0x04, 0, 0, fzRead, 10, 0})
	f.Add([]byte{4, fzWrite, 0xff, 0x0f, fzPeerReads, 0, 8, fzWrite, 0xff, 0x0f, fzPeerCons, 0xff, 0xff, 0xff, 0xff, fzWrite, 1, 0})
	f.Fuzz(func(t *testing.T, data []byte) {
		in := &fuzzInput{b: data}
		head := in.u8()
		server := head&1 == 1
		l := fuzzLayouts[int(head>>1)%len(fuzzLayouts)]
		page := alignedBytes(pageSize)
		ringMem := func(order int) []byte {
			if off := inPageOffset(order); off != 0 {
				return page[off : off+1<<order]
			}
			return alignedBytes(1 << order)
		}
		left, right := ringMem(l.left), ringMem(l.right)
		writeHeader(page, l, make([]uint32, l.grants()))
		page[offCliLive] = liveUp
		c := newConn(Addr{}, Addr{}, endpoint{server: server, page: page, left: left, right: right, kick: func() error { return nil }})
		// A done context: operations do what they can without waiting.
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		var sticky error // the protocol error, once there is one
		closed := false
		written := byte(0)
		for len(in.b) > 0 {
			switch op := in.u8() % fzOps; op {
			case fzPeerProd:
				atomic.StoreUint32(c.rd.prod, in.u32())
			case fzPeerCons:
				atomic.StoreUint32(c.wr.cons, in.u32())
			case fzFlags:
				atomic.StoreUint32(c.flags, in.u32())
			case fzRingBytes:
				off, n := int(in.u16())%len(c.rd.buf), int(in.u8())
				copy(c.rd.buf[off:], in.take(n))
			case fzOwnIndexes:
				atomic.StoreUint32(c.rd.cons, in.u32())
				atomic.StoreUint32(c.wr.prod, in.u32())
			case fzOrders:
				binary.LittleEndian.PutUint16(page[offLeftOrder:], in.u16())
				binary.LittleEndian.PutUint16(page[offRightOrder:], in.u16())
			case fzPeerWrites:
				atomic.AddUint32(c.rd.prod, uint32(in.u16())%(c.rd.size()+1))
			case fzPeerReads:
				atomic.AddUint32(c.wr.cons, uint32(in.u16())%(c.wr.size()+1))
			case fzRead:
				buf := make([]byte, int(in.u16())%(2*len(c.rd.buf)+2))
				cons := c.rdCons
				avail := atomic.LoadUint32(c.rd.prod) - cons
				want := append([]byte(nil), c.rd.buf...)
				up := c.peerUp()
				n, err := c.ReadContext(ctx, buf)
				checkRead(t, c, buf, n, err, cons, avail, want, up, closed, &sticky)
			case fzWrite:
				p := make([]byte, int(in.u16())%(2*len(c.wr.buf)+2))
				for i := range p {
					written++
					p[i] = written
				}
				prod := c.wrProd
				used := prod - atomic.LoadUint32(c.wr.cons)
				up := c.peerUp()
				n, err := c.WriteContext(ctx, p)
				checkWrite(t, c, p, n, err, prod, used, up, closed, &sticky)
			case fzClose:
				err := c.Close()
				if closed != errors.Is(err, net.ErrClosed) {
					t.Fatalf("Close (closed before: %v) = %v", closed, err)
				}
				closed = true
			}
		}
		c.Close()
	})
}

func checkRead(t *testing.T, c *Conn, buf []byte, n int, err error, cons, avail uint32, ring []byte, up, closed bool, sticky *error) {
	t.Helper()
	size := uint32(len(ring))
	switch {
	case closed:
		if n != 0 || !errors.Is(err, net.ErrClosed) {
			t.Fatalf("Read after Close = %d, %v", n, err)
		}
		return
	case *sticky != nil:
		if n != 0 || !errors.Is(err, ErrProtocol) {
			t.Fatalf("Read after a protocol error = %d, %v", n, err)
		}
		return
	case len(buf) == 0:
		if n != 0 || err != nil {
			t.Fatalf("empty Read = %d, %v", n, err)
		}
		return
	case avail > size:
		if n != 0 || !errors.Is(err, ErrProtocol) {
			t.Fatalf("Read with %d bytes published in a %d-byte ring = %d, %v; want a protocol error", avail, size, n, err)
		}
		if c.flag(c.myLive) != liveGone {
			t.Fatal("a protocol error did not mark us gone")
		}
		*sticky = err
		return
	case avail == 0:
		if n != 0 {
			t.Fatalf("Read of an empty ring = %d", n)
		}
		if !up && err != io.EOF {
			t.Fatalf("Read of an empty ring from a closed peer: %v, want io.EOF", err)
		}
		if up && !errors.Is(err, context.Canceled) {
			t.Fatalf("Read of an empty ring with a done context: %v", err)
		}
		return
	}
	want := min(uint32(len(buf)), avail)
	if uint32(n) != want || err != nil {
		t.Fatalf("Read(%d) with %d bytes there = %d, %v; want %d", len(buf), avail, n, err, want)
	}
	for i := range n {
		if buf[i] != ring[(cons+uint32(i))&(size-1)] {
			t.Fatalf("Read byte %d is not the ring's byte at index %d", i, cons+uint32(i))
		}
	}
	if c.rdCons != cons+uint32(n) || atomic.LoadUint32(c.rd.cons) != c.rdCons {
		t.Fatalf("after reading %d bytes from %d, our index is %d (page %d)", n, cons, c.rdCons, atomic.LoadUint32(c.rd.cons))
	}
}

func checkWrite(t *testing.T, c *Conn, p []byte, n int, err error, prod, used uint32, up, closed bool, sticky *error) {
	t.Helper()
	size := c.wr.size()
	switch {
	case closed:
		if n != 0 || !errors.Is(err, net.ErrClosed) {
			t.Fatalf("Write after Close = %d, %v", n, err)
		}
		return
	case *sticky != nil:
		if n != 0 || !errors.Is(err, ErrProtocol) {
			t.Fatalf("Write after a protocol error = %d, %v", n, err)
		}
		return
	case len(p) == 0:
		if n != 0 || err != nil {
			t.Fatalf("empty Write = %d, %v", n, err)
		}
		return
	case !up:
		if n != 0 || !errors.Is(err, ErrPeerClosed) {
			t.Fatalf("Write to a closed peer = %d, %v", n, err)
		}
		return
	case used > size:
		if n != 0 || !errors.Is(err, ErrProtocol) {
			t.Fatalf("Write with %d bytes in flight in a %d-byte ring = %d, %v; want a protocol error", used, size, n, err)
		}
		*sticky = err
		return
	}
	want := min(uint32(len(p)), size-used)
	if uint32(n) != want {
		t.Fatalf("Write(%d) with %d bytes of room = %d, %v; want %d", len(p), size-used, n, err, want)
	}
	if (uint32(n) < uint32(len(p))) != (err != nil) {
		t.Fatalf("Write(%d) = %d, %v", len(p), n, err)
	}
	got := make([]byte, n)
	for i := range got {
		got[i] = c.wr.buf[(prod+uint32(i))&(size-1)]
	}
	if !bytes.Equal(got, p[:n]) {
		t.Fatal("the ring does not hold the written bytes at our index")
	}
	// The page has our index once we wrote (the peer may have scribbled
	// on it before).
	if c.wrProd != prod+uint32(n) || (n > 0 && atomic.LoadUint32(c.wr.prod) != c.wrProd) {
		t.Fatalf("after writing %d bytes from %d, our index is %d (page %d)", n, prod, c.wrProd, atomic.LoadUint32(c.wr.prod))
	}
}

// FuzzHeader reads a client's view of an arbitrary shared page: either an
// error, or orders Xen accepts and a grant list that ends before the rings
// in the page.
func FuzzHeader(f *testing.F) {
	for _, l := range []layout{{10, 11}, {12, 12}, {20, 20}, {11, 20}, {10, 10}, {10, 20}} {
		page := make([]byte, 64)
		binary.LittleEndian.PutUint16(page[offLeftOrder:], uint16(l.left))
		binary.LittleEndian.PutUint16(page[offRightOrder:], uint16(l.right))
		f.Add(page)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		page := make([]byte, pageSize)
		copy(page, data)
		l, grants, err := readHeader(page)
		if err != nil {
			return
		}
		if l.check() != nil || len(grants) != l.grants() {
			t.Fatalf("readHeader accepted %v with %d grants", l, len(grants))
		}
		end := offGrants + 4*len(grants)
		for _, o := range []int{l.left, l.right} {
			if off := inPageOffset(o); off != 0 && end > off {
				t.Fatalf("grant list of %v ends at %d, past the ring at %d", l, end, off)
			}
		}
		if l.left == l.right && l.left < 12 {
			t.Fatalf("two rings at the same place: %v", l)
		}
	})
}
