// Package xenstore is a client for the Xen store daemon (xenstored), in pure
// Go, speaking its wire protocol over the daemon's unix socket (dom0) or the
// /dev/xen/xenbus device (any domain).
//
// Every message is a 16-byte little-endian header (type, request id,
// transaction id, payload length) and at most 4096 bytes of payload. A
// Client is safe for concurrent use: requests from all callers are written
// as they come, several at once when several are queued, and a reader
// goroutine hands each reply to its caller by request id, so concurrent
// calls, a Batch or a transaction's writes do not wait a round trip each.
//
// Errors the daemon reports ("ENOENT", "EACCES", ...) are *Error values
// wrapping a syscall.Errno: errors.Is(err, syscall.ENOENT) matches them.
//
// When the daemon goes away (it exited or restarted), calls waiting for a
// reply fail with ErrConnectionLost and the next call connects again.
// Watches survive: they are registered again on the new connection (the
// daemon then fires each once, as it does for every new watch), and while
// watches exist the client reconnects on its own, so events resume without
// any call being made. Events that happened while no connection existed are
// not seen, except through that first event, which tells a watcher to read
// the state again. Transactions die with their connection: their calls fail
// with ErrConnectionLost.
package xenstore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"sync"
	"syscall"
	"time"
)

// Default locations of the daemon.
const (
	DefaultSocketPath = "/var/run/xenstored/socket"
	XenbusPath        = "/dev/xen/xenbus"
)

// Config says how a Client reaches the daemon.
type Config struct {
	// Path is the daemon's unix socket or a xenbus character device. Empty
	// means $XENSTORED_PATH, else DefaultSocketPath when it exists, else
	// XenbusPath (what a guest has).
	Path string
	// Dial, when set, replaces Path: it opens a byte stream to the daemon.
	// The Client calls it again to reconnect.
	Dial func(ctx context.Context) (io.ReadWriteCloser, error)
	// OneMessagePerWrite makes the Client write each message with its own
	// write call, and write the next only once the daemon has answered
	// the last, as Linux's xenbus device requires: it queues a message
	// by reference to the per-file buffer the write filled, so a second
	// write before the first was sent overwrites the first's body (a
	// read of one path answered with another's value; a body without
	// its NUL, which 4.17's xenstored aborts on). Set automatically for
	// a character device Path.
	OneMessagePerWrite bool
	// Logger gets connection events (lost, restored). Nil: slog.Default().
	Logger *slog.Logger
	// TransactionRetryLimit bounds how long Transaction retries a
	// transaction that keeps conflicting with other writers; zero means
	// DefaultTransactionRetryLimit.
	TransactionRetryLimit time.Duration
}

// DefaultTransactionRetryLimit is how long Transaction retries by default.
const DefaultTransactionRetryLimit = 30 * time.Second

// Client is a connection to xenstored that reconnects when it breaks.
type Client struct {
	dial     func(ctx context.Context) (io.ReadWriteCloser, error)
	perWrite bool
	log      *slog.Logger
	closing  chan struct{}
	retryFor time.Duration

	mu         sync.Mutex
	cur        *conn
	dialing    chan struct{} // non-nil while a connection is being made
	closed     bool
	reconnects bool // a background reconnect loop is running
	watches    map[string]*Watch
	nextToken  uint64
}

// Dial connects to the daemon at the default place (see Config.Path).
func Dial(ctx context.Context) (*Client, error) {
	return Open(ctx, Config{})
}

// Open connects to the daemon as cfg says.
func Open(ctx context.Context, cfg Config) (*Client, error) {
	c := &Client{
		dial:     cfg.Dial,
		perWrite: cfg.OneMessagePerWrite,
		log:      cfg.Logger,
		closing:  make(chan struct{}),
		watches:  make(map[string]*Watch),
		retryFor: cfg.TransactionRetryLimit,
	}
	if c.retryFor <= 0 {
		c.retryFor = DefaultTransactionRetryLimit
	}
	if c.log == nil {
		c.log = slog.Default()
	}
	if c.dial == nil {
		path, device, err := resolvePath(cfg.Path)
		if err != nil {
			return nil, err
		}
		c.perWrite = c.perWrite || device
		c.dial = pathDialer(path, device)
	}
	if _, err := c.conn(ctx); err != nil {
		return nil, err
	}
	return c, nil
}

