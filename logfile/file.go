// Package logfile writes logs that cannot fill a disk, whatever is logged.
//
// A File is a log file bounded in size: when a write would take it past
// its limit, the file is renamed to NAME.1 (replacing the older copy) and
// a new NAME is started, so a log uses at most twice its limit. It can
// also keep the process's standard output and error on the current file,
// so that what the Go runtime writes there itself (a panic, the goroutine
// dump of SIGQUIT) lands in the log too.
//
// A LineWriter passes the output of another process (or anything not to
// be trusted) into a log as whole lines: each clipped to a maximum length,
// with control characters replaced, and at most a fixed number of lines
// per interval, the rest counted and reported in one line.
//
// The writer owns the rotation: a process that only inherited the file's
// descriptor cannot rotate it and would grow the renamed copy for ever, so
// a child's output should come through a pipe into a LineWriter on the
// File.
package logfile

import (
	"fmt"
	"os"
	"sync"

	"golang.org/x/sys/unix"
)

// File is a log file of bounded size (see the package comment). It is
// safe for concurrent use; each Write goes to one file whole.
type File struct {
	path  string
	limit int64

	mu    sync.Mutex
	f     *os.File
	size  int64
	stdio bool // keep fds 1 and 2 on the current file
}

// Open opens (creating it, mode 0644) the log file path for appending,
// bounded to limit bytes; what it holds already counts.
func Open(path string, limit int64) (*File, error) {
	if limit <= 0 {
		return nil, fmt.Errorf("log %s: limit %d must be positive", path, limit)
	}
	l := &File{path: path, limit: limit}
	if err := l.open(); err != nil {
		return nil, err
	}
	return l, nil
}

func (l *File) open() error {
	f, err := os.OpenFile(l.path, os.O_WRONLY|os.O_CREATE|os.O_APPEND|unix.O_CLOEXEC, 0o644)
	if err != nil {
		return fmt.Errorf("open log: %w", err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return fmt.Errorf("log %s: %w", l.path, err)
	}
	l.f, l.size = f, st.Size()
	return nil
}

// Path is the file's name.
func (l *File) Path() string { return l.path }

// Write appends p, rotating first when p would take the file past its
// limit. A p longer than the limit is cut to it.
func (l *File) Write(p []byte) (int, error) {
	n := len(p)
	if int64(len(p)) > l.limit {
		p = p[:l.limit]
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.f == nil {
		return 0, os.ErrClosed
	}
	if l.size > 0 && l.size+int64(len(p)) > l.limit {
		l.rotate()
	}
	w, err := l.f.Write(p)
	l.size += int64(w)
	if err != nil {
		return w, err
	}
	return n, nil
}

// rotate renames the file to NAME.1 and starts a new one. When that
// fails it empties the file instead: the bound holds either way.
func (l *File) rotate() {
	old := l.f
	if err := os.Rename(l.path, l.path+".1"); err == nil {
		if err := l.open(); err == nil {
			old.Close()
			if l.stdio {
				l.dupStdio()
			}
			n, _ := fmt.Fprintf(l.f, "(log rotated: older lines are in %s.1)\n", l.path)
			l.size += int64(n)
			return
		}
		l.f = old
	}
	if err := l.f.Truncate(0); err == nil {
		l.size = 0
	}
}

// CaptureStdio points the process's standard output and error at the
// current file, now and after every rotation.
func (l *File) CaptureStdio() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.f == nil {
		return os.ErrClosed
	}
	l.stdio = true
	return l.dupStdio()
}

func (l *File) dupStdio() error {
	for _, fd := range []int{1, 2} {
		if err := unix.Dup3(int(l.f.Fd()), fd, 0); err != nil {
			return fmt.Errorf("log %s: standard output and error: %w", l.path, err)
		}
	}
	return nil
}

// Close closes the file (standard output and error, if captured, stay on
// it).
func (l *File) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.f == nil {
		return os.ErrClosed
	}
	err := l.f.Close()
	l.f = nil
	return err
}
