// Package vmconsole serves a VM's text console in dom0: one process (the
// VM's monitor) is the only reader of the console's pseudo-terminal, keeps
// what the guest prints in a log of bounded size, and relays the console
// to any number of clients (qvm-console) on a unix socket only root can
// use; what the clients type goes to the guest.
//
// The pseudo-terminal is xenconsoled's: for a PV or PVH domain xenconsoled
// allocates one and writes its name to the domain's console/tty key. The
// guest can rewrite that key (its console directory is its own), so the
// name is read only while the domain is paused, before the guest has run
// (see the lifecycle package), and OpenPTY still checks that it names a
// pseudo-terminal: a guest cannot make dom0 open its disk or the operator's
// own terminal.
//
// Console bytes are the guest's choice: the log keeps them as they came
// (bounded), and whoever shows them filters them (see termtext).
package vmconsole

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"regexp"
	"sync"
	"time"

	"golang.org/x/sys/unix"
	"golang.org/x/term"
)

// DMFlag is the argument of qvm-stubdom-dm, the dom0 device model of an
// HVM's stubdomain, that names where the HVM's serial console goes:
// -qvm-console LOG SOCKET (qvm-stubdom-dm serves it as the monitor serves
// a PV console).
const DMFlag = "-qvm-console"

// ptyPath is the only form of console name OpenPTY accepts.
var ptyPath = regexp.MustCompile(`^/dev/pts/[0-9]{1,7}$`)

// UNIX98 pseudo-terminal slaves have majors 136 to 143 (Linux's
// Documentation/admin-guide/devices.txt).
const (
	ptySlaveMajorFirst = 136
	ptySlaveMajorLast  = 143
)

// LogLimit bounds a console's log: past it the log is rotated (or, when
// the writer cannot rename it, emptied), so a guest printing for ever
// takes at most twice this of dom0's disk.
const LogLimit = 1 << 20

// MaxPathLen bounds a console name read from xenstore.
const MaxPathLen = 32

// OpenPTY opens the pseudo-terminal slave path for reading and writing,
// in raw mode, without making it the process's controlling terminal.
// path must be /dev/pts/N and the file a pseudo-terminal slave.
func OpenPTY(path string) (*os.File, error) {
	if len(path) > MaxPathLen || !ptyPath.MatchString(path) {
		return nil, fmt.Errorf("console %q: not a pseudo-terminal name (/dev/pts/N)", path)
	}
	fd, err := unix.Open(path, unix.O_RDWR|unix.O_NOCTTY|unix.O_NOFOLLOW|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
	if err != nil {
		return nil, fmt.Errorf("console %s: %w", path, err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("console %s: %w", path, err)
	}
	if maj := unix.Major(st.Rdev); st.Mode&unix.S_IFMT != unix.S_IFCHR || maj < ptySlaveMajorFirst || maj > ptySlaveMajorLast {
		unix.Close(fd)
		return nil, fmt.Errorf("console %s: not a pseudo-terminal (mode %#o, device %d:%d)", path, st.Mode, unix.Major(st.Rdev), unix.Minor(st.Rdev))
	}
	// Raw: no echo, no line editing, no translation of what either side
	// sends (xenconsoled sets its end raw too).
	if _, err := term.MakeRaw(fd); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("console %s: raw mode: %w", path, err)
	}
	return os.NewFile(uintptr(fd), path), nil
}

// clientQueue bounds what waits for one client: a client that falls this
// many reads behind is dropped, so that a stuck qvm-console never holds
// up the log or the other clients.
const clientQueue = 256

// clientWriteTimeout drops a client that takes no output for this long.
const clientWriteTimeout = 10 * time.Second

// readSize is the most read from the console at a time.
const readSize = 4096

// Server relays one console: see Serve.
type Server struct {
	pty io.ReadWriter
	log io.Writer
	lg  *slog.Logger

	mu      sync.Mutex
	clients map[*client]struct{}
	closed  bool // Serve is ending: no client is taken any more
	// in serialises the clients' writes to the console, so that what one
	// client sends in a write reaches the guest whole.
	in sync.Mutex
}

type client struct {
	c    net.Conn
	out  chan []byte
	once sync.Once
}

func (c *client) close() { c.once.Do(func() { close(c.out) }) }

// NewServer returns a Server for the console pty, whose output goes to log
// (nil: nowhere) and to every client. lg (nil: slog's default) gets what
// happens to clients.
func NewServer(pty io.ReadWriter, log io.Writer, lg *slog.Logger) *Server {
	if lg == nil {
		lg = slog.Default()
	}
	return &Server{pty: pty, log: log, lg: lg, clients: map[*client]struct{}{}}
}

// Serve reads the console until ctx ends or the console ends (the domain
// is gone), and serves clients from ln meanwhile. It closes ln and every
// client before it returns.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	defer wg.Wait()
	defer ln.Close() // before the wait: it ends the accept loop
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() { s.serveClient(c) })
		}
	})
	defer s.dropAll()
	if c, ok := s.pty.(io.Closer); ok {
		unblock := context.AfterFunc(ctx, func() { c.Close() })
		defer unblock()
	}
	buf := make([]byte, readSize)
	for {
		n, err := s.pty.Read(buf)
		if n > 0 {
			s.output(buf[:n])
		}
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if errors.Is(err, io.EOF) || errors.Is(err, unix.EIO) {
				// The other end closed: xenconsoled let go of the domain.
				return nil
			}
			return fmt.Errorf("read the console: %w", err)
		}
	}
}

