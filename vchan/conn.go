// Package vchan is Xen's vchan, the ring protocol of libxenvchan, in pure
// Go: a byte stream between two domains through shared memory and an event
// channel, interoperable with Xen's C library in either role.
//
// A server publishes a channel for one client domain on a port number; the
// client maps it. The server grants one shared page holding two rings'
// indexes (and the rings themselves when they are small, orders 10 and
// 11) plus, for larger rings, extra granted pages listed in the shared
// page; it publishes the page's grant reference and an event channel under
// /local/domain/<server>/data/vchan/<client>/<port>/{ring-ref,event-channel}
// in xenstore, readable by the client. Each side writes one ring and reads
// the other; each has a live flag in the page, which the kernel also
// clears when the side's mapping goes away, so a crashed peer reads as
// closed. A side about to wait sets a bit in the other's notify byte, and
// a side that moved an index sends an event only if asked: a busy stream
// costs few events.
//
// The peer is not trusted: indexes read from the page are checked against
// the ring size (a violation is a protocol error, which ends the channel),
// the layout is read once, and no length the peer controls sizes an
// allocation or a copy beyond the rings.
//
// A Conn is an io.ReadWriteCloser and a net.Conn: reads return what is
// there (at least one byte), writes return when all is written, deadlines
// and ReadContext/WriteContext bound the waits.
package vchan

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"
)

// Errors a Conn's operations wrap (in a *net.OpError).
var (
	// ErrPeerClosed: a write found the peer gone.
	ErrPeerClosed = errors.New("vchan: peer closed the channel")
	// ErrProtocol: the peer broke the protocol; the channel is closed.
	ErrProtocol = errors.New("vchan: protocol error")
)

// Addr is one end of a channel: a domain and the channel's port.
type Addr struct {
	Domid uint32
	Port  int
}

// Network returns "vchan".
func (a Addr) Network() string { return "vchan" }

// String returns "domid:port".
func (a Addr) String() string {
	return strconv.FormatUint(uint64(a.Domid), 10) + ":" + strconv.Itoa(a.Port)
}

// ring is one direction's ring: its bytes and its two indexes in the
// shared page.
type ring struct {
	buf        []byte // 2^order bytes
	prod, cons *uint32
}

func (r ring) size() uint32 { return uint32(len(r.buf)) }

// endpoint is what a Conn runs over: the shared page and the rings in
// shared memory, and the peer's doorbell. Events from the peer are given
// to the Conn's wake method; release frees the memory and the rest when
// the Conn is closed (nil: nothing to free).
type endpoint struct {
	server      bool
	page        []byte // the shared page, pageSize bytes, 4-byte aligned
	left, right []byte // the rings: client to server, server to client
	kick        func() error
	release     func() error
	// published says, for a server, the grant and event channel its
	// keys name (for errors: a client that never came can be looked
	// for in Xen's tables).
	published string
}

// Conn is one end of a vchan. Read and Write may be called concurrently
// with each other and with Close; concurrent Reads (or Writes) take turns.
type Conn struct {
	local, remote Addr
	server        bool
	published     string

	flags     *uint32 // the four flag bytes
	myLive    uint    // shift of our live byte
	peerLive  uint    // shift of the peer's
	myNotify  uint    // shift of the byte the peer sets to ask us
	askNotify uint    // shift of the byte we set to ask the peer

	rd, wr ring
	kick   func() error

	rdCons uint32 // our copy of our read index (readMu)
	wrProd uint32 // our copy of our write index (writeMu)

	readMu, writeMu sync.Mutex
	// mem guards the shared memory's lifetime: operations hold it for
	// reading, Close takes it to unmap.
	mem     sync.RWMutex
	ev      waker
	closed  atomic.Bool
	closing chan struct{}
	broken  atomic.Pointer[error] // the protocol or event error that ended the channel

	rdDeadline, wrDeadline atomic.Int64 // unix nanoseconds; 0: none

	closeOnce sync.Once
	closeErr  error
	release   func() error
}

// u32 returns a pointer to the u32 at off in b, checking it is in bounds
// and aligned (so that atomic operations on it are valid).
func u32(b []byte, off int) *uint32 {
	_ = b[off+3]
	p := unsafe.Pointer(&b[off])
	if uintptr(p)%4 != 0 {
		panic("vchan: shared page is not 4-byte aligned")
	}
	return (*uint32)(p)
}

