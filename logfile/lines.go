package logfile

import (
	"bytes"
	"fmt"
	"io"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"
)

// Limits bound what a LineWriter passes on.
type Limits struct {
	// MaxLine is the longest line passed on, in bytes; longer lines are
	// cut there and marked. Zero means 1024.
	MaxLine int
	// Burst is how many lines pass in each Interval; the rest are counted
	// and reported in one line when the next line arrives after the
	// interval, and at Close. Zero means 300.
	Burst int
	// Interval is the budget's period. Zero means a minute.
	Interval time.Duration
}

func (l Limits) withDefaults() Limits {
	if l.MaxLine <= 0 {
		l.MaxLine = 1024
	}
	if l.Burst <= 0 {
		l.Burst = 300
	}
	if l.Interval <= 0 {
		l.Interval = time.Minute
	}
	return l
}

// LineWriter passes what is written to it on to a log as whole,
// sanitized, rate-limited lines (see the package comment). Its Write
// never fails, so that the process whose output it carries never blocks
// or dies on its log; the log's own errors are dropped. It is safe for
// concurrent use.
type LineWriter struct {
	dst    io.Writer
	prefix string
	lim    Limits

	mu      sync.Mutex
	partial []byte // the line being received, at most MaxLine bytes
	cut     bool   // the line being received was longer than MaxLine
	start   time.Time
	passed  int    // lines passed on in this interval
	dropped uint64 // lines dropped in this interval
	out     []byte // a line being written; reused
}

// NewLineWriter returns a LineWriter onto dst that starts each line with
// prefix (which should name the source).
func NewLineWriter(dst io.Writer, prefix string, lim Limits) *LineWriter {
	lim = lim.withDefaults()
	return &LineWriter{dst: dst, prefix: prefix, lim: lim, start: time.Now()}
}

// Write takes any part of the output; complete lines go on at once.
func (w *LineWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	n := len(p)
	for len(p) > 0 {
		i := bytes.IndexByte(p, '\n')
		chunk := p
		if i >= 0 {
			chunk = p[:i]
		}
		if room := w.lim.MaxLine - len(w.partial); len(chunk) > room {
			chunk, w.cut = chunk[:room], true
		}
		w.partial = append(w.partial, chunk...)
		if i < 0 {
			break
		}
		w.line()
		p = p[i+1:]
	}
	return n, nil
}

// line passes on the line received, or counts it.
func (w *LineWriter) line() {
	defer func() { w.partial, w.cut = w.partial[:0], false }()
	now := time.Now()
	if now.Sub(w.start) >= w.lim.Interval {
		w.report(now)
	}
	if w.passed >= w.lim.Burst {
		w.dropped++
		return
	}
	w.passed++
	b := append(w.out[:0], w.prefix...)
	b = sanitize(b, w.partial)
	if w.cut {
		b = append(b, " [line cut]"...)
	}
	b = append(b, '\n')
	w.out = b
	_, _ = w.dst.Write(b)
}

// report writes how many lines the interval dropped, and starts the next.
func (w *LineWriter) report(now time.Time) {
	if w.dropped > 0 {
		fmt.Fprintf(w.dst, "%s[%d lines dropped: over %d lines in %s]\n", w.prefix, w.dropped, w.lim.Burst, now.Sub(w.start).Round(time.Second))
	}
	w.start, w.passed, w.dropped = now, 0, 0
}

// Close passes on a last line without its newline, and reports lines
// dropped.
func (w *LineWriter) Close() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.partial) > 0 || w.cut {
		w.line()
	}
	w.report(time.Now())
	return nil
}

// sanitize appends s to b with control characters (C0, DEL, C1, except
// tab) and invalid UTF-8 replaced by '?', so that nothing in a log can
// drive the terminal it is shown on.
func sanitize(b, s []byte) []byte {
	for len(s) > 0 {
		r, size := utf8.DecodeRune(s)
		switch {
		case r == utf8.RuneError && size <= 1:
			b = append(b, '?')
		case r != '\t' && unicode.IsControl(r):
			b = append(b, '?')
		default:
			b = append(b, s[:size]...)
		}
		s = s[size:]
	}
	return b
}