// resolvePath picks the daemon's path and says whether it is a device.
func resolvePath(path string) (string, bool, error) {
	if path == "" {
		path = os.Getenv("XENSTORED_PATH")
	}
	if path == "" {
		path = DefaultSocketPath
		if _, err := os.Stat(path); err != nil {
			if _, err2 := os.Stat(XenbusPath); err2 == nil {
				path = XenbusPath
			}
		}
	}
	fi, err := os.Stat(path)
	if err != nil {
		return "", false, fmt.Errorf("xenstore: no daemon at %s (is xenstored running? set XENSTORED_PATH to its socket): %w", path, err)
	}
	switch {
	case fi.Mode()&os.ModeSocket != 0:
		return path, false, nil
	case fi.Mode()&os.ModeCharDevice != 0:
		return path, true, nil
	}
	return "", false, fmt.Errorf("xenstore: %s is neither a unix socket nor a xenbus device", path)
}

func pathDialer(path string, device bool) func(ctx context.Context) (io.ReadWriteCloser, error) {
	if device {
		return func(ctx context.Context) (io.ReadWriteCloser, error) {
			return os.OpenFile(path, os.O_RDWR, 0)
		}
	}
	return func(ctx context.Context) (io.ReadWriteCloser, error) {
		// xenstored listens with a backlog of 1 and accepts one
		// connection per turn of its loop: while its backlog is full, a
		// unix socket connect fails at once with EAGAIN. Try again.
		var d net.Dialer
		wait := 100 * time.Microsecond
		for {
			c, err := d.DialContext(ctx, "unix", path)
			if err == nil || !errors.Is(err, syscall.EAGAIN) {
				return c, err
			}
			select {
			case <-time.After(wait):
			case <-ctx.Done():
				return nil, err
			}
			wait = min(wait*2, 50*time.Millisecond)
		}
	}
}

