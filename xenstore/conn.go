package xenstore

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"
)

// result is what a request gets back: the reply message or why none came.
type result struct {
	msg message
	err error
}

// request is one message to send, and then its result.
type request struct {
	t     msgType
	tx    uint32
	path  string // for error messages
	parts [][]byte
	id    uint32
	res   result // valid once done.ch is closed
	done  *group
}

// group is the requests sent together by one send: the caller is woken
// once, when the last reply has come, not once per reply.
type group struct {
	left atomic.Int32
	ch   chan struct{}
}

func (g *group) complete() {
	if g.left.Add(-1) == 0 {
		close(g.ch)
	}
}

// conn is one connection to the daemon: a writer side shared by all callers
// (requests queue up and are written together) and a reader goroutine that
// hands each reply to the request with its req_id and each watch event to
// the client. A conn that breaks stays broken; the Client makes a new one.
type conn struct {
	rwc      io.ReadWriteCloser
	perWrite bool // the xenbus device: one message per write, one request in flight
	onEvent  func(path, token string)
	onLost   func(*conn)

	mu       sync.Mutex
	nextID   uint32
	pending  map[uint32]*request
	queue    []byte // encoded requests not yet written (sockets only)
	spare    []byte
	flushing bool
	err      error         // why the conn broke, nil while it works
	done     chan struct{} // closed when the conn breaks

	// inFlight (perWrite only) holds a token while a request is
	// unanswered; flightID is that request's req_id. The token goes
	// back when its reply comes (even if no one waits for it any
	// more) or the conn breaks.
	inFlight chan struct{}
	flightID uint32
	flying   bool
}

func newConn(rwc io.ReadWriteCloser, perWrite bool, onEvent func(path, token string), onLost func(*conn)) *conn {
	c := &conn{
		rwc:      rwc,
		perWrite: perWrite,
		onEvent:  onEvent,
		onLost:   onLost,
		nextID:   1,
		pending:  make(map[uint32]*request),
		done:     make(chan struct{}),
		inFlight: make(chan struct{}, 1),
	}
	go c.readLoop()
	return c
}

// broken returns the error the conn broke with, or nil.
func (c *conn) broken() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// send queues the requests and makes sure they get written: when no other
// caller is writing, this one writes everything queued (its own requests and
// any others that arrive meanwhile) in one write; over the xenbus device
// each request goes alone (sendEach). On success every request will get
// its result; wait for them with wait.
//
// A write that cannot go through (the daemon stopped reading and the
// socket buffer is full) is abandoned when ctx ends; the connection is then
// broken, as part of a message may have gone out.
func (c *conn) send(ctx context.Context, reqs []*request) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	g := &group{ch: make(chan struct{})}
	g.left.Store(int32(len(reqs)))
	if c.perWrite {
		return c.sendEach(ctx, reqs, g)
	}
	c.mu.Lock()
	if c.err != nil {
		err := c.err
		c.mu.Unlock()
		return err
	}
	for _, r := range reqs {
		c.register(r, g)
		c.queue = appendMessage(c.queue, r.t, r.id, r.tx, r.parts...)
	}
	if c.flushing {
		c.mu.Unlock()
		return nil
	}
	c.flushing = true
	for len(c.queue) > 0 && c.err == nil {
		buf := c.queue
		c.queue = c.spare[:0]
		c.spare = nil
		c.mu.Unlock()
		err := c.write(ctx, buf)
		c.mu.Lock()
		if cap(buf) <= 64<<10 {
			c.spare = buf[:0]
		}
		if err != nil {
			c.failLocked(fmt.Errorf("%w: write: %v", ErrConnectionLost, err))
		}
	}
	c.flushing = false
	c.mu.Unlock()
	return nil
}

// sendEach sends the requests one by one over the xenbus device, each
// once the one before has been answered (see Config.OneMessagePerWrite).
// A request not sent when ctx ends or the conn breaks gets that error as
// its result.
func (c *conn) sendEach(ctx context.Context, reqs []*request, g *group) error {
	for i, r := range reqs {
		select {
		case c.inFlight <- struct{}{}:
		case <-ctx.Done():
			c.abandon(reqs[i:], g, ctx.Err())
			return ctx.Err()
		case <-c.done:
			err := c.broken()
			c.abandon(reqs[i:], g, err)
			return err
		}
		c.mu.Lock()
		if c.err != nil {
			err := c.err
			<-c.inFlight
			c.mu.Unlock()
			c.abandon(reqs[i:], g, err)
			return err
		}
		c.register(r, g)
		c.flightID, c.flying = r.id, true
		msg := appendMessage(c.spare[:0], r.t, r.id, r.tx, r.parts...)
		c.spare = nil
		c.mu.Unlock()
		err := c.write(ctx, msg)
		c.mu.Lock()
		if cap(msg) <= 64<<10 {
			c.spare = msg[:0]
		}
		if err != nil {
			c.failLocked(fmt.Errorf("%w: write: %v", ErrConnectionLost, err))
			err = c.err
			c.mu.Unlock()
			c.abandon(reqs[i+1:], g, err)
			return err
		}
		c.mu.Unlock()
	}
	return nil
}

