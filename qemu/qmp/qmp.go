// Package qmp is a small client of QEMU's machine protocol (QMP) for a
// peer dom0 does not trust: the QEMU of an HVM guest runs in its
// stubdomain, next to the guest it emulates, and whatever answers on its
// QMP socket may be hostile.
//
// So every message read is bounded in size (MaxMessage; QMP sends one JSON
// object per line, which is how the reader finds its end without
// buffering more) and in time (the caller's context, or DefaultTimeout
// when it has no deadline), and anything that is not the protocol (not
// JSON, not an object, a reply to a command that was not sent, too long)
// ends the connection with an error wrapping ErrProtocol. A connection
// that failed once is closed and refuses further use: after a partial read
// there is no telling where the next message starts.
//
// Pretty-printed QMP output (QEMU's -mon pretty=on) spans lines and is
// not supported; libxl and qvm's stubdomain do not ask for it.
//
// Strings in an Error are made safe for a terminal (package termtext);
// results and event data are the peer's own and must be validated by
// whoever uses them.
package qmp

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"time"

	"github.com/qvm-project/qvm/termtext"
)

// MaxMessage is the longest message (one line) read from the peer.
// QEMU's replies to the commands qvm sends are a few KiB.
const MaxMessage = 1 << 20

// DefaultTimeout bounds each exchange (the greeting and handshake, one
// command and its reply, one event) whose context has no deadline.
const DefaultTimeout = 30 * time.Second

// MaxEvents is how many events Conn keeps for NextEvent while it waits
// for replies; older ones are dropped.
const MaxEvents = 64

// maxErrorText bounds the strings of an Error.
const maxErrorText = 512

// ErrProtocol is wrapped by errors about a peer that does not speak QMP.
var ErrProtocol = errors.New("not QMP")

// ErrBroken is wrapped by the errors of calls on a connection that failed
// before (the first error says why).
var ErrBroken = errors.New("QMP connection failed before")

// Greeting is what the peer says about itself when the connection opens.
// Its strings are the peer's own.
type Greeting struct {
	Major, Minor, Micro int    // QEMU's version
	Package             string // e.g. "Debian 1:7.2+dfsg-7"
	Capabilities        []string
}

// Event is an asynchronous message (DEVICE_TRAY_MOVED, SHUTDOWN, ...).
type Event struct {
	Name string
	Data json.RawMessage // the peer's own JSON object, or nil
	Time time.Time       // when the peer says it happened
}

// Error is a command's error reply. Class and Desc are cut to 512 bytes
// and made safe for a terminal.
type Error struct {
	Command string // the command that failed
	Class   string // e.g. GenericError, DeviceNotFound
	Desc    string
}

func (e *Error) Error() string {
	return fmt.Sprintf("QMP command %s: %s: %s", e.Command, e.Class, e.Desc)
}

// Conn is a QMP connection past its handshake. Its methods are not for
// concurrent use.
type Conn struct {
	c        net.Conn
	name     string // what errors call the peer
	r        *bufio.Reader
	greeting Greeting
	next     uint64  // the id of the next command
	events   []Event // received while waiting for replies, oldest first
	broken   error
}

// Dial connects to the QMP socket at path (a unix socket) and does the
// handshake (see New).
func Dial(ctx context.Context, path string) (*Conn, error) {
	ctx, cancel := withDefaultTimeout(ctx)
	defer cancel()
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		// connect waits while the peer's backlog is full.
		return nil, fmt.Errorf("QMP %s: %w", path, withContextErr(ctx, err))
	}
	return New(ctx, c, path)
}

// New reads the greeting on c and negotiates capabilities (none: qvm
// does not use out-of-band commands). name is what errors call the peer.
// On failure c is closed.
func New(ctx context.Context, c net.Conn, name string) (*Conn, error) {
	q := &Conn{c: c, name: name, r: bufio.NewReaderSize(c, 64<<10)}
	if err := q.readGreeting(ctx); err != nil {
		return nil, err
	}
	if err := q.Execute(ctx, "qmp_capabilities", nil, nil); err != nil {
		q.Close()
		return nil, err
	}
	return q, nil
}

// Greeting is what the peer said when the connection opened.
func (q *Conn) Greeting() Greeting { return q.greeting }

// Close ends the connection.
func (q *Conn) Close() error {
	if q.broken == nil {
		q.broken = fmt.Errorf("QMP %s: %w: closed", q.name, ErrBroken)
	}
	return q.c.Close()
}

// withDefaultTimeout gives ctx DefaultTimeout unless it has a deadline.
func withDefaultTimeout(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return ctx, func() {}
	}
	return context.WithTimeout(ctx, DefaultTimeout)
}

// bound makes the connection's reads and writes end with ctx; the
// returned function undoes it.
func (q *Conn) bound(ctx context.Context) (context.Context, func()) {
	ctx, cancel := withDefaultTimeout(ctx)
	d, _ := ctx.Deadline()
	q.c.SetDeadline(d)
	fired := make(chan struct{})
	stop := context.AfterFunc(ctx, func() {
		q.c.SetDeadline(time.Unix(1, 0))
		close(fired)
	})
	return ctx, func() {
		if !stop() {
			// It ran or runs: let it finish, so that it cannot cut
			// the next exchange short.
			<-fired
		}
		cancel()
	}
}

// fail breaks the connection with err and returns the error.
func (q *Conn) fail(ctx context.Context, err error) error {
	err = fmt.Errorf("QMP %s: %w", q.name, withContextErr(ctx, err))
	q.broken = fmt.Errorf("%w: %w", ErrBroken, err)
	q.c.Close()
	return err
}