// conn returns the working connection, making one if needed.
func (c *Client) conn(ctx context.Context) (*conn, error) {
	for {
		c.mu.Lock()
		if c.closed {
			c.mu.Unlock()
			return nil, ErrClosed
		}
		if c.cur != nil && c.cur.broken() == nil {
			cn := c.cur
			c.mu.Unlock()
			return cn, nil
		}
		if wait := c.dialing; wait != nil {
			c.mu.Unlock()
			select {
			case <-wait:
				continue
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
		done := make(chan struct{})
		c.dialing = done
		c.mu.Unlock()

		cn, err := c.connect(ctx)

		c.mu.Lock()
		c.dialing = nil
		close(done)
		if err != nil {
			c.mu.Unlock()
			return nil, err
		}
		if c.closed {
			c.mu.Unlock()
			cn.close(ErrClosed)
			return nil, ErrClosed
		}
		c.cur = cn
		c.mu.Unlock()
		return cn, nil
	}
}

// connect dials and registers the client's watches on the new connection.
func (c *Client) connect(ctx context.Context) (*conn, error) {
	rwc, err := c.dial(ctx)
	if err != nil {
		return nil, fmt.Errorf("xenstore: connect: %w", err)
	}
	cn := newConn(rwc, c.perWrite, c.deliver, c.lost)

	c.mu.Lock()
	ws := make([]*Watch, 0, len(c.watches))
	for _, w := range c.watches {
		ws = append(ws, w)
	}
	c.mu.Unlock()
	if len(ws) == 0 {
		return cn, nil
	}
	reqs := make([]*request, len(ws))
	for i, w := range ws {
		reqs[i] = &request{t: msgWatch, path: w.path, parts: [][]byte{cstr(w.path), cstr(w.token)}}
	}
	if err := cn.send(ctx, reqs); err != nil {
		return nil, fmt.Errorf("xenstore: connect: %w", err)
	}
	if err := cn.wait(ctx, reqs); err != nil {
		cn.close(err)
		return nil, fmt.Errorf("xenstore: connect: re-register watches: %w", err)
	}
	for i, r := range reqs {
		_, err := checkReply(r)
		if errors.Is(err, syscall.EEXIST) {
			err = nil
		}
		if errors.Is(err, ErrConnectionLost) {
			cn.close(err)
			return nil, fmt.Errorf("xenstore: connect: re-register watch %s: %w", ws[i].path, err)
		}
		if err != nil {
			c.removeWatch(ws[i], opError(msgWatch, ws[i].path, err))
		}
	}
	return cn, nil
}

// lost is called (in its own goroutine) when a connection breaks.
func (c *Client) lost(cn *conn) {
	c.mu.Lock()
	if c.cur == cn {
		c.cur = nil
	}
	closed := c.closed
	start := !closed && len(c.watches) > 0 && !c.reconnects
	if start {
		c.reconnects = true
	}
	c.mu.Unlock()
	if closed {
		return
	}
	c.log.Warn("xenstore connection lost", "err", cn.broken())
	if start {
		c.reconnectLoop()
	}
}

// reconnectLoop connects again, with backoff, so watches resume.
func (c *Client) reconnectLoop() {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-c.closing:
			cancel()
		case <-ctx.Done():
		}
	}()
	delay := 10 * time.Millisecond
	for {
		c.mu.Lock()
		if c.closed || len(c.watches) == 0 || (c.cur != nil && c.cur.broken() == nil) {
			c.reconnects = false
			c.mu.Unlock()
			return
		}
		c.mu.Unlock()
		if _, err := c.conn(ctx); err == nil {
			c.log.Info("xenstore connection restored, watches registered again")
		} else {
			select {
			case <-time.After(delay):
			case <-ctx.Done():
			}
			delay = min(delay*2, 2*time.Second)
		}
	}
}

// Close ends the connection and every watch. Calls waiting for a reply
// fail with ErrClosed.
func (c *Client) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	close(c.closing)
	cn := c.cur
	c.cur = nil
	ws := c.watches
	c.watches = map[string]*Watch{}
	c.mu.Unlock()
	for _, w := range ws {
		w.stop(ErrClosed)
	}
	if cn != nil {
		cn.close(ErrClosed)
	}
	return nil
}

var errEmptyPerms = fmt.Errorf("empty permission list, give at least the owner: %w", syscall.EINVAL)

// cstr returns s as a NUL-terminated string.
func cstr(s string) []byte {
	b := make([]byte, len(s)+1)
	copy(b, s)
	return b
}

// checkRequest refuses requests the daemon would choke on: a path with a NUL
// in it (it would split into two strings) or a payload over PayloadMax (the
// daemon drops the connection of a client that sends one).
func checkRequest(r *request) error {
	for _, b := range []byte(r.path) {
		if b == 0 {
			return fmt.Errorf("path contains a NUL byte: %w", syscall.EINVAL)
		}
	}
	n := 0
	for _, p := range r.parts {
		n += len(p)
	}
	if n > PayloadMax {
		return fmt.Errorf("request payload of %d bytes is over the %d-byte limit: %w", n, PayloadMax, syscall.E2BIG)
	}
	return nil
}

// do sends one request, on the client's connection or tx's, and returns the
// reply payload.
func (c *Client) do(ctx context.Context, tx *Transaction, t msgType, path string, parts ...[]byte) ([]byte, error) {
	r := &request{t: t, path: path, parts: parts}
	if err := checkRequest(r); err != nil {
		return nil, opError(t, path, err)
	}
	var cn *conn
	if tx != nil {
		var err error
		if cn, err = tx.conn(); err != nil {
			return nil, opError(t, path, err)
		}
		r.tx = tx.id
	} else {
		var err error
		if cn, err = c.conn(ctx); err != nil {
			return nil, opError(t, path, err)
		}
	}
	p, err := cn.roundTrip(ctx, r)
	return p, opError(t, path, err)
}

