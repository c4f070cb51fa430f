package qrexec

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"sync"
	"sync/atomic"
	"syscall"
)

// lockedWriter serializes whole messages from several goroutines.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) send(t Type, data []byte) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return WriteMessage(l.w, t, data)
}

// pump sends what r yields as messages of type t, at most MaxDataChunk
// bytes each, then an empty one (end of stream).
func (l *lockedWriter) pump(t Type, r io.Reader) error {
	buf := make([]byte, MaxDataChunk)
	for {
		n, err := r.Read(buf)
		if n > 0 {
			if werr := l.send(t, buf[:n]); werr != nil {
				return werr
			}
		}
		if err != nil {
			if errors.Is(err, io.EOF) {
				return l.send(t, nil)
			}
			// The stream failed: end it for the peer all the same.
			return errors.Join(err, l.send(t, nil))
		}
	}
}

// Run is the caller's side of a data channel (dom0's, for a command it
// asked a VM to run): after HELLO it sends stdin (nil: none) as
// DATA_STDIN, writes DATA_STDOUT to stdout and DATA_STDERR to stderr, and
// returns the command's exit code from DATA_EXIT_CODE. A write error on
// stdout or stderr (a closed pipe) drops the rest of that stream but keeps
// the channel going to the exit code. Any other message, or a stream that
// ends before the exit code, is an error. ctx ends the wait: the caller
// closes rw to unblock reads (Run closes nothing).
func Run(ctx context.Context, rw io.ReadWriter, stdin io.Reader, stdout, stderr io.Writer) (int, error) {
	if _, err := SayHello(rw); err != nil {
		return 0, err
	}
	lw := &lockedWriter{w: rw}
	stdinDone := make(chan error, 1)
	go func() {
		if stdin == nil {
			stdinDone <- lw.send(DataStdin, nil)
			return
		}
		stdinDone <- lw.pump(DataStdin, stdin)
	}()
	outs := map[Type]io.Writer{DataStdout: stdout, DataStderr: stderr}
	for {
		if err := ctx.Err(); err != nil {
			return 0, err
		}
		m, err := ReadMessage(rw, MaxDataChunk)
		if err != nil {
			if errors.Is(err, io.EOF) {
				err = fmt.Errorf("%w: the channel closed before the exit code", ErrProtocol)
			}
			return 0, err
		}
		switch m.Type {
		case DataStdout, DataStderr:
			w := outs[m.Type]
			if len(m.Data) == 0 || w == nil {
				continue
			}
			if _, err := w.Write(m.Data); err != nil {
				outs[m.Type] = nil
			}
		case DataExitCode:
			return ParseExitCode(m.Data)
		default:
			return 0, fmt.Errorf("%w: %v on a data channel", ErrProtocol, m.Type)
		}
	}
}

// Serve is the agent's side of a data channel for a process: after HELLO
// it starts cmd with its standard streams on the channel, and sends its
// exit code once it exited and its output ended. A cmd that cannot start
// gets a line on stderr and exit code ExitNotFound. cmd's Stdin, Stdout and
// Stderr must be nil. Cancelling ctx kills the process.
func Serve(ctx context.Context, rw io.ReadWriter, cmd *exec.Cmd) error {
	if _, err := SayHello(rw); err != nil {
		return err
	}
	return ServeAfterHello(ctx, rw, cmd, nil)
}

// ServeAfterHello is Serve on a channel whose HELLOs were exchanged and
// some of whose input (first) was already read: it goes to the process
// first.
func ServeAfterHello(ctx context.Context, rw io.ReadWriter, cmd *exec.Cmd, first []byte) error {
	lw := &lockedWriter{w: rw}
	r := io.Reader(rw)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		msg := fmt.Sprintf("qrexec-agent: %v\n", err)
		return errors.Join(lw.send(DataStderr, []byte(msg)), lw.send(DataStdout, nil),
			lw.send(DataStderr, nil), lw.send(DataExitCode, ExitCodeData(ExitNotFound)))
	}
	kill := func() {
		// The whole group when the process leads one (its children
		// too), else the process.
		if cmd.SysProcAttr != nil && cmd.SysProcAttr.Setsid {
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		}
		_ = cmd.Process.Kill()
	}
	var exited atomic.Bool
	stop := context.AfterFunc(ctx, kill)
	defer stop()
	// Input: until its end (the rest is read and dropped), then the
	// channel is still read: when the caller goes away (the channel
	// fails or ends) while the process runs, the process is killed.
	go func() {
		open := true
		closeIn := func() {
			if open {
				stdin.Close()
				open = false
			}
		}
		defer closeIn()
		if len(first) > 0 {
			if _, err := stdin.Write(first); err != nil {
				closeIn()
			}
		}
		for {
			m, err := ReadMessage(r, MaxDataChunk)
			if err != nil {
				if !exited.Load() {
					kill()
				}
				return
			}
			switch {
			case m.Type != DataStdin || len(m.Data) == 0:
				closeIn()
			case open:
				if _, err := stdin.Write(m.Data); err != nil {
					closeIn()
				}
			}
		}
	}()
	var wg sync.WaitGroup
	errs := make([]error, 2)
	for i, s := range []struct {
		t Type
		r io.Reader
	}{{DataStdout, stdout}, {DataStderr, stderr}} {
		wg.Go(func() { errs[i] = lw.pump(s.t, s.r) })
	}
	wg.Wait()
	code := 0
	err = cmd.Wait()
	exited.Store(true)
	if err != nil {
		var ee *exec.ExitError
		if !errors.As(err, &ee) {
			return errors.Join(append(errs, err)...)
		}
		code = ee.ExitCode()
		if code < 0 { // killed by a signal: as a shell reports it
			code = 128 + signalOf(ee)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	return lw.send(DataExitCode, ExitCodeData(code))
}
