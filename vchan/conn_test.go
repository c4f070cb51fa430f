package vchan

import (
	"bytes"
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// memPair is a server and a client Conn over memory of this process: the
// shared page and rings in Go's heap (so the race detector checks that the
// protocol orders the sides' accesses), each side's kick waking the other.
type memPair struct {
	srv, cli           *Conn
	page               []byte
	left, right        []byte
	srvKicks, cliKicks atomic.Int64
}

// newMemPair lays out a channel of the given ring orders as a server
// would, and connects a client to it. The Conns are closed when the test
// ends.
func newMemPair(t testing.TB, leftOrder, rightOrder int) *memPair {
	t.Helper()
	l := layout{left: leftOrder, right: rightOrder}
	if err := l.check(); err != nil {
		t.Fatal(err)
	}
	p := &memPair{page: alignedBytes(pageSize)}
	ringMem := func(order int) []byte {
		if off := inPageOffset(order); off != 0 {
			return p.page[off : off+1<<order]
		}
		return alignedBytes(1 << order)
	}
	p.left, p.right = ringMem(leftOrder), ringMem(rightOrder)
	writeHeader(p.page, l, make([]uint32, l.grants()))
	p.srv = newConn(Addr{Domid: 0, Port: 1}, Addr{Domid: 5, Port: 1}, endpoint{
		server: true, page: p.page, left: p.left, right: p.right,
		kick: func() error { p.srvKicks.Add(1); p.cli.wake(); return nil },
	})
	p.cli = newConn(Addr{Domid: 5, Port: 1}, Addr{Domid: 0, Port: 1}, endpoint{
		server: false, page: p.page, left: p.left, right: p.right,
		kick: func() error { p.cliKicks.Add(1); p.srv.wake(); return nil },
	})
	if err := p.cli.announce(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.srv.Close(); p.cli.Close() })
	return p
}

func randomBytes(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, 1))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// pump writes data to w in chunks of random sizes (up to maxChunk).
func pump(w io.Writer, data []byte, seed uint64, maxChunk int) error {
	r := rand.New(rand.NewPCG(seed, 2))
	for len(data) > 0 {
		n := min(len(data), 1+r.IntN(maxChunk))
		m, err := w.Write(data[:n])
		if err != nil {
			return err
		}
		if m != n {
			return io.ErrShortWrite
		}
		data = data[n:]
	}
	return nil
}

// drain reads exactly n bytes from r with buffers of random sizes (up to
// maxChunk), checking each Read returns between 1 byte and the buffer.
func drain(r io.Reader, n int, seed uint64, maxChunk int) ([]byte, error) {
	rnd := rand.New(rand.NewPCG(seed, 3))
	out := make([]byte, 0, n)
	for len(out) < n {
		buf := make([]byte, min(n-len(out), 1+rnd.IntN(maxChunk)))
		m, err := r.Read(buf)
		if m < 0 || m > len(buf) || (m == 0 && err == nil) {
			return out, errors.New("Read returned a bad count")
		}
		out = append(out, buf[:m]...)
		if err != nil {
			return out, err
		}
	}
	return out, nil
}

// Data goes both ways at once, in chunks of every size from one byte to
// several rings, through rings in the page and in extra pages.
func TestBothWays(t *testing.T) {
	for _, o := range [][2]int{{10, 11}, {11, 10}, {12, 12}, {11, 14}, {16, 13}} {
		t.Run("", func(t *testing.T) {
			p := newMemPair(t, o[0], o[1])
			// A lost event would hang a side: make it fail instead.
			p.srv.SetDeadline(time.Now().Add(time.Minute))
			p.cli.SetDeadline(time.Now().Add(time.Minute))
			up := randomBytes(uint64(o[0]), 1<<20+17)
			down := randomBytes(uint64(o[1])+100, 3<<19+5)
			maxChunk := 3 << max(o[0], o[1])
			var wg sync.WaitGroup
			errs := make(chan error, 4)
			var gotUp, gotDown []byte
			wg.Add(4)
			go func() { defer wg.Done(); errs <- pump(p.cli, up, 1, maxChunk) }()
			go func() { defer wg.Done(); errs <- pump(p.srv, down, 2, maxChunk) }()
			go func() {
				defer wg.Done()
				var err error
				gotUp, err = drain(p.srv, len(up), 3, maxChunk)
				errs <- err
			}()
			go func() {
				defer wg.Done()
				var err error
				gotDown, err = drain(p.cli, len(down), 4, maxChunk)
				errs <- err
			}()
			wg.Wait()
			close(errs)
			for err := range errs {
				if err != nil {
					t.Fatal(err)
				}
			}
			if !bytes.Equal(gotUp, up) {
				t.Errorf("client to server: %d bytes arrived differently (first difference at %d)", len(up), firstDiff(gotUp, up))
			}
			if !bytes.Equal(gotDown, down) {
				t.Errorf("server to client: %d bytes arrived differently (first difference at %d)", len(down), firstDiff(gotDown, down))
			}
		})
	}
}