// register gives r the next req_id and makes it pending, part of group
// g (c.mu held).
func (c *conn) register(r *request, g *group) {
	r.id = c.nextID
	c.nextID++
	if c.nextID == 0 {
		c.nextID = 1
	}
	r.done = g
	c.pending[r.id] = r
}

// abandon gives requests that were never sent err as their result.
func (c *conn) abandon(reqs []*request, g *group, err error) {
	for _, r := range reqs {
		r.done = g
		r.res = result{err: err}
		g.complete()
	}
}

// land returns the in-flight token if id is the request holding it
// (c.mu held).
func (c *conn) land(id uint32) {
	if c.flying && c.flightID == id {
		c.flying = false
		<-c.inFlight
	}
}

// deadliner is a transport whose writes can be interrupted.
type deadliner interface {
	SetWriteDeadline(t time.Time) error
}

func (c *conn) write(ctx context.Context, buf []byte) error {
	if d, ok := c.rwc.(deadliner); ok && ctx.Done() != nil {
		var mu sync.Mutex
		written := false
		stop := context.AfterFunc(ctx, func() {
			mu.Lock()
			defer mu.Unlock()
			if !written {
				d.SetWriteDeadline(time.Unix(1, 0)) // in the past: the write returns
			}
		})
		defer func() {
			if !stop() {
				// The deadline may have been set: clear it for the
				// next write.
				mu.Lock()
				written = true
				d.SetWriteDeadline(time.Time{})
				mu.Unlock()
			}
		}()
	}
	_, err := c.rwc.Write(buf)
	return err
}

// wait waits until every request sent together (by one send) has its
// result. When ctx ends first, it returns ctx.Err() and replies that come
// later are discarded.
func (c *conn) wait(ctx context.Context, reqs []*request) error {
	if len(reqs) == 0 {
		return nil
	}
	g := reqs[0].done
	select {
	case <-g.ch:
		return nil
	case <-ctx.Done():
	}
	c.mu.Lock()
	for _, r := range reqs {
		if c.pending[r.id] == r {
			delete(c.pending, r.id)
		}
	}
	c.mu.Unlock()
	// The replies may have come meanwhile; prefer them.
	select {
	case <-g.ch:
		return nil
	default:
	}
	return ctx.Err()
}

// roundTrip sends one request and waits for its reply. A reply of type
// XS_ERROR becomes the daemon's error.
func (c *conn) roundTrip(ctx context.Context, r *request) ([]byte, error) {
	reqs := []*request{r}
	if err := c.send(ctx, reqs); err != nil {
		return nil, err
	}
	if err := c.wait(ctx, reqs); err != nil {
		return nil, err
	}
	return checkReply(r)
}

// checkReply returns the payload of r's reply, or its error: a daemon
// error, a lost connection, or a reply of the wrong type.
func checkReply(r *request) ([]byte, error) {
	if r.res.err != nil {
		return nil, r.res.err
	}
	m := r.res.msg
	switch m.Type {
	case msgError:
		return nil, daemonError(m.Payload)
	case r.t:
		return m.Payload, nil
	}
	return nil, fmt.Errorf("%w: %s request answered by a %s reply", errProtocol, r.t, m.Type)
}

func (c *conn) readLoop() {
	br := bufio.NewReaderSize(c.rwc, 64<<10)
	for {
		m, err := readMessage(br)
		if err != nil {
			c.fail(fmt.Errorf("%w: %v", ErrConnectionLost, err))
			return
		}
		if m.Type == msgWatchEvent {
			path, token, err := decodeWatchEvent(m.Payload)
			if err != nil {
				c.fail(fmt.Errorf("%w: %v", ErrConnectionLost, err))
				return
			}
			c.onEvent(path, token)
			continue
		}
		c.mu.Lock()
		r, ok := c.pending[m.ReqID]
		delete(c.pending, m.ReqID)
		c.land(m.ReqID)
		c.mu.Unlock()
		if ok {
			r.res = result{msg: m}
			r.done.complete()
		}
	}
}

// close breaks the conn on purpose.
func (c *conn) close(reason error) {
	c.fail(reason)
}

func (c *conn) fail(err error) {
	c.mu.Lock()
	c.failLocked(err)
	c.mu.Unlock()
}

func (c *conn) failLocked(err error) {
	if c.err != nil {
		return
	}
	c.err = err
	c.rwc.Close()
	for id, r := range c.pending {
		delete(c.pending, id)
		r.res = result{err: err}
		r.done.complete()
	}
	c.queue = nil
	c.land(c.flightID)
	close(c.done)
	if c.onLost != nil {
		go c.onLost(c)
	}
}
