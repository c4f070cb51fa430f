package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
)

// qvmBin is the binary under test: $QVM_BIN (make test sets it) or one
// built by TestMain.
var qvmBin string

func TestMain(m *testing.M) {
	qvmBin = os.Getenv("QVM_BIN")
	if qvmBin == "" {
		dir, err := os.MkdirTemp("", "qvm-test-bin")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		qvmBin = filepath.Join(dir, "qvm")
		if out, err := exec.Command("go", "build", "-o", qvmBin, ".").CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "build qvm: %v\n%s", err, out)
			os.Exit(1)
		}
		code := m.Run()
		os.RemoveAll(dir)
		os.Exit(code)
	}
	os.Exit(m.Run())
}

// env is one state directory with a bin directory of qvm-* links.
type env struct {
	t   *testing.T
	dir string
	bin string
}

func newEnv(t *testing.T) *env {
	t.Helper()
	e := &env{t: t, dir: t.TempDir(), bin: t.TempDir()}
	out, err := exec.Command(qvmBin, "--list-links").Output()
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Fields(string(out)) {
		if err := os.Symlink(qvmBin, filepath.Join(e.bin, filepath.Base(l))); err != nil {
			t.Fatal(err)
		}
	}
	return e
}

// result of one command.
type result struct {
	stdout, stderr string
	code           int
}

// run runs a command line in this process, as a user types it: argv[0]
// is qvm-VERB, the state directory comes from QVM_DIR.
func (e *env) run(argv ...string) result {
	e.t.Helper()
	return e.runWith(strings.NewReader(""), argv...)
}

// runWith is run with stdin (a terminal, in the tests of questions).
func (e *env) runWith(stdin io.Reader, argv ...string) result {
	e.t.Helper()
	var so, se bytes.Buffer
	getenv := func(k string) string {
		if k == "QVM_DIR" {
			return e.dir
		}
		return os.Getenv(k)
	}
	code := run(context.Background(), argv, stdio{stdin, &so, &se, getenv})
	return result{so.String(), se.String(), code}
}

// exec runs a command line as its own process of the qvm binary, for the
// tests of locking and crashes between processes.
func (e *env) exec(argv ...string) result {
	e.t.Helper()
	cmd := exec.Command(filepath.Join(e.bin, argv[0]), argv[1:]...)
	cmd.Env = append(os.Environ(), "QVM_DIR="+e.dir)
	var so, se bytes.Buffer
	cmd.Stdout, cmd.Stderr = &so, &se
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		e.t.Fatalf("%v: %v", argv, err)
	}
	return result{so.String(), se.String(), code}
}

// ok runs a command that must succeed and returns its stdout.
func (e *env) ok(argv ...string) string {
	e.t.Helper()
	r := e.run(argv...)
	if r.code != 0 {
		e.t.Fatalf("%s: exit %d\nstdout: %s\nstderr: %s", strings.Join(argv, " "), r.code, r.stdout, r.stderr)
	}
	return r.stdout
}

// snapshot describes the whole state directory: every file with its size,
// allocated blocks and, for the store, its content.
func (e *env) snapshot(extra ...string) string {
	e.t.Helper()
	var lines []string
	walk := func(root string) {
		filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				lines = append(lines, fmt.Sprintf("%s: %v", p, err))
				return nil
			}
			if d.Name() == "qvm.lock" {
				return nil
			}
			info, _ := d.Info()
			line := fmt.Sprintf("%s %v %d", p, info.Mode(), info.Size())
			if !d.IsDir() && info.Size() < 1<<20 {
				b, _ := os.ReadFile(p)
				line += fmt.Sprintf(" %x", sha256.Sum256(b))
			}
			lines = append(lines, line)
			return nil
		})
	}
	walk(e.dir)
	for _, x := range extra {
		walk(x)
	}
	sort.Strings(lines)
	return strings.Join(lines, "\n")
}

// TestErrorsSafeForTerminal: an error quoting text with terminal escapes
// (here a path the user gave; in general what a VM chose) reaches stderr
// escaped.
func TestErrorsSafeForTerminal(t *testing.T) {
	e := newEnv(t)
	r := e.run("qvm-block", "attach", "--devtype=cdrom", "vm", "dom0:/no/such\x1b]0;pwned\x07\u202e.iso")
	if r.code == 0 || strings.ContainsAny(r.stderr, "\x1b\x07\u202e") || !strings.Contains(r.stderr, `/no/such\x1b]0;pwned\x07\u202e.iso`) {
		t.Fatalf("exit %d, stderr %q: want the path escaped", r.code, r.stderr)
	}
}
