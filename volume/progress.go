package volume

import (
	"fmt"
	"io"
	"path/filepath"
	"time"

	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"
)

// Option tunes Copy, CopyFrom, MoveFrom and Provision.
type Option func(*options)

// ProgressFunc is told the bytes of data copied so far and the total; it is
// called from the copying goroutine, at least once per 32 MiB and once at
// the end (done == total).
type ProgressFunc func(done, total int64)

type options struct {
	progressFn ProgressFunc
	barOut     io.Writer
	label      string

	// Test knobs (see export_test.go).
	noReflink bool // skip FICLONE
	readWrite bool // skip copy_file_range
	namedTemp bool // skip O_TMPFILE
}

func newOptions(opts []Option) *options {
	o := &options{}
	for _, opt := range opts {
		opt(o)
	}
	return o
}

// WithProgress draws a progress bar on w while copying, when w is a
// terminal (an *os.File on a tty, e.g. os.Stderr of an interactive shell).
// On anything else it prints nothing, so logs and pipes stay clean.
func WithProgress(w io.Writer) Option {
	return func(o *options) {
		if isTerminal(w) {
			o.barOut = w
		}
	}
}

// WithProgressFunc calls fn as data is copied.
func WithProgressFunc(fn ProgressFunc) Option {
	return func(o *options) { o.progressFn = fn }
}

// WithLabel names the copy on the progress bar (default: the destination
// file name).
func WithLabel(label string) Option {
	return func(o *options) { o.label = label }
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(interface{ Fd() uintptr })
	return ok && term.IsTerminal(int(f.Fd()))
}

func (o *options) wantsProgress() bool { return o.progressFn != nil || o.barOut != nil }

// progress reports one copy to the caller's function and bar. A nil
// *progress reports nothing.
type progress struct {
	fn          ProgressFunc
	bar         *progressbar.ProgressBar
	done, total int64
}

func (o *options) startProgress(total int64, dst string) *progress {
	if !o.wantsProgress() {
		return nil
	}
	p := &progress{fn: o.progressFn, total: total}
	if o.barOut != nil && total > 0 {
		label := o.label
		if label == "" {
			label = filepath.Base(dst)
		}
		out := o.barOut
		p.bar = progressbar.NewOptions64(total,
			progressbar.OptionSetWriter(out),
			progressbar.OptionSetDescription(label),
			progressbar.OptionShowBytes(true),
			progressbar.OptionUseIECUnits(true),
			progressbar.OptionSetWidth(30),
			progressbar.OptionThrottle(100*time.Millisecond),
			progressbar.OptionSetPredictTime(true),
			progressbar.OptionOnCompletion(func() { fmt.Fprintln(out) }),
		)
	}
	return p
}

func (p *progress) add(n int64) {
	if p == nil || n == 0 {
		return
	}
	p.done += n
	if p.bar != nil {
		p.bar.Add64(n)
	}
	if p.fn != nil {
		p.fn(p.done, p.total)
	}
}

// finish completes the bar and tells the function the final count, also
// when nothing was copied (an image that is all holes).
func (p *progress) finish() {
	if p == nil {
		return
	}
	if p.bar != nil {
		p.bar.Finish()
	}
	if p.fn != nil && p.done == 0 {
		p.fn(p.done, p.total)
	}
}

// abort leaves the bar where it stopped and ends its line.
func (p *progress) abort() {
	if p == nil || p.bar == nil {
		return
	}
	p.bar.Exit() // runs OnCompletion: the newline
}