func (c *Client) read(ctx context.Context, tx *Transaction, path string) ([]byte, error) {
	return c.do(ctx, tx, msgRead, path, cstr(path))
}

func (c *Client) write(ctx context.Context, tx *Transaction, path string, value []byte) error {
	_, err := c.do(ctx, tx, msgWrite, path, cstr(path), value)
	return err
}

func (c *Client) simple(ctx context.Context, tx *Transaction, t msgType, path string) error {
	_, err := c.do(ctx, tx, t, path, cstr(path))
	return err
}

func (c *Client) setPerms(ctx context.Context, tx *Transaction, path string, perms Perms) error {
	if len(perms) == 0 {
		return opError(msgSetPerms, path, errEmptyPerms)
	}
	_, err := c.do(ctx, tx, msgSetPerms, path, cstr(path), perms.payload())
	return err
}

func (c *Client) getPerms(ctx context.Context, tx *Transaction, path string) (Perms, error) {
	p, err := c.do(ctx, tx, msgGetPerms, path, cstr(path))
	if err != nil {
		return nil, err
	}
	perms, err := decodePerms(p)
	return perms, opError(msgGetPerms, path, err)
}

func (c *Client) directory(ctx context.Context, tx *Transaction, path string) ([]string, error) {
	p, err := c.do(ctx, tx, msgDirectory, path, cstr(path))
	if errors.Is(err, syscall.E2BIG) {
		return c.directoryParts(ctx, tx, path)
	}
	if err != nil {
		return nil, err
	}
	names, err := splitStrings(p)
	return names, opError(msgDirectory, path, err)
}

// directoryParts lists a directory too big for one reply, in parts. When
// the node changes between parts (its generation differs), it starts over.
func (c *Client) directoryParts(ctx context.Context, tx *Transaction, path string) ([]string, error) {
	for attempt := 0; attempt < 32; attempt++ {
		var names []string
		var gen0 string
		off := 0
		for {
			p, err := c.do(ctx, tx, msgDirectoryPart, path, cstr(path), cstr(strconv.Itoa(off)))
			if err != nil {
				return nil, err
			}
			gen, part, done, err := decodeDirectoryPart(p)
			if err != nil {
				return nil, opError(msgDirectoryPart, path, err)
			}
			if off == 0 {
				gen0 = gen
			} else if gen != gen0 {
				names = nil
				break
			}
			for _, n := range part {
				off += len(n) + 1
			}
			names = append(names, part...)
			if done {
				return names, nil
			}
			if len(part) == 0 {
				return nil, opError(msgDirectoryPart, path, fmt.Errorf("%w: directory part makes no progress", errProtocol))
			}
		}
	}
	return nil, opError(msgDirectoryPart, path, fmt.Errorf("directory keeps changing while being listed: %w", syscall.EAGAIN))
}

// Read returns the value of the node at path.
func (c *Client) Read(ctx context.Context, path string) ([]byte, error) {
	return c.read(ctx, nil, path)
}

// ReadString returns the value of the node at path as a string.
func (c *Client) ReadString(ctx context.Context, path string) (string, error) {
	v, err := c.read(ctx, nil, path)
	return string(v), err
}

// Write sets the value of the node at path, creating it and any missing
// parents.
func (c *Client) Write(ctx context.Context, path string, value []byte) error {
	return c.write(ctx, nil, path, value)
}

// WriteString is Write with a string value.
func (c *Client) WriteString(ctx context.Context, path, value string) error {
	return c.write(ctx, nil, path, []byte(value))
}

// Mkdir creates the node at path with an empty value, if it does not exist.
func (c *Client) Mkdir(ctx context.Context, path string) error {
	return c.simple(ctx, nil, msgMkdir, path)
}

// Rm removes the node at path and everything below it. Removing a node
// that does not exist succeeds when its parent exists.
func (c *Client) Rm(ctx context.Context, path string) error {
	return c.simple(ctx, nil, msgRm, path)
}