// output sends what the console printed to the log and to every client.
func (s *Server) output(p []byte) {
	if s.log != nil {
		if _, err := s.log.Write(p); err != nil {
			s.lg.Warn("console log", "err", err)
		}
	}
	b := append([]byte(nil), p...)
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.clients {
		select {
		case c.out <- b:
		default:
			s.lg.Warn("console client too slow: dropped")
			delete(s.clients, c)
			c.close()
			c.c.Close() // its writer may be stuck in a write
		}
	}
}

func (s *Server) dropAll() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	for c := range s.clients {
		delete(s.clients, c)
		c.close()
	}
}

// serveClient relays console output to c, and what c sends to the
// console, until either ends.
func (s *Server) serveClient(c net.Conn) {
	cl := &client{c: c, out: make(chan []byte, clientQueue)}
	s.mu.Lock()
	if s.closed {
		// Accepted as Serve ended: dropAll has been, and would not see it.
		s.mu.Unlock()
		c.Close()
		return
	}
	s.clients[cl] = struct{}{}
	s.mu.Unlock()
	defer c.Close()
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, readSize)
		for {
			n, err := c.Read(buf)
			if n > 0 {
				s.in.Lock()
				_, werr := s.pty.Write(buf[:n])
				s.in.Unlock()
				if werr != nil {
					return
				}
			}
			if err != nil {
				return
			}
		}
	}()
	for {
		select {
		case b, ok := <-cl.out:
			if !ok {
				return
			}
			c.SetWriteDeadline(time.Now().Add(clientWriteTimeout))
			if _, err := c.Write(b); err != nil {
				s.forget(cl)
				return
			}
		case <-done:
			s.forget(cl)
			return
		}
	}
}

func (s *Server) forget(cl *client) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.clients[cl]; ok {
		delete(s.clients, cl)
		cl.close()
	}
}

// Listen makes the unix socket path for a console's clients, usable by
// root only, replacing a stale one.
func Listen(path string) (net.Listener, error) {
	_ = os.Remove(path)
	old := unix.Umask(0o077)
	ln, err := net.Listen("unix", path)
	unix.Umask(old)
	if err != nil {
		return nil, fmt.Errorf("console socket: %w", err)
	}
	return ln, nil
}

// DefaultEscape is the byte that ends Attach when typed: Ctrl-], as in
// xl console and telnet.
const DefaultEscape = 0x1d

// Attach relays the console served on the unix socket path: what comes
// from in goes to the guest, what the guest prints to out. It returns
// when escape is read from in (nothing after it is sent), when in ends
// and the server has nothing more to say, when the console ends (the
// domain is gone), or when ctx ends.
func Attach(ctx context.Context, path string, in io.Reader, out io.Writer, escape byte) error {
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		return fmt.Errorf("console socket %s: %w", path, err)
	}
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer stop()
	escaped := make(chan struct{})
	go func() {
		buf := make([]byte, readSize)
		for {
			n, err := in.Read(buf)
			if n > 0 {
				p := buf[:n]
				if i := bytes.IndexByte(p, escape); i >= 0 {
					c.Write(p[:i])
					close(escaped)
					c.Close()
					return
				}
				if _, err := c.Write(p); err != nil {
					return
				}
			}
			if err != nil {
				// Input ended: the output goes on until the console does.
				return
			}
		}
	}()
	_, err = io.Copy(out, c)
	select {
	case <-escaped:
		return nil
	default:
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if err != nil && !errors.Is(err, net.ErrClosed) {
		return fmt.Errorf("console: %w", err)
	}
	return nil
}

// ReadLog returns what a console log written by a logfile.File holds: the
// rotated copy (path.1) and then path, the last limit bytes of each at
// most. A log that does not exist is empty.
func ReadLog(path string, limit int64) ([]byte, error) {
	var out []byte
	for _, p := range []string{path + ".1", path} {
		b, err := readTail(p, limit)
		if err != nil {
			return nil, err
		}
		out = append(out, b...)
	}
	return out, nil
}

func readTail(path string, limit int64) ([]byte, error) {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("console log: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("console log: %w", err)
	}
	off := st.Size() - limit
	if off < 0 {
		off = 0
	}
	b, err := io.ReadAll(io.NewSectionReader(f, off, limit))
	if err != nil {
		return nil, fmt.Errorf("console log %s: %w", path, err)
	}
	return b, nil
}
