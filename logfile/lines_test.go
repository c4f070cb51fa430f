package logfile

import (
	"bytes"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
	"unicode"
	"unicode/utf8"
)

func TestLineWriterLines(t *testing.T) {
	var b bytes.Buffer
	w := NewLineWriter(&b, "child: ", Limits{MaxLine: 20, Burst: 4, Interval: time.Hour})
	// Lines arrive in pieces; one is too long, one has control
	// characters and invalid UTF-8, the last has no newline.
	for _, part := range []string{"first li", "ne\nsecond line that is far too long", " to keep\n",
		"esc \x1b[31mred\x07 \xc2\x9b\xff ok\tdone\n", "fou\trth\nfifth\nsixth\nseventh"} {
		if n, err := w.Write([]byte(part)); n != len(part) || err != nil {
			t.Fatalf("Write(%q) = %d, %v", part, n, err)
		}
	}
	w.Close()
	want := "child: first line\n" +
		"child: second line that is  [line cut]\n" +
		"child: esc ?[31mred? ?? ok [line cut]\n" +
		"child: fou\trth\n" +
		"child: [3 lines dropped: over 4 lines in 0s]\n"
	if got := b.String(); got != want {
		t.Errorf("got:\n%s\nwant:\n%s", got, want)
	}
}

// TestLineWriterBoundsAChild: a real child floods its output (200000
// lines, 1.3 MB) through a pipe into a LineWriter on a File: the log
// keeps its budget of lines and says how many it dropped.
func TestLineWriterBoundsAChild(t *testing.T) {
	path := filepath.Join(t.TempDir(), "vm.log")
	l, err := Open(path, 64<<10)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	w := NewLineWriter(l, "seq: ", Limits{Burst: 50, Interval: time.Hour})
	cmd := exec.Command("seq", "1", "200000")
	cmd.Stdout = w
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	w.Close()
	b, err := readFile(path)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(b, "\n"), "\n")
	if len(lines) != 51 || lines[0] != "seq: 1" || lines[49] != "seq: 50" ||
		!strings.HasPrefix(lines[50], fmt.Sprintf("seq: [%d lines dropped: over 50 lines in ", 200000-50)) {
		t.Errorf("%d lines:\n%s", len(lines), b)
	}
}

// FuzzLineWriter: whatever a child writes, in whatever pieces, every line
// passed on is whole, within its length, free of control characters, and
// there are at most Burst of them plus the report.
func FuzzLineWriter(f *testing.F) {
	f.Add([]byte("a\nb\n"), uint8(3))
	f.Add([]byte("\x1b[2J\x9b\xff\xfe\r\n\x00\x7f long line that goes on and on\n"), uint8(1))
	f.Add(bytes.Repeat([]byte("x"), 5000), uint8(7))
	f.Fuzz(func(t *testing.T, data []byte, split uint8) {
		var b bytes.Buffer
		const maxLine, burst = 40, 5
		w := NewLineWriter(&b, "p: ", Limits{MaxLine: maxLine, Burst: burst, Interval: time.Hour})
		step := int(split) + 1
		for i := 0; i < len(data); i += step {
			w.Write(data[i:min(i+step, len(data))])
		}
		w.Close()
		out := b.String()
		if out != "" && !strings.HasSuffix(out, "\n") {
			t.Fatalf("output does not end a line: %q", out)
		}
		lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
		if out != "" && len(lines) > burst+1 {
			t.Fatalf("%d lines, budget %d", len(lines), burst)
		}
		for _, l := range lines {
			if out == "" {
				break
			}
			if !strings.HasPrefix(l, "p: ") {
				t.Fatalf("line without prefix: %q", l)
			}
			if !utf8.ValidString(l) {
				t.Fatalf("invalid UTF-8: %q", l)
			}
			for _, r := range l {
				if r != '\t' && unicode.IsControl(r) {
					t.Fatalf("control character %U in %q", r, l)
				}
			}
			// Each byte becomes at most one of its own or a '?'.
			if !strings.Contains(l, "lines dropped") && len(l) > len("p: ")+maxLine+len(" [line cut]") {
				t.Fatalf("line of %d bytes: %q", len(l), l)
			}
		}
	})
}
