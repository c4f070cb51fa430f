package logfile

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func size(t *testing.T, path string) int64 {
	t.Helper()
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return st.Size()
}

// TestFileRotates writes many lines to a small log: neither file passes
// the limit, the newest lines are in the log, the ones before them in
// NAME.1, and nothing else is left.
func TestFileRotates(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "vm.log")
	if err := os.WriteFile(path, bytes.Repeat([]byte("old line\n"), 50), 0o644); err != nil { // 450 bytes already there
		t.Fatal(err)
	}
	const limit = 1000
	l, err := Open(path, limit)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	for i := range 1000 {
		if _, err := fmt.Fprintf(l, "line %04d of the log\n", i); err != nil {
			t.Fatal(err)
		}
	}
	for _, p := range []string{path, path + ".1"} {
		if n := size(t, p); n > limit {
			t.Errorf("%s: %d bytes, limit %d", p, n, limit)
		}
	}
	cur, _ := os.ReadFile(path)
	prev, _ := os.ReadFile(path + ".1")
	if !strings.HasSuffix(string(cur), "line 0999 of the log\n") || !strings.HasPrefix(string(cur), "(log rotated") {
		t.Errorf("current log:\n%s", cur)
	}
	// The two files hold a run of the latest lines, none cut.
	lines := strings.Split(strings.TrimSuffix(string(prev)+string(cur), "\n"), "\n")
	want := 999
	for i := len(lines) - 1; i >= 0; i-- {
		if strings.HasPrefix(lines[i], "(log rotated") {
			continue
		}
		if lines[i] != fmt.Sprintf("line %04d of the log", want) {
			t.Fatalf("line %d is %q, want line %04d", i, lines[i], want)
		}
		want--
	}
	if kept := 999 - want; kept < limit/len("line 0000 of the log\n") {
		t.Errorf("only %d lines kept", kept)
	}
	if m, _ := filepath.Glob(filepath.Join(dir, "*")); len(m) != 2 {
		t.Errorf("files left: %v", m)
	}
}

// TestFileLongWriteIsCut: one write larger than the limit keeps the
// bound.
func TestFileLongWriteIsCut(t *testing.T) {
	path := filepath.Join(t.TempDir(), "vm.log")
	l, err := Open(path, 100)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if n, err := l.Write(bytes.Repeat([]byte("x"), 5000)); n != 5000 || err != nil {
		t.Errorf("Write = %d, %v; want 5000, nil", n, err)
	}
	if n := size(t, path); n > 100 {
		t.Errorf("%d bytes, limit 100", n)
	}
}

// TestFileBoundWhenRotationFails: when NAME.1 cannot be replaced (here a
// directory is in its way) the log is emptied instead of growing.
func TestFileBoundWhenRotationFails(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "vm.log")
	if err := os.MkdirAll(filepath.Join(path+".1", "busy"), 0o755); err != nil {
		t.Fatal(err)
	}
	l, err := Open(path, 500)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	for i := range 500 {
		fmt.Fprintf(l, "line %d\n", i)
	}
	if n := size(t, path); n > 500 {
		t.Errorf("%d bytes, limit 500", n)
	}
	if b, _ := os.ReadFile(path); !strings.HasSuffix(string(b), "line 499\n") {
		t.Errorf("log lacks the last line:\n%s", b)
	}
}

const stdioChild = "QVM_LOGFILE_TEST_STDIO"

func TestMain(m *testing.M) {
	if path := os.Getenv(stdioChild); path != "" {
		stdioMain(path)
		return
	}
	os.Exit(m.Run())
}

// stdioMain is the child of TestCaptureStdio: it logs past a rotation,
// then writes to its standard error directly, then panics.
func stdioMain(path string) {
	l, err := Open(path, 300)
	if err != nil {
		fmt.Println(err)
		os.Exit(2)
	}
	if err := l.CaptureStdio(); err != nil {
		fmt.Println(err)
		os.Exit(2)
	}
	for i := range 40 {
		fmt.Fprintf(l, "logged line %d\n", i)
	}
	fmt.Fprintln(os.Stderr, "written to stderr")
	panic("the child panics")
}

// TestCaptureStdio: what a process writes to its standard error itself,
// and the runtime's panic report, land in the current log file, after
// rotations too.
func TestCaptureStdio(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "vm.log")
	cmd := exec.Command(exe, "-test.run=^$")
	cmd.Env = append(os.Environ(), stdioChild+"="+path)
	out, err := cmd.CombinedOutput()
	if err == nil {
		t.Fatalf("child did not panic: %s", out)
	}
	if len(out) != 0 {
		t.Errorf("child wrote to the stderr it was given: %s", out)
	}
	b, _ := os.ReadFile(path)
	log := string(b)
	for _, want := range []string{"logged line 39\n", "written to stderr\n", "panic: the child panics"} {
		if !strings.Contains(log, want) {
			t.Errorf("current log lacks %q:\n%s", want, log)
		}
	}
	if _, err := os.Stat(path + ".1"); err != nil {
		t.Errorf("no rotation happened: %v", err)
	}
}

func readFile(path string) (string, error) {
	b, err := os.ReadFile(path)
	return string(b), err
}
