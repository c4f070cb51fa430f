package qrexec

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestMessageRoundTrip(t *testing.T) {
	var b bytes.Buffer
	if err := WriteMessage(&b, DataStdout, []byte("hi")); err != nil {
		t.Fatal(err)
	}
	want := []byte{0x91, 1, 0, 0, 2, 0, 0, 0, 'h', 'i'}
	if !bytes.Equal(b.Bytes(), want) {
		t.Fatalf("wire = %x, want %x", b.Bytes(), want)
	}
	m, err := ReadMessage(&b, 16)
	if err != nil || m.Type != DataStdout || string(m.Data) != "hi" {
		t.Fatalf("ReadMessage = %+v, %v", m, err)
	}
	if _, err := ReadMessage(&b, 16); !errors.Is(err, io.EOF) {
		t.Fatalf("empty stream: %v, want EOF", err)
	}
}

func TestReadMessageBounds(t *testing.T) {
	hdr := make([]byte, 8)
	binary.LittleEndian.PutUint32(hdr, uint32(DataStdout))
	binary.LittleEndian.PutUint32(hdr[4:], 0xFFFFFFFF)
	if _, err := ReadMessage(bytes.NewReader(hdr), MaxDataChunk); !errors.Is(err, ErrTooLong) {
		t.Fatalf("4 GiB length: %v, want ErrTooLong", err)
	}
	binary.LittleEndian.PutUint32(hdr[4:], 10)
	if _, err := ReadMessage(bytes.NewReader(append(hdr, 1, 2, 3)), MaxDataChunk); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("short payload: %v, want ErrUnexpectedEOF", err)
	}
	if _, err := ReadMessage(bytes.NewReader(hdr[:5]), MaxDataChunk); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("short header: %v, want ErrUnexpectedEOF", err)
	}
}

func TestExecParams(t *testing.T) {
	p := ExecParams{ConnectDomain: 0, ConnectPort: 513, Cmdline: "user:QUBESRPC qubes.VMShell dom0"}
	b, err := p.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if len(b) != 8+len(p.Cmdline)+1 || b[4] != 0x01 || b[5] != 0x02 || b[len(b)-1] != 0 {
		t.Fatalf("wire = %x", b)
	}
	q, err := ParseExecParams(b)
	if err != nil || q != p {
		t.Fatalf("ParseExecParams = %+v, %v", q, err)
	}
	for _, bad := range [][]byte{
		nil, {1, 2, 3}, append(b[:len(b)-1:len(b)-1], 'x'), // no NUL
		append(append([]byte{}, b[:10]...), 0, 'x', 0), // NUL inside
		make([]byte, 9), // empty command line
	} {
		if _, err := ParseExecParams(bad); err == nil {
			t.Errorf("ParseExecParams(%q) accepted", bad)
		}
	}
	if _, err := (ExecParams{Cmdline: strings.Repeat("x", MaxCmdline+1)}).Marshal(); !errors.Is(err, ErrTooLong) {
		t.Errorf("long command line: %v", err)
	}
}

func TestParseCommand(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Command
	}{
		{"DEFAULT:QUBESRPC qubes.VMShell dom0", Command{User: "DEFAULT", Service: "qubes.VMShell", Source: "dom0"}},
		{"nogui:root:QUBESRPC qubes.VMExec+ls+--la dom0", Command{User: "root", NoGUI: true, Service: "qubes.VMExec", Arg: "ls+--la", Source: "dom0"}},
		{"user:echo a:b", Command{User: "user", Command: "echo a:b"}},
	} {
		got, err := ParseCommand(tc.in)
		if err != nil || got != tc.want {
			t.Errorf("ParseCommand(%q) = %+v, %v; want %+v", tc.in, got, err, tc.want)
			continue
		}
		if s := got.String(); s != tc.in {
			t.Errorf("String() = %q, want %q", s, tc.in)
		}
	}
	for _, bad := range []string{"", "nouser", ":cmd", "user:", "-u:cmd", "us/er:cmd", "u:QUBESRPC ../x dom0", "u:QUBESRPC a+b/c dom0", "u:QUBESRPC  dom0"} {
		if c, err := ParseCommand(bad); err == nil {
			t.Errorf("ParseCommand(%q) = %+v, want an error", bad, c)
		}
	}
}