// Directory lists the names of the children of the node at path.
func (c *Client) Directory(ctx context.Context, path string) ([]string, error) {
	return c.directory(ctx, nil, path)
}

// GetPerms returns the permission list of the node at path.
func (c *Client) GetPerms(ctx context.Context, path string) (Perms, error) {
	return c.getPerms(ctx, nil, path)
}

// SetPerms replaces the permission list of the node at path.
func (c *Client) SetPerms(ctx context.Context, path string, perms Perms) error {
	return c.setPerms(ctx, nil, path, perms)
}

func domidArg(domid uint32) []byte { return cstr(strconv.FormatUint(uint64(domid), 10)) }

// GetDomainPath returns the home path of a domain, /local/domain/<domid>.
func (c *Client) GetDomainPath(ctx context.Context, domid uint32) (string, error) {
	p, err := c.do(ctx, nil, msgGetDomainPath, "", domidArg(domid))
	if err != nil {
		return "", err
	}
	s, err := oneString(p)
	return s, opError(msgGetDomainPath, "", err)
}

// Introduce tells the daemon about a new domain: the guest frame of its
// xenstore ring page and the event channel port it listens on. The daemon
// then serves the domain and fires @introduceDomain.
func (c *Client) Introduce(ctx context.Context, domid uint32, gfn uint64, port uint32) error {
	_, err := c.do(ctx, nil, msgIntroduce, "", domidArg(domid),
		cstr(strconv.FormatUint(gfn, 10)), cstr(strconv.FormatUint(uint64(port), 10)))
	if err != nil {
		return fmt.Errorf("domain %d: %w", domid, err)
	}
	return nil
}

// Release tells the daemon a domain is gone: it drops its connection and
// fires @releaseDomain.
func (c *Client) Release(ctx context.Context, domid uint32) error {
	if _, err := c.do(ctx, nil, msgRelease, "", domidArg(domid)); err != nil {
		return fmt.Errorf("domain %d: %w", domid, err)
	}
	return nil
}

// IsDomainIntroduced reports whether the daemon serves the domain.
func (c *Client) IsDomainIntroduced(ctx context.Context, domid uint32) (bool, error) {
	p, err := c.do(ctx, nil, msgIsDomainIntroduced, "", domidArg(domid))
	if err != nil {
		return false, fmt.Errorf("domain %d: %w", domid, err)
	}
	s, err := oneString(p)
	if err != nil {
		return false, opError(msgIsDomainIntroduced, "", err)
	}
	switch s {
	case "T":
		return true, nil
	case "F":
		return false, nil
	}
	return false, opError(msgIsDomainIntroduced, "", fmt.Errorf("%w: reply %q is neither T nor F", errProtocol, s))
}

// SetTarget makes domid privileged over target's nodes, as a device-model
// stubdomain is over its guest.
func (c *Client) SetTarget(ctx context.Context, domid, target uint32) error {
	if _, err := c.do(ctx, nil, msgSetTarget, "", domidArg(domid), domidArg(target)); err != nil {
		return fmt.Errorf("domain %d target %d: %w", domid, target, err)
	}
	return nil
}

// ResetWatches asks the daemon to drop every watch and transaction of this
// connection. The client's Watches end with ErrWatchesReset.
func (c *Client) ResetWatches(ctx context.Context) error {
	cn, err := c.conn(ctx)
	if err != nil {
		return opError(msgResetWatches, "", err)
	}
	if _, err := cn.roundTrip(ctx, &request{t: msgResetWatches, parts: [][]byte{{0}}}); err != nil {
		return opError(msgResetWatches, "", err)
	}
	c.mu.Lock()
	ws := c.watches
	c.watches = map[string]*Watch{}
	c.mu.Unlock()
	for _, w := range ws {
		w.stop(ErrWatchesReset)
	}
	return nil
}

// sleepJitter waits a random time up to max, or until ctx ends.
func sleepJitter(ctx context.Context, max time.Duration) error {
	t := time.NewTimer(rand.N(max) + 1)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