// newConn makes a Conn of the given addresses over ep. The page must
// already be laid out (writeHeader for a server, the client having read it
// with readHeader), and the Conn gets the peer's events through its wake
// method.
func newConn(local, remote Addr, ep endpoint) *Conn {
	c := &Conn{
		local:     local,
		remote:    remote,
		server:    ep.server,
		published: ep.published,
		flags:     u32(ep.page, offFlags),
		kick:      ep.kick,
		closing:   make(chan struct{}),
		release:   ep.release,
	}
	left := ring{buf: ep.left, cons: u32(ep.page, offLeft), prod: u32(ep.page, offLeft+4)}
	right := ring{buf: ep.right, cons: u32(ep.page, offRight), prod: u32(ep.page, offRight+4)}
	if ep.server {
		c.rd, c.wr = left, right
		c.myLive, c.peerLive = shiftSrvLive, shiftCliLive
		c.myNotify, c.askNotify = shiftSrvNotify, shiftCliNotify
	} else {
		c.rd, c.wr = right, left
		c.myLive, c.peerLive = shiftCliLive, shiftSrvLive
		c.myNotify, c.askNotify = shiftCliNotify, shiftSrvNotify
	}
	// Our own indexes are ours: read once (a client may take over a
	// channel mid-stream), never trusted from the page again.
	c.rdCons = atomic.LoadUint32(c.rd.cons)
	c.wrProd = atomic.LoadUint32(c.wr.prod)
	return c
}

// LocalAddr returns this end's domain and port.
func (c *Conn) LocalAddr() net.Addr { return c.local }

// RemoteAddr returns the peer's domain and port.
func (c *Conn) RemoteAddr() net.Addr { return c.remote }

func (c *Conn) opError(op string, err error) error {
	return &net.OpError{Op: op, Net: "vchan", Source: c.local, Addr: c.remote, Err: err}
}

// flag returns the byte at shift in the flags word.
func (c *Conn) flag(shift uint) uint8 { return uint8(atomic.LoadUint32(c.flags) >> shift) }

// setFlag stores v in the byte at shift, leaving the other three bytes
// (which the peer changes) alone.
func (c *Conn) setFlag(shift uint, v uint8) {
	for {
		old := atomic.LoadUint32(c.flags)
		nw := old&^(0xff<<shift) | uint32(v)<<shift
		if atomic.CompareAndSwapUint32(c.flags, old, nw) {
			return
		}
	}
}

// peerUp reports whether the peer has not closed (a server's client that
// has not connected yet counts as up).
func (c *Conn) peerUp() bool { return c.flag(c.peerLive) != liveGone }

// ask asks the peer to send an event when it does what bit says.
func (c *Conn) ask(bit uint32) {
	if atomic.LoadUint32(c.flags)&(bit<<c.askNotify) == 0 {
		atomic.OrUint32(c.flags, bit<<c.askNotify)
	}
}

// tell sends the peer an event if it asked for one about bit, clearing its
// request.
func (c *Conn) tell(bit uint32) error {
	mask := bit << c.myNotify
	if atomic.LoadUint32(c.flags)&mask == 0 {
		return nil
	}
	if atomic.AndUint32(c.flags, ^mask)&mask == 0 {
		return nil
	}
	if err := c.kick(); err != nil {
		return c.fail(fmt.Errorf("notify the peer: %w", err))
	}
	return nil
}

// fail ends the channel because of err (the first such error sticks): the
// peer sees us gone, local waiters wake up. It returns the sticky error.
// The caller holds c.mem for reading.
func (c *Conn) fail(err error) error {
	if c.broken.CompareAndSwap(nil, &err) {
		c.setFlag(c.myLive, liveGone)
		c.kick() // best effort: the peer may be gone too
		c.ev.wake()
	}
	return *c.broken.Load()
}

// usable returns the error an operation must fail with, if any.
func (c *Conn) usable(op string, dl *atomic.Int64) error {
	if c.closed.Load() {
		return c.opError(op, net.ErrClosed)
	}
	if e := c.broken.Load(); e != nil {
		return c.opError(op, *e)
	}
	if d := dl.Load(); d != 0 && time.Now().UnixNano() >= d {
		return c.opError(op, os.ErrDeadlineExceeded)
	}
	return nil
}

// Read reads what the peer wrote, at least one byte, waiting for it if
// need be (up to the read deadline). It returns io.EOF once the peer has
// closed and everything it wrote has been read.
func (c *Conn) Read(p []byte) (int, error) { return c.ReadContext(context.Background(), p) }