func firstDiff(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

// A Read returns what is there, no more than its buffer, without waiting
// for more.
func TestPartialRead(t *testing.T) {
	p := newMemPair(t, 10, 11)
	msg := randomBytes(7, 100)
	if n, err := p.srv.Write(msg); n != 100 || err != nil {
		t.Fatalf("Write = %d, %v", n, err)
	}
	buf := make([]byte, 30)
	if n, err := p.cli.Read(buf); n != 30 || err != nil || !bytes.Equal(buf, msg[:30]) {
		t.Fatalf("Read(30) = %d, %v", n, err)
	}
	buf = make([]byte, 1000)
	if n, err := p.cli.Read(buf); n != 70 || err != nil || !bytes.Equal(buf[:n], msg[30:]) {
		t.Fatalf("Read(1000) = %d, %v, want the 70 bytes left", n, err)
	}
}

// The server's write ring of order 11 is the second half of the page;
// bytes past its end wrap to its start, and the indexes in the page are
// the byte counts.
func TestRingPlacementAndWrap(t *testing.T) {
	p := newMemPair(t, 10, 11)
	first := randomBytes(1, 2000)
	second := randomBytes(2, 100)
	if _, err := p.srv.Write(first); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(p.page[2048:2048+2000], first) {
		t.Fatal("the server's bytes are not at offset 2048 of the page")
	}
	if _, err := drain(p.cli, 2000, 0, 4096); err != nil {
		t.Fatal(err)
	}
	if _, err := p.srv.Write(second); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(p.page[2048+2000:], second[:48]) || !bytes.Equal(p.page[2048:2048+52], second[48:]) {
		t.Fatal("bytes past the ring's end did not wrap to its start")
	}
	got, err := drain(p.cli, 100, 0, 4096)
	if err != nil || !bytes.Equal(got, second) {
		t.Fatalf("read across the wrap: %v", err)
	}
	if cons, prod := *u32(p.page, offRight), *u32(p.page, offRight+4); cons != 2100 || prod != 2100 {
		t.Fatalf("right ring indexes cons %d prod %d, want 2100 2100", cons, prod)
	}
}

// Indexes run through 2^32 and wrap there.
func TestIndexWrap(t *testing.T) {
	p := newMemPair(t, 10, 11)
	// Both sides agree on indexes just below 2^32 before any data.
	start := uint32(1<<32 - 700)
	*u32(p.page, offLeft), *u32(p.page, offLeft+4) = start, start
	p.srv.rdCons, p.cli.wrProd = start, start
	msg := randomBytes(3, 1000)
	done := make(chan error, 1)
	go func() { done <- pump(p.cli, msg, 1, 300) }()
	got, err := drain(p.srv, len(msg), 2, 300)
	if err != nil || !bytes.Equal(got, msg) {
		t.Fatalf("across the index wrap: %v, equal %v", err, bytes.Equal(got, msg))
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if prod := *u32(p.page, offLeft+4); prod != start+1000 {
		t.Fatalf("left prod %d, want %d", prod, start+1000)
	}
}

// Events flow only when the other side asked: a reader that never waits
// and a writer that never fills the ring need none, after the one the
// client's first write owes the server (which asked for it at setup).
func TestNotifyOnlyWhenAsked(t *testing.T) {
	p := newMemPair(t, 12, 12)
	before := p.cliKicks.Load()
	for range 100 {
		if _, err := p.cli.Write([]byte("0123456789")); err != nil {
			t.Fatal(err)
		}
	}
	if k := p.cliKicks.Load() - before; k != 1 {
		t.Fatalf("100 writes to a server that was not waiting sent %d events, want 1 (the one asked for at setup)", k)
	}
	beforeSrv := p.srvKicks.Load()
	if _, err := drain(p.srv, 1000, 0, 64); err != nil {
		t.Fatal(err)
	}
	if k := p.srvKicks.Load() - beforeSrv; k != 0 {
		t.Fatalf("reading from a writer that was not waiting sent %d events, want 0", k)
	}
	// A waiting reader gets exactly one event for the write that ends its
	// wait.
	got := make(chan error, 1)
	go func() {
		_, err := drain(p.srv, 5, 0, 5)
		got <- err
	}()
	waitFor(t, func() bool { return atomic.LoadUint32(p.srv.flags)&(notifyWrite<<shiftCliNotify) != 0 })
	before = p.cliKicks.Load()
	if _, err := p.cli.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	if err := <-got; err != nil {
		t.Fatal(err)
	}
	if k := p.cliKicks.Load() - before; k != 1 {
		t.Fatalf("a write to a waiting reader sent %d events, want 1", k)
	}
}

// waitFor polls cond for up to 5 seconds.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	for start := time.Now(); !cond(); {
		if time.Since(start) > 5*time.Second {
			t.Fatal("condition not met in 5s")
		}
		time.Sleep(time.Millisecond)
	}
}

