// Package termtext makes text that a guest or a stubdomain chose safe to
// show on a terminal.
//
// A terminal acts on what it is sent: escape sequences move the cursor,
// recolour or retitle the window and, on some terminals, answer back as if
// typed; a carriage return or backspace overwrites what was printed before
// it; bidirectional overrides (U+202A-U+202E, U+2066-U+2069) reorder text
// so that it reads differently from what it is. Anything qvm prints that a
// VM, its stubdomain or its QEMU could have chosen (a QMP error, a value
// from a xenstore path the guest can write, console bytes, the output of
// qvm-run) goes through this package first. Still to come: qvm-run's
// output and qvm-console's bytes (Writer, when the output is a terminal,
// as Qubes filters escapes by default), names and descriptions a VM
// reports for the devices it offers (qvm-device/qvm-usb from sys-usb),
// and features a VM requests.
//
// Line is for one value inside a line (a path, a name, an error
// description), and Lines for a message of several lines: every unsafe
// rune is escaped visibly (\x1b, \u202e), so the reader sees that
// something was there. Text and Writer are for text
// and streams (console output, command output): newlines, tabs and CRLF
// line ends stay, escape sequences are dropped whole, and every other
// unsafe rune or byte becomes U+FFFD.
//
// Unsafe are: the C0 controls (U+0000-U+001F), DEL (U+007F), the C1
// controls (U+0080-U+009F, which include the 8-bit CSI), the bidirectional
// controls U+061C, U+200E, U+200F, U+202A-U+202E and U+2066-U+2069, the
// line and paragraph separators U+2028 and U+2029, and bytes that are not
// valid UTF-8.
package termtext

import (
	"fmt"
	"io"
	"strings"
	"unicode/utf8"
)

// Unsafe reports whether r must not reach a terminal as it is (see the
// package comment; Text and Writer let '\n' and '\t' through).
func Unsafe(r rune) bool {
	switch {
	case r < 0x20, r == 0x7f, r >= 0x80 && r <= 0x9f:
		return true
	case r == 0x061c, r == 0x200e, r == 0x200f, r >= 0x2028 && r <= 0x202e, r >= 0x2066 && r <= 0x2069:
		return true
	}
	return r == utf8.RuneError
}

// Line returns s with every unsafe rune escaped: C0, DEL and invalid
// bytes as \xNN, other runes as \uNNNN. Backslashes are left as they are,
// so the result is for reading, not for parsing back.
func Line(s string) string {
	if safeLine(s) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && n <= 1:
			fmt.Fprintf(&b, `\x%02x`, s[i])
		case r < 0x80 && Unsafe(r):
			fmt.Fprintf(&b, `\x%02x`, r)
		case Unsafe(r):
			fmt.Fprintf(&b, `\u%04x`, r)
		default:
			b.WriteString(s[i : i+n])
		}
		i += n
	}
	return b.String()
}

func safeLine(s string) bool {
	for _, r := range s {
		// An invalid byte decodes as RuneError, which is unsafe; a
		// literal U+FFFD in valid UTF-8 is escaped too (Line cannot tell
		// the two apart cheaply, and it is rare).
		if Unsafe(r) {
			return false
		}
	}
	return true
}

// Lines is Line for text of several lines (an error message): the
// newlines stay, everything else unsafe is escaped.
func Lines(s string) string {
	if !strings.Contains(s, "\n") {
		return Line(s)
	}
	parts := strings.Split(s, "\n")
	for i, p := range parts {
		parts[i] = Line(p)
	}
	return strings.Join(parts, "\n")
}

// Cut returns Line(s) after cutting s to at most max bytes (at a rune
// boundary), with "..." appended when it was cut: for a value from a
// peer that could be long.
func Cut(s string, max int) string {
	if len(s) <= max {
		return Line(s)
	}
	end := max
	for end > 0 && !utf8.RuneStart(s[end]) {
		end--
	}
	return Line(s[:end]) + "..."
}

// Text returns s made safe as Writer makes it: newlines, tabs and CRLF
// stay, escape sequences go, other unsafe runes and invalid bytes become
// U+FFFD.
func Text(s string) string {
	var b strings.Builder
	w := NewWriter(&b)
	io.WriteString(w, s)
	w.Flush()
	return b.String()
}

// The states of Writer's escape sequence parser (after ECMA-48).
const (
	ground   = iota
	escape   // after ESC
	escInter // ESC and intermediates (0x20-0x2f) until a final byte
	csi      // ESC [ or C1 CSI: parameters until a final byte 0x40-0x7e
	str      // ESC ] P X ^ _ or their C1 forms: a string until BEL or ST
	strEsc   // ESC inside a string: ST is ESC \
)

// maxString bounds the runes an escape string (OSC, DCS, ...) swallows:
// past it, the rest shows as text (made safe), so that output which only
// happens to contain ESC ] is not hidden to its end.
const maxString = 4096