// withContextErr names ctx's error in err when ctx is what made a read,
// write or connect time out.
func withContextErr(ctx context.Context, err error) error {
	if !errors.Is(err, os.ErrDeadlineExceeded) && !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, context.Canceled) {
		return err
	}
	cerr := ctx.Err()
	if d, ok := ctx.Deadline(); cerr == nil && ok && !time.Now().Before(d) {
		// The socket's deadline is ctx's, and can pass before ctx's
		// own timer has fired.
		cerr = context.DeadlineExceeded
	}
	if cerr == nil || errors.Is(err, cerr) {
		return err
	}
	return fmt.Errorf("%w (%w)", cerr, err)
}

// Execute runs command with args (nil, or a value that encodes as a JSON
// object) and decodes its return value into result (nil to ignore it).
// A command QEMU refuses returns an *Error, and the connection stays
// usable; every other failure breaks it.
func (q *Conn) Execute(ctx context.Context, command string, args, result any) error {
	if q.broken != nil {
		return q.broken
	}
	ctx, done := q.bound(ctx)
	defer done()
	q.next++
	id := "qvm-" + strconv.FormatUint(q.next, 10)
	req := struct {
		Execute   string `json:"execute"`
		Arguments any    `json:"arguments,omitempty"`
		ID        string `json:"id"`
	}{command, args, id}
	b, err := json.Marshal(req)
	if err != nil {
		// The caller's arguments: not the connection's fault.
		return fmt.Errorf("QMP %s: %s: %w", q.name, command, err)
	}
	if _, err := q.c.Write(append(b, '\r', '\n')); err != nil {
		return q.fail(ctx, fmt.Errorf("%s: %w", command, err))
	}
	for {
		m, err := q.read()
		if err != nil {
			return q.fail(ctx, fmt.Errorf("%s: %w", command, err))
		}
		switch {
		case m.kind == kindEvent:
			q.keep(m.event)
			continue
		case m.kind == kindGreeting || m.id != id:
			return q.fail(ctx, fmt.Errorf("%s: %w: %s, not the reply to %s", command, ErrProtocol, m.describe(), id))
		case m.kind == kindError:
			return &Error{Command: command, Class: termtext.Cut(m.errClass, maxErrorText), Desc: termtext.Cut(m.errDesc, maxErrorText)}
		}
		if result == nil {
			return nil
		}
		if err := json.Unmarshal(m.ret, result); err != nil {
			// The stream is intact: only this reply is not what the
			// command returns.
			return fmt.Errorf("QMP %s: %s: %w: its reply: %w", q.name, command, ErrProtocol, err)
		}
		return nil
	}
}

// keep stores an event for NextEvent, dropping the oldest past MaxEvents.
func (q *Conn) keep(e Event) {
	if len(q.events) == MaxEvents {
		copy(q.events, q.events[1:])
		q.events = q.events[:MaxEvents-1]
	}
	q.events = append(q.events, e)
}

// NextEvent returns the oldest event not returned yet, waiting for one
// if there is none. A reply while it waits is a protocol error.
func (q *Conn) NextEvent(ctx context.Context) (Event, error) {
	if len(q.events) > 0 {
		e := q.events[0]
		q.events = q.events[1:]
		return e, nil
	}
	if q.broken != nil {
		return Event{}, q.broken
	}
	ctx, done := q.bound(ctx)
	defer done()
	m, err := q.read()
	if err != nil {
		return Event{}, q.fail(ctx, fmt.Errorf("event: %w", err))
	}
	if m.kind != kindEvent {
		return Event{}, q.fail(ctx, fmt.Errorf("event: %w: %s while no command ran", ErrProtocol, m.describe()))
	}
	return m.event, nil
}

// readGreeting reads the first message, which must be the greeting.
func (q *Conn) readGreeting(ctx context.Context) error {
	ctx, done := q.bound(ctx)
	defer done()
	m, err := q.read()
	if err == nil && m.kind != kindGreeting {
		err = fmt.Errorf("%w: a %s before the greeting", ErrProtocol, m.kind)
	}
	if err != nil {
		return q.fail(ctx, fmt.Errorf("greeting: %w", err))
	}
	q.greeting = m.greeting
	return nil
}

// read reads and parses the next message, skipping empty lines.
func (q *Conn) read() (message, error) {
	for {
		line, err := readLine(q.r, MaxMessage)
		if err != nil {
			return message{}, err
		}
		if len(line) == 0 {
			continue
		}
		return parseMessage(line)
	}
}

// errTooLong is wrapped by readLine's error for a line past its bound.
var errTooLong = fmt.Errorf("%w: a message longer than %d bytes", ErrProtocol, MaxMessage)

// readLine returns the next line without its LF or CRLF. A line longer
// than max fails once max bytes have been read, without reading more.
// Whitespace-only lines come back empty.
func readLine(r *bufio.Reader, max int) ([]byte, error) {
	var line []byte
	for {
		chunk, err := r.ReadSlice('\n')
		if len(line)+len(chunk) > max+2 || (err != nil && len(line)+len(chunk) > max) {
			return nil, errTooLong
		}
		line = append(line, chunk...)
		if err == nil {
			break
		}
		if errors.Is(err, bufio.ErrBufferFull) {
			continue
		}
		if errors.Is(err, io.EOF) {
			if len(line) > 0 {
				err = fmt.Errorf("%w: the peer closed the connection in the middle of a message", io.ErrUnexpectedEOF)
			} else {
				err = fmt.Errorf("%w: the peer closed the connection", io.EOF)
			}
		}
		return nil, err
	}
	for len(line) > 0 && (line[len(line)-1] == '\n' || line[len(line)-1] == '\r' || line[len(line)-1] == ' ' || line[len(line)-1] == '\t') {
		line = line[:len(line)-1]
	}
	if len(line) > max {
		return nil, errTooLong
	}
	return line, nil
}