// A writer faster than its reader waits for room, and gets it.
func TestWriterWaitsForRoom(t *testing.T) {
	p := newMemPair(t, 10, 11)
	msg := randomBytes(9, 10000)
	done := make(chan error, 1)
	go func() { _, err := p.srv.Write(msg); done <- err }()
	waitFor(t, func() bool { return atomic.LoadUint32(p.srv.flags)&(notifyRead<<shiftCliNotify) != 0 })
	select {
	case err := <-done:
		t.Fatalf("Write of 10000 bytes into a 2048-byte ring returned %v before anything was read", err)
	default:
	}
	got, err := drain(p.cli, len(msg), 0, 700)
	if err != nil || !bytes.Equal(got, msg) {
		t.Fatalf("drain: %v", err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// The peer's close: what it wrote before is read, then io.EOF (again and
// again); writes fail with ErrPeerClosed.
func TestPeerClose(t *testing.T) {
	p := newMemPair(t, 10, 11)
	if _, err := p.cli.Write([]byte("last words")); err != nil {
		t.Fatal(err)
	}
	if err := p.cli.Close(); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64)
	if n, err := p.srv.Read(buf); err != nil || string(buf[:n]) != "last words" {
		t.Fatalf("Read after the peer closed = %q, %v; want its last words", buf[:n], err)
	}
	for range 2 {
		if n, err := p.srv.Read(buf); n != 0 || err != io.EOF {
			t.Fatalf("Read at the end = %d, %v; want 0, io.EOF", n, err)
		}
	}
	if _, err := p.srv.Write([]byte("x")); !errors.Is(err, ErrPeerClosed) {
		t.Fatalf("Write to a closed peer: %v, want ErrPeerClosed", err)
	}
	if err := p.cli.Close(); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("second Close: %v, want net.ErrClosed", err)
	}
}

// A waiting Read ends with io.EOF when the peer closes, and with
// net.ErrClosed when its own side is closed.
func TestCloseWakesWaiters(t *testing.T) {
	p := newMemPair(t, 10, 11)
	eof := make(chan error, 1)
	go func() { _, err := p.srv.Read(make([]byte, 1)); eof <- err }()
	closed := make(chan error, 1)
	p2 := newMemPair(t, 10, 11)
	go func() { _, err := p2.srv.Read(make([]byte, 1)); closed <- err }()
	time.Sleep(20 * time.Millisecond)
	p.cli.Close()
	p2.srv.Close()
	for _, c := range []struct {
		ch   chan error
		want error
	}{{eof, io.EOF}, {closed, net.ErrClosed}} {
		select {
		case err := <-c.ch:
			if !errors.Is(err, c.want) {
				t.Errorf("waiting Read: %v, want %v", err, c.want)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("waiting Read did not end (want %v)", c.want)
		}
	}
	// A writer blocked on a full ring ends too when the peer closes.
	p3 := newMemPair(t, 10, 11)
	wrote := make(chan error, 1)
	go func() { _, err := p3.srv.Write(make([]byte, 5000)); wrote <- err }()
	waitFor(t, func() bool { return atomic.LoadUint32(p3.srv.flags)&(notifyRead<<shiftCliNotify) != 0 })
	p3.cli.Close()
	select {
	case err := <-wrote:
		if !errors.Is(err, ErrPeerClosed) {
			t.Fatalf("blocked Write after the peer closed: %v, want ErrPeerClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("blocked Write did not end when the peer closed")
	}
}

// Deadlines end waits with a timeout error, pending ones included, and can
// be lifted.
func TestDeadlines(t *testing.T) {
	p := newMemPair(t, 10, 11)
	p.srv.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	start := time.Now()
	_, err := p.srv.Read(make([]byte, 1))
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() || !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("Read past the deadline: %v, want a timeout", err)
	}
	if d := time.Since(start); d < 40*time.Millisecond {
		t.Fatalf("Read timed out after %v, before its deadline", d)
	}
	// Past deadline: fails at once even with data there.
	p.cli.Write([]byte("x"))
	if _, err := p.srv.Read(make([]byte, 1)); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("Read with a past deadline: %v", err)
	}
	p.srv.SetReadDeadline(time.Time{})
	if n, err := p.srv.Read(make([]byte, 1)); n != 1 || err != nil {
		t.Fatalf("Read after lifting the deadline = %d, %v", n, err)
	}
	// A deadline set while Read waits applies to it.
	got := make(chan error, 1)
	go func() { _, err := p.srv.Read(make([]byte, 1)); got <- err }()
	time.Sleep(20 * time.Millisecond)
	p.srv.SetDeadline(time.Now())
	select {
	case err := <-got:
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("Read whose deadline was moved: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a new deadline did not end the waiting Read")
	}
	// Write deadline on a full ring: how much went in is reported.
	p.cli.SetWriteDeadline(time.Now().Add(30 * time.Millisecond))
	n, err := p.cli.Write(make([]byte, 3000))
	if n != 1024 || !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("Write into a 1024-byte ring past the deadline = %d, %v; want 1024, timeout", n, err)
	}
}

// ReadContext and WriteContext end their waits with the context.
func TestContexts(t *testing.T) {
	p := newMemPair(t, 10, 11)
	ctx, cancel := context.WithCancel(context.Background())
	got := make(chan error, 1)
	go func() { _, err := p.cli.ReadContext(ctx, make([]byte, 1)); got <- err }()
	time.Sleep(20 * time.Millisecond)
	cancel()
	if err := <-got; !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled ReadContext: %v", err)
	}
	ctx, cancel = context.WithTimeout(context.Background(), 30*time.Millisecond)
	defer cancel()
	n, err := p.cli.WriteContext(ctx, make([]byte, 1500))
	if n != 1024 || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("WriteContext into a full ring = %d, %v", n, err)
	}
	// The channel still works.
	if _, err := drain(p.srv, 1024, 0, 2048); err != nil {
		t.Fatal(err)
	}
}