// ReadContext is Read, its wait also bounded by ctx.
func (c *Conn) ReadContext(ctx context.Context, p []byte) (int, error) {
	c.readMu.Lock()
	defer c.readMu.Unlock()
	c.mem.RLock()
	defer c.mem.RUnlock()
	for {
		if err := c.usable("read", &c.rdDeadline); err != nil {
			return 0, err
		}
		if len(p) == 0 {
			return 0, nil
		}
		up := c.peerUp() // before looking at the data: what it wrote before closing counts
		n, err := c.readSome(p)
		if n > 0 || err != nil {
			return n, err
		}
		if !up {
			return 0, io.EOF
		}
		woken := c.ev.wait()
		c.ask(notifyWrite)
		// Look again: the peer may have written before seeing our request.
		if atomic.LoadUint32(c.rd.prod) != c.rdCons || !c.peerUp() {
			continue
		}
		if err := c.sleep(ctx, woken, &c.rdDeadline, "read"); err != nil {
			return 0, err
		}
	}
}

// readSome copies what is in the read ring into p, without waiting.
func (c *Conn) readSome(p []byte) (int, error) {
	prod := atomic.LoadUint32(c.rd.prod)
	avail := prod - c.rdCons
	if avail == 0 {
		return 0, nil
	}
	size := c.rd.size()
	if avail > size {
		return 0, c.opError("read", c.fail(fmt.Errorf("%w: the peer's write index is %d bytes past our read index, in a %d-byte ring", ErrProtocol, avail, size)))
	}
	n := min(len(p), int(avail))
	off := int(c.rdCons & (size - 1))
	k := copy(p[:n], c.rd.buf[off:])
	copy(p[k:n], c.rd.buf)
	c.rdCons += uint32(n)
	atomic.StoreUint32(c.rd.cons, c.rdCons)
	if err := c.tell(notifyRead); err != nil {
		return n, c.opError("read", err)
	}
	return n, nil
}

// Write writes all of p, waiting for room in the ring as need be (up to
// the write deadline). It fails with ErrPeerClosed once the peer has
// closed.
func (c *Conn) Write(p []byte) (int, error) { return c.WriteContext(context.Background(), p) }

// WriteContext is Write, its waits also bounded by ctx. On an error it
// returns how many bytes went into the ring.
func (c *Conn) WriteContext(ctx context.Context, p []byte) (int, error) {
	c.writeMu.Lock()
	defer c.writeMu.Unlock()
	c.mem.RLock()
	defer c.mem.RUnlock()
	done := 0
	for {
		if err := c.usable("write", &c.wrDeadline); err != nil {
			return done, err
		}
		if done == len(p) {
			return done, nil
		}
		if !c.peerUp() {
			return done, c.opError("write", ErrPeerClosed)
		}
		n, err := c.writeSome(p[done:])
		done += n
		if err != nil {
			return done, err
		}
		if n > 0 {
			continue
		}
		woken := c.ev.wait()
		c.ask(notifyRead)
		// Look again: the peer may have read before seeing our request.
		if atomic.LoadUint32(c.wr.cons) != c.wrProd-c.wr.size() || !c.peerUp() {
			continue
		}
		if err := c.sleep(ctx, woken, &c.wrDeadline, "write"); err != nil {
			return done, err
		}
	}
}

// writeSome copies as much of p as fits into the write ring, without
// waiting.
func (c *Conn) writeSome(p []byte) (int, error) {
	cons := atomic.LoadUint32(c.wr.cons)
	used := c.wrProd - cons
	size := c.wr.size()
	if used > size {
		return 0, c.opError("write", c.fail(fmt.Errorf("%w: the peer's read index is %d bytes behind our write index, in a %d-byte ring", ErrProtocol, used, size)))
	}
	if used == size {
		return 0, nil
	}
	n := min(len(p), int(size-used))
	off := int(c.wrProd & (size - 1))
	k := copy(c.wr.buf[off:], p[:n])
	copy(c.wr.buf, p[k:n])
	c.wrProd += uint32(n)
	atomic.StoreUint32(c.wr.prod, c.wrProd)
	if err := c.tell(notifyWrite); err != nil {
		return n, c.opError("write", err)
	}
	return n, nil
}

