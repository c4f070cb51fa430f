package xenstore

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"sync"
)

// result is what a request gets back: the reply message or why none came.
type result struct {
	msg message
	err error
}

// request is one message to send.
type request struct {
	t     msgType
	tx    uint32
	path  string // for error messages
	parts [][]byte
	ch    chan result // buffered 1; set by conn.send
	id    uint32
}

// conn is one connection to the daemon: a writer side shared by all callers
// (requests queue up and are written together) and a reader goroutine that
// hands each reply to the request with its req_id and each watch event to
// the client. A conn that breaks stays broken; the Client makes a new one.
type conn struct {
	rwc      io.ReadWriteCloser
	perWrite bool // the transport takes one message per write (xenbus device)
	onEvent  func(path, token string)
	onLost   func(*conn)

	mu       sync.Mutex
	nextID   uint32
	pending  map[uint32]chan result
	queue    []byte // encoded requests not yet written
	bounds   []int  // end offset of each message in queue (perWrite only)
	spare    []byte
	flushing bool
	err      error         // why the conn broke, nil while it works
	done     chan struct{} // closed when the conn breaks
}

func newConn(rwc io.ReadWriteCloser, perWrite bool, onEvent func(path, token string), onLost func(*conn)) *conn {
	c := &conn{
		rwc:      rwc,
		perWrite: perWrite,
		onEvent:  onEvent,
		onLost:   onLost,
		nextID:   1,
		pending:  make(map[uint32]chan result),
		done:     make(chan struct{}),
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
// any others that arrive meanwhile) in as few writes as the transport
// allows. On return each request's ch will receive exactly one result.
func (c *conn) send(reqs []*request) error {
	c.mu.Lock()
	if c.err != nil {
		err := c.err
		c.mu.Unlock()
		return err
	}
	for _, r := range reqs {
		r.id = c.nextID
		c.nextID++
		if c.nextID == 0 {
			c.nextID = 1
		}
		r.ch = make(chan result, 1)
		c.pending[r.id] = r.ch
		c.queue = appendMessage(c.queue, r.t, r.id, r.tx, r.parts...)
		if c.perWrite {
			c.bounds = append(c.bounds, len(c.queue))
		}
	}
	if c.flushing {
		c.mu.Unlock()
		return nil
	}
	c.flushing = true
	for len(c.queue) > 0 && c.err == nil {
		buf, bounds := c.queue, c.bounds
		c.queue, c.bounds = c.spare[:0], nil
		c.spare = nil
		c.mu.Unlock()
		err := c.write(buf, bounds)
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

func (c *conn) write(buf []byte, bounds []int) error {
	if !c.perWrite {
		_, err := c.rwc.Write(buf)
		return err
	}
	start := 0
	for _, end := range bounds {
		if _, err := c.rwc.Write(buf[start:end]); err != nil {
			return err
		}
		start = end
	}
	return nil
}

// wait waits for the reply to r. When ctx ends first, the reply is
// discarded when it comes.
func (c *conn) wait(ctx context.Context, r *request) (message, error) {
	select {
	case res := <-r.ch:
		return res.msg, res.err
	case <-ctx.Done():
		c.mu.Lock()
		delete(c.pending, r.id)
		c.mu.Unlock()
		// The reply may have come meanwhile; prefer it.
		select {
		case res := <-r.ch:
			return res.msg, res.err
		default:
		}
		return message{}, ctx.Err()
	}
}

// roundTrip sends one request and waits for its reply. A reply of type
// XS_ERROR becomes the daemon's error.
func (c *conn) roundTrip(ctx context.Context, r *request) ([]byte, error) {
	if err := c.send([]*request{r}); err != nil {
		return nil, err
	}
	m, err := c.wait(ctx, r)
	if err != nil {
		return nil, err
	}
	return checkReply(r, m)
}

// checkReply turns an error reply into an error.
func checkReply(r *request, m message) ([]byte, error) {
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
		ch, ok := c.pending[m.ReqID]
		delete(c.pending, m.ReqID)
		c.mu.Unlock()
		if ok {
			ch <- result{msg: m}
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
	for id, ch := range c.pending {
		ch <- result{err: err}
		delete(c.pending, id)
	}
	c.queue, c.bounds = nil, nil
	close(c.done)
	if c.onLost != nil {
		go c.onLost(c)
	}
}