// A peer whose write index runs more than a ring ahead breaks the
// protocol: the read fails, the channel is closed (the peer sees us gone)
// and stays failed.
func TestProtocolErrorOnRead(t *testing.T) {
	p := newMemPair(t, 10, 11)
	atomic.StoreUint32(u32(p.page, offLeft+4), 1025) // left prod: 1025 bytes in a 1024-byte ring
	_, err := p.srv.Read(make([]byte, 10))
	if !errors.Is(err, ErrProtocol) {
		t.Fatalf("Read with a bad peer index: %v, want ErrProtocol", err)
	}
	if p.srv.flag(shiftSrvLive) != liveGone {
		t.Fatal("the server did not mark itself gone after a protocol error")
	}
	if _, err := p.srv.Write([]byte("x")); !errors.Is(err, ErrProtocol) {
		t.Fatalf("Write after a protocol error: %v, want ErrProtocol", err)
	}
	if _, err := p.cli.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("the peer reads %v, want io.EOF", err)
	}
}

// A peer whose read index is ahead of what we wrote breaks the protocol.
func TestProtocolErrorOnWrite(t *testing.T) {
	p := newMemPair(t, 10, 11)
	atomic.StoreUint32(u32(p.page, offRight), 5) // right cons past prod 0
	if _, err := p.srv.Write([]byte("x")); !errors.Is(err, ErrProtocol) {
		t.Fatalf("Write with a bad peer index: %v, want ErrProtocol", err)
	}
	if _, err := p.srv.Read(make([]byte, 1)); !errors.Is(err, ErrProtocol) {
		t.Fatalf("Read after a protocol error: %v, want ErrProtocol", err)
	}
}