// sleep waits for an event (woken), the deadline, ctx or Close.
func (c *Conn) sleep(ctx context.Context, woken <-chan struct{}, dl *atomic.Int64, op string) error {
	var timeout <-chan time.Time
	if d := dl.Load(); d != 0 {
		left := time.Until(time.Unix(0, d))
		if left <= 0 {
			return c.opError(op, os.ErrDeadlineExceeded)
		}
		t := time.NewTimer(left)
		defer t.Stop()
		timeout = t.C
	}
	select {
	case <-woken:
		return nil
	case <-c.closing:
		return c.opError(op, net.ErrClosed)
	case <-ctx.Done():
		return c.opError(op, ctx.Err())
	case <-timeout:
		return c.opError(op, os.ErrDeadlineExceeded)
	}
}

// WaitConnected waits until a client has connected to this server's
// channel (or connected and gone again), or ctx ends. For a client it
// returns at once.
func (c *Conn) WaitConnected(ctx context.Context) error {
	if !c.server {
		return nil
	}
	c.mem.RLock()
	defer c.mem.RUnlock()
	var never atomic.Int64
	op := "wait for client"
	if c.published != "" {
		op += " (" + c.published + ")"
	}
	for {
		if err := c.usable(op, &never); err != nil {
			return err
		}
		woken := c.ev.wait()
		if c.flag(c.peerLive) != liveWaiting {
			return nil
		}
		if err := c.sleep(ctx, woken, &never, op); err != nil {
			return err
		}
	}
}

// SetDeadline sets the read and write deadlines.
func (c *Conn) SetDeadline(t time.Time) error {
	c.rdDeadline.Store(unixNano(t))
	c.wrDeadline.Store(unixNano(t))
	c.ev.wake() // waiting operations look at the new deadline
	return nil
}

// SetReadDeadline sets the time after which reads fail with an error
// wrapping os.ErrDeadlineExceeded (a zero t: never), pending reads
// included.
func (c *Conn) SetReadDeadline(t time.Time) error {
	c.rdDeadline.Store(unixNano(t))
	c.ev.wake()
	return nil
}

// SetWriteDeadline sets the time after which writes fail with an error
// wrapping os.ErrDeadlineExceeded (a zero t: never), pending writes
// included.
func (c *Conn) SetWriteDeadline(t time.Time) error {
	c.wrDeadline.Store(unixNano(t))
	c.ev.wake()
	return nil
}

func unixNano(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return max(t.UnixNano(), 1)
}

// announce is a client's last step of connecting: it marks itself live,
// asks the server to tell it when it writes, and tells the server.
func (c *Conn) announce() error {
	c.setFlag(c.myLive, liveUp)
	c.ask(notifyWrite)
	return c.kick()
}

// wake is called for each event from the peer.
func (c *Conn) wake() { c.ev.wake() }

// eventError ends the channel when its events can no longer be received.
func (c *Conn) eventError(err error) {
	if c.closed.Load() {
		return
	}
	err = fmt.Errorf("receive events: %w", err)
	if c.broken.CompareAndSwap(nil, &err) {
		c.ev.wake()
	}
}

// Close ends the channel: the peer sees it closed (and reads what we wrote
// before), waiting operations return net.ErrClosed, and the shared memory,
// grants, event channel and (for a server) xenstore keys are released.
func (c *Conn) Close() error {
	first := false
	c.closeOnce.Do(func() {
		first = true
		c.closed.Store(true)
		close(c.closing)
		c.mem.Lock()
		defer c.mem.Unlock()
		c.setFlag(c.myLive, liveGone)
		var errs []error
		if err := c.kick(); err != nil {
			errs = append(errs, fmt.Errorf("notify the peer: %w", err))
		}
		if c.release != nil {
			if err := c.release(); err != nil {
				errs = append(errs, err)
			}
		}
		if err := errors.Join(errs...); err != nil {
			c.closeErr = c.opError("close", err)
		}
	})
	if !first {
		return c.opError("close", net.ErrClosed)
	}
	return c.closeErr
}

// waker lets goroutines wait for the next event: wait returns a channel
// that the next wake closes.
type waker struct {
	mu sync.Mutex
	ch chan struct{}
}

func (w *waker) wait() <-chan struct{} {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.ch == nil {
		w.ch = make(chan struct{})
	}
	return w.ch
}

func (w *waker) wake() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.ch != nil {
		close(w.ch)
		w.ch = nil
	}
}

var _ net.Conn = (*Conn)(nil)