func TestVMExecEncoding(t *testing.T) {
	// Qubes' encode_for_vmexec(['ls', '-la', '/tmp']).
	if got := EncodeVMExec([]string{"ls", "-la", "/tmp"}); got != "ls+--la+-2Ftmp" {
		t.Fatalf("EncodeVMExec = %q", got)
	}
	for _, args := range [][]string{{"sh", "-c", "echo 'a b' > /x; exit 3"}, {""}, {"ü", "a+b", "--", "-2F"}} {
		enc := EncodeVMExec(args)
		dec, err := DecodeVMExec(enc)
		if err != nil || !slices.Equal(dec, args) {
			t.Errorf("DecodeVMExec(%q) = %q, %v; want %q", enc, dec, err, args)
		}
	}
	for _, bad := range []string{"a-", "a-2", "a-zz", "a b", "a/b"} {
		if _, err := DecodeVMExec(bad); err == nil {
			t.Errorf("DecodeVMExec(%q) accepted", bad)
		}
	}
}

func TestHello(t *testing.T) {
	a, b := bufPipe(t)
	defer a.Close()
	defer b.Close()
	go func() {
		// A peer of version 2 sends its HELLO and reads ours.
		var v [4]byte
		binary.LittleEndian.PutUint32(v[:], 2)
		WriteMessage(b, Hello, v[:])
		ReadMessage(b, 64)
	}()
	v, err := SayHello(a)
	if err != nil || v != 2 {
		t.Fatalf("SayHello = %d, %v; want 2", v, err)
	}
	c, d := bufPipe(t)
	defer c.Close()
	defer d.Close()
	go func() {
		ReadMessage(d, 64)
		WriteMessage(d, DataStdout, []byte("xxxx"))
	}()
	if _, err := SayHello(c); !errors.Is(err, ErrProtocol) {
		t.Fatalf("SayHello with a non-HELLO: %v, want ErrProtocol", err)
	}
}

// bufPipe is a connected pair of unix sockets: buffered both ways, as a
// vchan is (net.Pipe is not, and both ends send HELLO first).
func bufPipe(t testing.TB) (net.Conn, net.Conn) {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	conn := func(fd int) net.Conn {
		f := os.NewFile(uintptr(fd), "socketpair")
		defer f.Close()
		c, err := net.FileConn(f)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	return conn(fds[0]), conn(fds[1])
}

// runPair runs cmd on the agent's side of a pipe and Run on dom0's.
func runPair(t *testing.T, cmd *exec.Cmd, stdin io.Reader) (code int, stdout, stderr string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	a, b := bufPipe(t)
	defer a.Close()
	served := make(chan error, 1)
	go func() {
		defer b.Close()
		served <- Serve(ctx, b, cmd)
	}()
	var o, e bytes.Buffer
	code, err := Run(ctx, a, stdin, &o, &e)
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	if err := <-served; err != nil {
		t.Fatalf("Serve: %v", err)
	}
	return code, o.String(), e.String()
}

func TestRunServe(t *testing.T) {
	code, out, errOut := runPair(t, exec.Command("sh", "-c", "echo out; echo err >&2; exit 7"), nil)
	if code != 7 || out != "out\n" || errOut != "err\n" {
		t.Fatalf("got %d %q %q", code, out, errOut)
	}
	// Several MiB of input come back unchanged, in chunks.
	in := make([]byte, 3<<20+17)
	rand.Read(in)
	code, out, _ = runPair(t, exec.Command("cat"), bytes.NewReader(in))
	if code != 0 || out != string(in) {
		t.Fatalf("cat: code %d, %d bytes back of %d", code, len(out), len(in))
	}
	// A process killed by a signal reports 128+signal, as a shell does.
	if code, _, _ = runPair(t, exec.Command("sh", "-c", "kill -9 $$"), nil); code != 137 {
		t.Fatalf("killed: code %d, want 137", code)
	}
	// A command that cannot start.
	code, _, errOut = runPair(t, exec.Command("/nonexistent/program"), nil)
	if code != ExitNotFound || !strings.Contains(errOut, "/nonexistent/program") {
		t.Fatalf("missing program: %d %q", code, errOut)
	}
	// A process that stops reading its input early does not block the caller.
	code, out, _ = runPair(t, exec.Command("head", "-c", "5"), bytes.NewReader(in))
	if code != 0 || out != string(in[:5]) {
		t.Fatalf("head: %d %q", code, out)
	}
}

func TestRunRefusesStrayMessages(t *testing.T) {
	a, b := bufPipe(t)
	defer a.Close()
	go func() {
		defer b.Close()
		SayHello(b)
		go io.Copy(io.Discard, b)
		WriteMessage(b, ExecCmdline, []byte("x"))
	}()
	_, err := Run(context.Background(), a, nil, io.Discard, io.Discard)
	if !errors.Is(err, ErrProtocol) {
		t.Fatalf("Run with EXEC_CMDLINE on a data channel: %v, want ErrProtocol", err)
	}
	c, d := bufPipe(t)
	defer c.Close()
	go func() {
		SayHello(d)
		go io.Copy(io.Discard, d)
		WriteMessage(d, DataStdout, []byte("partial"))
		d.Close()
	}()
	if _, err := Run(context.Background(), c, nil, io.Discard, io.Discard); !errors.Is(err, ErrProtocol) {
		t.Fatalf("Run on a channel that closed early: %v, want ErrProtocol", err)
	}
}

func TestControl(t *testing.T) {
	a, b := bufPipe(t)
	defer a.Close()
	agent := make(chan []Message, 1)
	go func() {
		defer b.Close()
		if _, err := SayHello(b); err != nil {
			agent <- nil
			return
		}
		trig := make([]byte, targetLen+identLen)
		copy(trig, "dom0")
		copy(trig[targetLen:], "SOCKET7")
		trig = append(trig, "qubes.Foo\x00"...)
		WriteMessage(b, TriggerService3, trig)
		WriteMessage(b, ConnectionTerminated, make([]byte, 8))
		var got []Message
		for len(got) < 2 {
			m, err := ReadMessage(b, MaxControl)
			if err != nil {
				break
			}
			got = append(got, m)
		}
		agent <- got
	}()
	c, err := NewControl(a)
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- c.Serve(context.Background()) }()
	if err := c.Exec(ExecParams{ConnectPort: 600, Cmdline: "root:id"}); err != nil {
		t.Fatal(err)
	}
	got := <-agent
	if len(got) != 2 {
		t.Fatalf("agent got %d messages", len(got))
	}
	var refused, exec *Message
	for i := range got {
		switch got[i].Type {
		case ServiceRefused:
			refused = &got[i]
		case ExecCmdline:
			exec = &got[i]
		}
	}
	if refused == nil || len(refused.Data) != identLen || !bytes.HasPrefix(refused.Data, []byte("SOCKET7\x00")) {
		t.Fatalf("no refusal with the request id: %+v", got)
	}
	if p, err := ParseExecParams(exec.Data); err != nil || p.ConnectPort != 600 || p.Cmdline != "root:id" {
		t.Fatalf("exec = %+v, %v", p, err)
	}
	if err := <-served; err != nil {
		t.Fatalf("Serve after the agent closed: %v", err)
	}
}