// A side never reads its own index back from the page: a peer that
// scribbles on it changes nothing.
func TestOwnIndexesNotTrusted(t *testing.T) {
	p := newMemPair(t, 10, 11)
	if _, err := p.cli.Write([]byte("abc")); err != nil {
		t.Fatal(err)
	}
	atomic.StoreUint32(u32(p.page, offLeft), 0xdead) // the server's read index
	buf := make([]byte, 8)
	if n, err := p.srv.Read(buf); err != nil || string(buf[:n]) != "abc" {
		t.Fatalf("Read after the peer moved our index = %q, %v", buf[:n], err)
	}
}

// The server waits for its client; the client does not wait.
func TestWaitConnected(t *testing.T) {
	p := newMemPair(t, 10, 11)
	if err := p.cli.WaitConnected(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := p.srv.WaitConnected(context.Background()); err != nil {
		t.Fatalf("WaitConnected on a connected channel: %v", err)
	}
	// A fresh channel whose client has not announced itself yet.
	page := alignedBytes(pageSize)
	writeHeader(page, layout{10, 11}, nil)
	var srv, cli *Conn
	srv = newConn(Addr{}, Addr{}, endpoint{server: true, page: page, left: page[1024:2048], right: page[2048:], kick: func() error { cli.wake(); return nil }})
	cli = newConn(Addr{}, Addr{}, endpoint{page: page, left: page[1024:2048], right: page[2048:], kick: func() error { srv.wake(); return nil }})
	defer srv.Close()
	defer cli.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
	defer cancel()
	if err := srv.WaitConnected(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("WaitConnected with no client: %v, want a timeout", err)
	}
	got := make(chan error, 1)
	go func() { got <- srv.WaitConnected(context.Background()) }()
	time.Sleep(10 * time.Millisecond)
	cli.announce()
	select {
	case err := <-got:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("WaitConnected did not see the client connect")
	}
}

// Close during a transfer: every operation ends, nothing touches the
// memory afterwards (the race detector and the released flag would see).
func TestCloseDuringTransfer(t *testing.T) {
	for range 20 {
		p := newMemPair(t, 10, 11)
		var wg sync.WaitGroup
		wg.Add(2)
		go func() { defer wg.Done(); pump(p.cli, make([]byte, 1<<20), 1, 4096) }()
		go func() { defer wg.Done(); io.Copy(io.Discard, p.srv) }()
		time.Sleep(time.Millisecond)
		p.srv.Close()
		p.cli.Close()
		wg.Wait()
	}
}

func TestLayoutCheck(t *testing.T) {
	for _, c := range []struct {
		l  layout
		ok bool
	}{
		{layout{10, 11}, true}, {layout{11, 10}, true}, {layout{12, 12}, true},
		{layout{20, 20}, true}, {layout{11, 20}, true}, {layout{10, 19}, true},
		{layout{10, 10}, false}, {layout{11, 11}, false}, {layout{9, 12}, false},
		{layout{12, 21}, false}, {layout{0, 0}, false},
		{layout{10, 20}, false}, // 256 grants do not fit before the ring at 1024
	} {
		if err := c.l.check(); (err == nil) != c.ok {
			t.Errorf("layout %v: check = %v, want ok %v", c.l, err, c.ok)
		}
	}
}

func TestReadHeader(t *testing.T) {
	page := alignedBytes(pageSize)
	grants := []uint32{11, 12, 13}
	writeHeader(page, layout{13, 12}, grants)
	l, got, err := readHeader(page)
	if err != nil || l != (layout{13, 12}) || len(got) != 3 || got[0] != 11 || got[2] != 13 {
		t.Fatalf("readHeader = %v %v %v", l, got, err)
	}
	page[offLeftOrder] = 9
	if _, _, err := readHeader(page); err == nil {
		t.Fatal("readHeader accepted order 9")
	}
}