// replacement is what Writer writes for an unsafe rune.
const replacement = "\uFFFD"

// Writer filters a stream on its way to a terminal (see Text). A UTF-8
// sequence, a CRLF or an escape sequence that one Write splits from the
// next is handled as if it came in one piece; the Writer holds at most
// three bytes between calls. Flush writes what it holds; call it when the
// stream ends. A Writer is not for concurrent use.
type Writer struct {
	w       io.Writer
	state   int
	strLen  int    // runes swallowed in state str
	partial []byte // the start of a UTF-8 sequence, at most 3 bytes
	cr      bool   // a CR is held until we know whether LF follows
	out     []byte
}

// NewWriter returns a Writer that writes the safe form of what it is
// given to w.
func NewWriter(w io.Writer) *Writer {
	return &Writer{w: w, partial: make([]byte, 0, utf8.UTFMax)}
}

// Write filters p and writes the result. It reports len(p) on success,
// whatever the length of the safe form.
func (w *Writer) Write(p []byte) (int, error) {
	w.out = w.out[:0]
	i := 0
	if held := len(w.partial); held > 0 {
		// Finish the runes that start in the bytes held from the last
		// Write: they and up to 4 more bytes hold all of them.
		var buf [2 * utf8.UTFMax]byte
		tmp := append(append(buf[:0], w.partial...), p[:min(len(p), utf8.UTFMax)]...)
		w.partial = w.partial[:0]
		j := 0
		for j < held {
			if !utf8.FullRune(tmp[j:]) {
				// p was too short to finish it: hold all of it.
				w.partial = append(w.partial, tmp[j:]...)
				return len(p), nil
			}
			r, n := utf8.DecodeRune(tmp[j:])
			w.rune(r)
			j += n
		}
		i = j - held
	}
	for i < len(p) {
		if c := p[i]; c < utf8.RuneSelf {
			w.rune(rune(c))
			i++
			continue
		}
		if !utf8.FullRune(p[i:]) {
			w.partial = append(w.partial, p[i:]...)
			break
		}
		r, n := utf8.DecodeRune(p[i:])
		w.rune(r)
		i += n
	}
	if len(w.out) > 0 {
		if _, err := w.w.Write(w.out); err != nil {
			return 0, err
		}
	}
	return len(p), nil
}

// Flush writes what the Writer holds: an unfinished UTF-8 sequence
// becomes U+FFFD (one per byte, as in the middle of a stream), a CR without LF is dropped, and an unfinished escape
// sequence is forgotten.
func (w *Writer) Flush() error {
	w.out = w.out[:0]
	for range w.partial {
		w.rune(utf8.RuneError)
	}
	w.partial = w.partial[:0]
	w.cr = false
	w.state = ground
	if len(w.out) == 0 {
		return nil
	}
	_, err := w.w.Write(w.out)
	return err
}

// rune handles one decoded rune (utf8.RuneError for an invalid byte).
func (w *Writer) rune(r rune) {
	if w.cr {
		// Only a CR that ends a line (CRLF) is kept: a lone one would
		// let later text overwrite earlier text.
		w.cr = false
		if r == '\n' {
			w.out = append(w.out, '\r', '\n')
			return
		}
	}
	switch w.state {
	case escape, escInter:
		switch {
		case w.state == escape && r == '[':
			w.state = csi
		case w.state == escape && (r == ']' || r == 'P' || r == 'X' || r == '^' || r == '_'):
			w.state, w.strLen = str, 0
		case r >= 0x20 && r <= 0x2f:
			w.state = escInter
		case r >= 0x30 && r <= 0x7e:
			// The final byte of ESC c, ESC 7, ESC ( B, ...
			w.state = ground
		default:
			// Not part of the sequence: it ends, and r counts.
			w.state = ground
			w.rune(r)
		}
		return
	case csi:
		switch {
		case r >= 0x40 && r <= 0x7e:
			w.state = ground
		case r >= 0x20 && r < 0x40:
		default:
			w.state = ground
			w.rune(r)
		}
		return
	case str, strEsc:
		switch {
		case r == 0x07 || r == 0x9c || w.state == strEsc && r == '\\':
			w.state = ground
		case r == 0x1b:
			w.state = strEsc
		default:
			w.state = str
		}
		if w.strLen++; w.strLen > maxString && w.state != ground {
			w.state = ground
		}
		return
	}
	switch {
	case r == 0x1b:
		w.state = escape
	case r == 0x9b:
		w.state = csi
	case r == 0x90 || r == 0x98 || r == 0x9d || r == 0x9e || r == 0x9f:
		w.state, w.strLen = str, 0
	case r == '\r':
		w.cr = true
	case r == '\n' || r == '\t':
		w.out = append(w.out, byte(r))
	case Unsafe(r):
		w.out = append(w.out, replacement...)
	default:
		w.out = utf8.AppendRune(w.out, r)
	}
}