// TestServeCallerGone: a caller that goes away while the command runs
// (qvm-run killed) gets the command killed, its children too, and Serve
// returns.
func TestServeCallerGone(t *testing.T) {
	a, b := bufPipe(t)
	cmd := exec.Command("sh", "-c", "sleep 1000 & sleep 1000; wait")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	served := make(chan error, 1)
	go func() { served <- Serve(context.Background(), b, cmd) }()
	if _, err := SayHello(a); err != nil {
		t.Fatal(err)
	}
	a.Close()
	select {
	case <-served:
	case <-time.After(time.Minute): // bounds a hang: the command sleeps 1000 s
		t.Fatal("Serve still runs the command after the caller went away")
	}
	// SIGKILL is queued, not delivered, when kill returns, and the killed
	// background sleep is an orphan that init reaps when it gets to it:
	// wait (bounded) until no member of the group is still running;
	// a zombie has been killed.
	deadline := time.Now().Add(time.Minute)
	for {
		live, err := runningInGroup(cmd.Process.Pid)
		if err != nil {
			t.Fatal(err)
		}
		if len(live) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the command's process group still runs: pids %v", live)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// runningInGroup lists the processes of process group pgid that are
// neither zombies nor dead, from /proc.
func runningInGroup(pgid int) ([]int, error) {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil, err
	}
	var live []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue // gone meanwhile
		}
		// pid (comm) state ppid pgrp ...: comm may hold spaces, so
		// split after its closing parenthesis.
		i := bytes.LastIndexByte(stat, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(stat[i+1:]))
		if len(f) < 3 {
			continue
		}
		if g, err := strconv.Atoi(f[2]); err != nil || g != pgid {
			continue
		}
		if f[0] != "Z" && f[0] != "X" {
			live = append(live, pid)
		}
	}
	return live, nil
}
