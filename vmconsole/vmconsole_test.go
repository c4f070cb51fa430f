package vmconsole

import (
	"bytes"
	"context"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/qvm-project/qvm/internal/testio"
	"github.com/qvm-project/qvm/logfile"
)

func TestOpenPTYRefuses(t *testing.T) {
	for _, p := range []string{"", "/dev/sda", "/dev/pts/../sda", "/dev/pts/1/../../null", "/dev/pts/ptmx", "/dev/pts/12345678", "/dev/pts/1 ", "/dev/null", "/dev/tty", "../dev/pts/1"} {
		if f, err := OpenPTY(p); err == nil {
			f.Close()
			t.Errorf("OpenPTY(%q): no error", p)
		}
	}
	// A name of the right form that is no pseudo-terminal is refused
	// once opened: here none such exists, so a free number fails to open.
	if f, err := OpenPTY("/dev/pts/9999999"); err == nil {
		f.Close()
		t.Error("a missing /dev/pts/N opened")
	}
}

func TestServeLogsAndRelays(t *testing.T) {
	master, name := testio.PTY(t)
	pty, err := OpenPTY(name)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	log, err := logfile.Open(filepath.Join(dir, "work.console.log"), 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	defer log.Close()
	sock := filepath.Join(dir, "work.console")
	ln, err := Listen(sock)
	if err != nil {
		t.Fatal(err)
	}
	if st, err := os.Stat(sock); err != nil || st.Mode().Perm()&0o077 != 0 {
		t.Errorf("socket %v %v: want root only", st.Mode(), err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s := NewServer(pty, log, nil)
	served := make(chan error, 1)
	go func() { served <- s.Serve(ctx, ln) }()

	// What the guest prints before anyone attaches is in the log.
	master.Write([]byte("boot line\r\n"))
	waitLog(t, log.Path(), "boot line\r\n")

	// An attached client sees output and types to the guest; the escape
	// byte ends the attach, and what follows it is not sent.
	inR, inW := io.Pipe()
	var out testio.Buffer
	attached := make(chan error, 1)
	go func() { attached <- Attach(ctx, sock, inR, &out, DefaultEscape) }()
	waitClients(t, s, 1)
	master.Write([]byte("login: "))
	waitFor(t, func() bool { return strings.Contains(out.String(), "login: ") })
	inW.Write([]byte("root\r"))
	got := make([]byte, 5)
	if _, err := io.ReadFull(master, got); err != nil || string(got) != "root\r" {
		t.Errorf("guest read %q %v", got, err)
	}
	inW.Write([]byte("x\x1dnot sent"))
	if err := <-attached; err != nil {
		t.Errorf("attach ended by escape: %v", err)
	}
	got = make([]byte, 1)
	if _, err := io.ReadFull(master, got); err != nil || string(got) != "x" {
		t.Errorf("guest read %q %v", got, err)
	}
	waitClients(t, s, 0)
	master.Write([]byte("after\r\n"))
	waitLog(t, log.Path(), "boot line\r\nlogin: after\r\n")
	// Nothing after the escape reached the guest.
	master.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	if n, _ := master.Read(got); n != 0 {
		t.Errorf("guest read %q after the escape", got[:n])
	}

	// The console ends (xenconsoled lets go): Serve returns, and a
	// client attached then sees the end.
	inR2, _ := io.Pipe()
	var out2 testio.Buffer
	attached = make(chan error, 1)
	go func() { attached <- Attach(ctx, sock, inR2, &out2, DefaultEscape) }()
	waitClients(t, s, 1)
	master.Close()
	if err := <-served; err != nil {
		t.Errorf("Serve at the console's end: %v", err)
	}
	if err := <-attached; err != nil {
		t.Errorf("attach at the console's end: %v", err)
	}
	// The server is gone: a new attach fails, saying so.
	if err := Attach(ctx, sock, strings.NewReader(""), io.Discard, DefaultEscape); err == nil {
		t.Error("attach after the console ended: no error")
	}
}

// TestSlowClientDropped: a client that never reads is dropped, and the
// log and the other clients go on.
func TestSlowClientDropped(t *testing.T) {
	master, name := testio.PTY(t)
	pty, err := OpenPTY(name)
	if err != nil {
		t.Fatal(err)
	}
	var log testio.Buffer
	sock := filepath.Join(t.TempDir(), "c")
	ln, err := Listen(sock)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := NewServer(pty, &log, nil)
	served := make(chan error, 1)
	go func() { served <- s.Serve(ctx, ln) }()
	// The stuck client: connected, never reading.
	stuck, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer stuck.Close()
	waitClients(t, s, 1)
	chunk := bytes.Repeat([]byte("y"), 1000)
	total := 0
	for s.clientCount() == 1 {
		master.Write(chunk)
		total += len(chunk)
		if total > 64<<20 {
			t.Fatal("a client that never reads was not dropped after 64 MiB")
		}
	}
	waitFor(t, func() bool { return log.Len() == total })
	cancel()
	if err := <-served; err != nil {
		t.Errorf("Serve: %v", err)
	}
}

func (s *Server) clientCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.clients)
}

func waitClients(t *testing.T, s *Server, n int) {
	t.Helper()
	waitFor(t, func() bool { return s.clientCount() == n })
}

func waitLog(t *testing.T, path, want string) {
	t.Helper()
	waitFor(t, func() bool {
		b, _ := os.ReadFile(path)
		return string(b) == want
	})
	if b, _ := ReadLog(path, 1<<20); string(b) != want {
		t.Errorf("ReadLog: %q, want %q", b, want)
	}
}

// waitFor polls cond; a condition that never holds ends in the test's
// own timeout, with its goroutines printed.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	for !cond() {
		time.Sleep(5 * time.Millisecond)
	}
}

func TestReadLogBounds(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "l")
	if b, err := ReadLog(p, 10); err != nil || len(b) != 0 {
		t.Errorf("missing log: %q %v", b, err)
	}
	os.WriteFile(p+".1", []byte("0123456789abcdef"), 0o644)
	os.WriteFile(p, []byte("ghij"), 0o644)
	if b, err := ReadLog(p, 10); err != nil || string(b) != "6789abcdefghij" {
		t.Errorf("ReadLog: %q %v", b, err)
	}
}
