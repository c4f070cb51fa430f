package termtext

import (
	"bytes"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestLine(t *testing.T) {
	for in, want := range map[string]string{
		"/var/lib/iso/disc 2.iso":           "/var/lib/iso/disc 2.iso",
		"débian-12 ✓.iso":                   "débian-12 ✓.iso",
		"a\x1b[2J\x1b]0;pwned\x07b":         `a\x1b[2J\x1b]0;pwned\x07b`,
		"line\nnext\ttab\rover":             `line\x0anext\x09tab\x0dover`,
		"del\x7f":                           `del\x7f`,
		"c1 \u009b31m":                      `c1 \u009b31m`,
		"bad \xff\xfe utf8 \xe2\x82":        `bad \xff\xfe utf8 \xe2\x82`,
		"evil\u202egpj.exe":                 `evil\u202egpj.exe`,
		"\u2066isolate\u2069 \u200f \u061c": `\u2066isolate\u2069 \u200f \u061c`,
		"sep\u2028here":                     `sep\u2028here`,
		"nul\x00":                           `nul\x00`,
	} {
		if got := Line(in); got != want {
			t.Errorf("Line(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestLines(t *testing.T) {
	if got := Lines("one\x1b[2J\ntwo\u202e\n"); got != `one\x1b[2J`+"\n"+`two\u202e`+"\n" {
		t.Errorf("Lines: %q", got)
	}
}

func TestCut(t *testing.T) {
	if got := Cut("short", 10); got != "short" {
		t.Errorf("Cut short: %q", got)
	}
	if got := Cut("ééé", 3); got != "é..." {
		t.Errorf("Cut at a rune boundary: %q", got)
	}
	if got := Cut("\x1b\x1b\x1b", 2); got != `\x1b\x1b...` {
		t.Errorf("Cut escapes what it keeps: %q", got)
	}
}

func TestText(t *testing.T) {
	for in, want := range map[string]string{
		"plain text\n\tindented\n":                  "plain text\n\tindented\n",
		"boot: ok\r\nnext\r\n":                      "boot: ok\r\nnext\r\n",
		"\x1b[1;31mred\x1b[0m done":                 "red done",
		"\x1b]0;title\x07after":                     "after",
		"\x1b]8;;http://x\x1b\\link\x1b]8;;\x1b\\":  "link",
		"\x1bPdcs payload\x1b\\x":                   "x",
		"\x1b(Bcharset \x1bc reset \x1b7save":       "charset  reset save",
		"rm -rf ~\rharmless":                        "rm -rf ~harmless",
		"bell\x07 bs\x08 nul\x00":                   "bell\uFFFD bs\uFFFD nul\uFFFD",
		"c1 csi \u009b2J gone, dcs \u0090x\u009c y": "c1 csi  gone, dcs  y",
		"bad \xff and cut \xe2\x82":                 "bad \uFFFD and cut \uFFFD\uFFFD",
		"bidi \u202eexe.txt":                        "bidi \uFFFDexe.txt",
		"esc then newline \x1b\nx":                  "esc then newline \nx",
		"csi broken by newline \x1b[12\nx":          "csi broken by newline \nx",
		"unfinished \x1b[":                          "unfinished ",
		"cr at end\r":                               "cr at end",
	} {
		if got := Text(in); got != want {
			t.Errorf("Text(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestWriterSplits: whatever the cut between Writes, the output is the
// one of the whole stream.
func TestWriterSplits(t *testing.T) {
	in := "é✓\U0001F600 \x1b[31mred\x1b[0m\r\n\xe2\x82 \u202e\x1b]0;t\x07end\r"
	want := Text(in)
	for cut := 0; cut <= len(in); cut++ {
		for cut2 := cut; cut2 <= len(in); cut2++ {
			var b bytes.Buffer
			w := NewWriter(&b)
			for _, part := range []string{in[:cut], in[cut:cut2], in[cut2:]} {
				if n, err := w.Write([]byte(part)); n != len(part) || err != nil {
					t.Fatalf("Write(%q) = %d, %v", part, n, err)
				}
			}
			w.Flush()
			if b.String() != want {
				t.Fatalf("cut at %d, %d: %q, want %q", cut, cut2, b.String(), want)
			}
		}
	}
	// Byte by byte, a multi-byte rune reaches the terminal whole.
	var b bytes.Buffer
	w := NewWriter(&b)
	for _, c := range []byte("✓") {
		w.Write([]byte{c})
		if b.Len() != 0 && b.String() != "✓" {
			t.Fatalf("half a rune written: %q", b.String())
		}
	}
	if b.String() != "✓" {
		t.Fatalf("got %q", b.String())
	}
}

// TestWriterStringBound: an escape string that never ends stops hiding
// the stream after maxString runes.
func TestWriterStringBound(t *testing.T) {
	got := Text("\x1b]" + strings.Repeat("a", maxString+10))
	if got != strings.Repeat("a", 9) {
		t.Fatalf("after an endless OSC: %d bytes %q", len(got), got)
	}
}

// checkSafe fails unless s is valid UTF-8 without unsafe runes, except
// what allow lets through.
func checkSafe(t *testing.T, in, s string, allow func(i int, r rune) bool) {
	t.Helper()
	if !utf8.ValidString(s) {
		t.Fatalf("%q -> %q: invalid UTF-8", in, s)
	}
	for i, r := range s {
		if r != utf8.RuneError && Unsafe(r) && !allow(i, r) {
			t.Fatalf("%q -> %q: unsafe %U at %d", in, s, r, i)
		}
	}
	if strings.Contains(s, "\x1b") || strings.Contains(s, "\u009b") {
		t.Fatalf("%q -> %q: an escape got through", in, s)
	}
}

func FuzzLine(f *testing.F) {
	for _, s := range []string{"", "a\x1b[2Jb", "\xff", "\u202e", "é", "\r\n"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		out := Line(in)
		checkSafe(t, in, out, func(int, rune) bool { return false })
		if safeLine(in) && out != in {
			t.Fatalf("safe %q changed to %q", in, out)
		}
	})
}

func FuzzWriter(f *testing.F) {
	for _, s := range []string{"", "a\x1b[2Jb", "\xff", "\u202e", "é✓", "x\r\ny\r", "\x1b]0;t\x07", "\u009b1m"} {
		f.Add(s, uint8(1))
	}
	f.Fuzz(func(t *testing.T, in string, chunk uint8) {
		whole := Text(in)
		checkSafe(t, in, whole, func(i int, r rune) bool {
			return r == '\n' || r == '\t' || r == '\r' && strings.HasPrefix(whole[i:], "\r\n")
		})
		// Written in chunks, the stream comes out the same.
		n := int(chunk)%7 + 1
		var b bytes.Buffer
		w := NewWriter(&b)
		for s := in; s != ""; {
			k := min(n, len(s))
			w.Write([]byte(s[:k]))
			s = s[k:]
		}
		w.Flush()
		if b.String() != whole {
			t.Fatalf("%q in chunks of %d: %q, whole: %q", in, n, b.String(), whole)
		}
	})
}
