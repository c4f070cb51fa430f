package qmp

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/qvm-project/qvm/termtext"
)

const greeting = `{"QMP": {"version": {"qemu": {"micro": 22, "minor": 2, "major": 7}, "package": "Debian 1:7.2+dfsg-7"}, "capabilities": ["oob"]}}` + "\r\n"

// peer listens on a fresh unix socket, runs serve on the one connection
// it accepts, and closes it after. It returns the socket's path.
func peer(t *testing.T, serve func(c net.Conn, r *bufio.Reader)) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "qmp.sock")
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		c, err := l.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		serve(c, bufio.NewReader(c))
	}()
	t.Cleanup(func() {
		l.Close()
		<-done
	})
	return path
}

// request reads one command from the client.
func request(r *bufio.Reader) (cmd, id string, err error) {
	line, err := r.ReadBytes('\n')
	if err != nil {
		return "", "", err
	}
	var req struct{ Execute, ID string }
	if err := json.Unmarshal(line, &req); err != nil {
		return "", "", err
	}
	return req.Execute, req.ID, nil
}

// handshake plays QEMU up to the end of the capabilities negotiation.
func handshake(c net.Conn, r *bufio.Reader) bool {
	io.WriteString(c, greeting)
	cmd, id, err := request(r)
	if err != nil || cmd != "qmp_capabilities" {
		return false
	}
	fmt.Fprintf(c, `{"return": {}, "id": %q}`+"\r\n", id)
	return true
}

func ctxFor(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// TestHandshake: the greeting is parsed, the handshake and a command go
// through with ids, and an event sent before the reply is kept.
func TestHandshake(t *testing.T) {
	path := peer(t, func(c net.Conn, r *bufio.Reader) {
		if !handshake(c, r) {
			return
		}
		cmd, id, _ := request(r)
		io.WriteString(c, `{"timestamp": {"seconds": 1700000000, "microseconds": 5}, "event": "DEVICE_TRAY_MOVED", "data": {"id": "cd", "tray-open": true}}`+"\r\n")
		fmt.Fprintf(c, `{"return": {"cmd": %q}, "id": %q}`+"\r\n", cmd, id)
		request(r)
	})
	q, err := Dial(ctxFor(t, time.Minute), path)
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	if g := q.Greeting(); g.Major != 7 || g.Minor != 2 || g.Micro != 22 || g.Package != "Debian 1:7.2+dfsg-7" || len(g.Capabilities) != 1 {
		t.Errorf("greeting %+v", g)
	}
	var res struct{ Cmd string }
	if err := q.Execute(ctxFor(t, time.Minute), "query-status", nil, &res); err != nil || res.Cmd != "query-status" {
		t.Fatalf("Execute: %+v, %v", res, err)
	}
	e, err := q.NextEvent(ctxFor(t, time.Minute))
	if err != nil || e.Name != "DEVICE_TRAY_MOVED" || string(e.Data) != `{"id": "cd", "tray-open": true}` || !e.Time.Equal(time.Unix(1700000000, 5000)) {
		t.Fatalf("event %+v, %v", e, err)
	}
}

// TestHostileGreetings: a peer that is not QEMU gets a clear error.
func TestHostileGreetings(t *testing.T) {
	huge := `{"QMP": {"version": {"qemu": {"micro": 0, "minor": 0, "major": 1}, "package": "` + strings.Repeat("a", 2*MaxMessage) + `"}, "capabilities": []}}` + "\r\n"
	for name, c := range map[string]struct {
		send, want string
	}{
		"garbage":         {"SSH-2.0-OpenSSH_9.2\r\n", "invalid character"},
		"array":           {"[1, 2]\r\n", "cannot unmarshal array"},
		"null":            {"null\r\n", "null, not an object"},
		"no version":      {`{"QMP": {"capabilities": []}}` + "\r\n", "no version.qemu"},
		"reply first":     {`{"return": {}}` + "\r\n", "a reply before the greeting"},
		"two kinds":       {`{"QMP": {}, "event": "X"}` + "\r\n", "2 of the keys"},
		"huge greeting":   {huge, "longer than 1048576 bytes"},
		"closed":          {"", "the peer closed the connection"},
		"closed mid-line": {`{"QMP": {"vers`, "in the middle of a message"},
	} {
		t.Run(name, func(t *testing.T) {
			path := peer(t, func(conn net.Conn, r *bufio.Reader) {
				io.WriteString(conn, c.send)
			})
			q, err := Dial(ctxFor(t, time.Minute), path)
			if err == nil {
				q.Close()
				t.Fatal("Dial succeeded")
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Fatalf("%v, want %q in it", err, c.want)
			}
			if name != "closed" && name != "closed mid-line" && !errors.Is(err, ErrProtocol) {
				t.Fatalf("%v does not wrap ErrProtocol", err)
			}
		})
	}
}

// TestEndlessObject: a peer that sends one object without end is cut off
// at MaxMessage with a protocol error (not a timeout), having made the
// client hold no more than a few times MaxMessage: this is the peer that
// grew dom0's heap to 1.8 GiB through go-qemu's json.Decoder.
func TestEndlessObject(t *testing.T) {
	sent := make(chan int64, 1)
	path := peer(t, func(c net.Conn, r *bufio.Reader) {
		chunk := bytes.Repeat([]byte(`"aaaaaaa", `), 6<<10)
		n, _ := io.WriteString(c, `{"QMP": {"version": [`)
		total := int64(n)
		for {
			n, err := c.Write(chunk)
			total += int64(n)
			if err != nil {
				break
			}
		}
		sent <- total
	})
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	q, err := Dial(ctxFor(t, 10*time.Minute), path)
	runtime.ReadMemStats(&after)
	if err == nil {
		q.Close()
		t.Fatal("Dial succeeded")
	}
	if !errors.Is(err, ErrProtocol) || !strings.Contains(err.Error(), "longer than") {
		t.Fatalf("%v, want the message bound", err)
	}
	total := <-sent
	t.Logf("peer got %d bytes out before the client hung up; client allocated %d bytes", total, after.TotalAlloc-before.TotalAlloc)
	// What the peer got out is what the client read plus what the
	// socket buffers held.
	if total > 8*MaxMessage {
		t.Errorf("the client read on: the peer sent %d bytes", total)
	}
	if a := after.TotalAlloc - before.TotalAlloc; a > 8*MaxMessage {
		t.Errorf("reading one bounded message allocated %d bytes", a)
	}
}

// TestSilentPeer: a peer that never greets, or never answers, makes the
// call fail when its context ends, and the connection is not used again.
func TestSilentPeer(t *testing.T) {
	hold := make(chan struct{})
	defer close(hold)
	path := peer(t, func(c net.Conn, r *bufio.Reader) { <-hold })
	_, err := Dial(ctxFor(t, 200*time.Millisecond), path)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Dial to a silent peer: %v, want a deadline error", err)
	}

	asked := make(chan struct{})
	path = peer(t, func(c net.Conn, r *bufio.Reader) {
		if handshake(c, r) {
			request(r)
			close(asked)
			<-hold
		}
	})
	q, err := Dial(ctxFor(t, time.Minute), path)
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		<-asked
		cancel()
	}()
	err = q.Execute(ctx, "query-block", nil, nil)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Execute cancelled while waiting: %v, want context.Canceled", err)
	}
	if err := q.Execute(ctxFor(t, time.Minute), "query-block", nil, nil); !errors.Is(err, ErrBroken) || !errors.Is(err, context.Canceled) {
		t.Fatalf("Execute after a failure: %v, want ErrBroken naming the first error", err)
	}
	if _, err := q.NextEvent(ctxFor(t, time.Minute)); !errors.Is(err, ErrBroken) {
		t.Fatalf("NextEvent after a failure: %v", err)
	}
}

// script is a peer that does the handshake, then answers each command
// with reply(n, id) (n counting from 0), until reply returns "".
func script(t *testing.T, reply func(n int, id string) string) string {
	return peer(t, func(c net.Conn, r *bufio.Reader) {
		if !handshake(c, r) {
			return
		}
		for n := 0; ; n++ {
			_, id, err := request(r)
			if err != nil {
				return
			}
			s := reply(n, id)
			if s == "" {
				return
			}
			if _, err := io.WriteString(c, s); err != nil {
				return
			}
		}
	})
}

func dialScript(t *testing.T, reply func(n int, id string) string) *Conn {
	q, err := Dial(ctxFor(t, time.Minute), script(t, reply))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { q.Close() })
	return q
}

// TestHostileReplies: replies that are not the protocol break the
// connection with ErrProtocol; an error reply with terminal escapes comes
// back cut and safe, and the connection stays usable.
func TestHostileReplies(t *testing.T) {
	for name, c := range map[string]struct{ reply, want string }{
		"wrong id":  {`{"return": {}, "id": "qvm-999"}` + "\r\n", "not the reply to qvm-2"},
		"no id":     {`{"return": {}}` + "\r\n", "a reply without an id, not the reply to qvm-2"},
		"number id": {`{"return": {}, "id": 2}` + "\r\n", `a reply with id "2",`},
		"evil id":   {`{"return": {}, "id": "\u001b[2J"}` + "\r\n", `a reply with id "\x1b[2J",`},
		"greeting":  {greeting, "a greeting"},
		"garbage":   {"\x1b[2J{{{\r\n", "invalid character"},
		"bad error": {`{"error": "boom", "id": "qvm-2"}` + "\r\n", "error reply: not an object"},
		"bad event": {`{"event": {"x": 1}}` + "\r\n", "event: name"},
		"too long":  {`{"return": "` + strings.Repeat("\x1b", MaxMessage) + `"}` + "\r\n", "longer than"},
	} {
		t.Run(name, func(t *testing.T) {
			q := dialScript(t, func(int, string) string { return c.reply })
			err := q.Execute(ctxFor(t, time.Minute), "query-block", nil, nil)
			if !errors.Is(err, ErrProtocol) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("%v, want ErrProtocol and %q", err, c.want)
			}
			if strings.ContainsAny(err.Error(), "\x1b") {
				t.Fatalf("error %q carries the peer's escape", err)
			}
			if err := q.Execute(ctxFor(t, time.Minute), "query-block", nil, nil); !errors.Is(err, ErrBroken) {
				t.Fatalf("after a protocol error: %v, want ErrBroken", err)
			}
		})
	}

	q := dialScript(t, func(n int, id string) string {
		switch n {
		case 0:
			desc := "\x1b]0;owned\x07\x1b[2J\u202e" + strings.Repeat("x", 100<<10)
			b, _ := json.Marshal(map[string]any{"error": map[string]string{"class": "GenericError\r", "desc": desc}, "id": id})
			return string(b) + "\r\n"
		case 1:
			return fmt.Sprintf(`{"return": 5, "id": %q}`+"\r\n", id)
		}
		return fmt.Sprintf(`{"return": [1, 2], "id": %q}`+"\r\n", id)
	})
	err := q.Execute(ctxFor(t, time.Minute), "eject", map[string]string{"id": "cd"}, nil)
	var qe *Error
	if !errors.As(err, &qe) {
		t.Fatalf("error reply: %v, want an *Error", err)
	}
	if qe.Command != "eject" || qe.Class != `GenericError\x0d` || !strings.HasPrefix(qe.Desc, `\x1b]0;owned\x07\x1b[2J\u202exxx`) || len(qe.Desc) > maxErrorText+40 {
		t.Fatalf("error %+v (desc %d bytes)", qe, len(qe.Desc))
	}
	if termtext.Line(err.Error()) != err.Error() {
		t.Fatalf("error text is not safe: %q", err)
	}
	var list []int
	if err := q.Execute(ctxFor(t, time.Minute), "query-block", nil, &list); !errors.Is(err, ErrProtocol) || errors.Is(err, ErrBroken) {
		t.Fatalf("a reply of the wrong type: %v, want ErrProtocol", err)
	}
	if err := q.Execute(ctxFor(t, time.Minute), "query-block", nil, &list); err != nil || len(list) != 2 {
		t.Fatalf("after an error reply and a reply of the wrong type: %v, %v", list, err)
	}
}

// TestEventFlood: events while a command waits are kept up to
// MaxEvents, the newest; a peer that sends only events makes the command
// fail when its context ends, holding no more than MaxEvents.
func TestEventFlood(t *testing.T) {
	ev := func(i int) string {
		return fmt.Sprintf(`{"event": "E%d", "data": {}, "timestamp": {"seconds": 1, "microseconds": 2}}`+"\r\n", i)
	}
	q := dialScript(t, func(n int, id string) string {
		if n > 0 {
			return "flood"
		}
		var b strings.Builder
		for i := range 100 {
			b.WriteString(ev(i))
		}
		fmt.Fprintf(&b, `{"return": {}, "id": %q}`+"\r\n", id)
		return b.String()
	})
	if err := q.Execute(ctxFor(t, time.Minute), "cont", nil, nil); err != nil {
		t.Fatal(err)
	}
	for i := 100 - MaxEvents; i < 100; i++ {
		e, err := q.NextEvent(ctxFor(t, time.Minute))
		if err != nil || e.Name != fmt.Sprintf("E%d", i) {
			t.Fatalf("event %d: %+v, %v", i, e, err)
		}
	}

	stop := make(chan struct{})
	path := peer(t, func(c net.Conn, r *bufio.Reader) {
		if !handshake(c, r) {
			return
		}
		request(r)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			if _, err := io.WriteString(c, ev(i)); err != nil {
				return
			}
		}
	})
	defer close(stop)
	q, err := Dial(ctxFor(t, time.Minute), path)
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	err = q.Execute(ctxFor(t, 500*time.Millisecond), "query-block", nil, nil)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("a command drowned in events: %v, want a deadline error", err)
	}
	if len(q.events) != MaxEvents {
		t.Fatalf("%d events kept, want %d", len(q.events), MaxEvents)
	}
}

func TestParseMessage(t *testing.T) {
	for in, want := range map[string]string{
		`{"return": {}, "id": "qvm-1"}`:                                      "reply qvm-1",
		`{"return": [], "id": "a"}`:                                          "reply a",
		`{"error": {"class": "GenericError", "desc": "no"}, "id": "qvm-3"}`:  "error reply qvm-3",
		`{"event": "STOP", "timestamp": {"seconds": 1, "microseconds": 0}}`:  "event ",
		`{"event": "STOP", "data": null}`:                                    "event ",
		`{"QMP": {"version": {"qemu": {"major": 8}}, "capabilities": null}}`: "greeting ",
		`{"return": null}`:                     "reply ",
		`{}`:                                   "0 of the keys",
		`{"return": {}, "error": {}}`:          "2 of the keys",
		`{"error": {"class": "x"}}`:            "no class or desc",
		`{"error": {"class": 1, "desc": "x"}}`: "cannot unmarshal number",
		`{"event": "X", "data": "s"}`:          "data is not an object",
		`{"event": "X", "timestamp": []}`:      "timestamp: not an object",
		`{"QMP": 1}`:                           "not an object",
		`{"return": {}} trailing`:              "invalid character",
		`"str"`:                                "cannot unmarshal string",
		`{"return": {}, "id": {"a": "` + strings.Repeat("b", 100) + `"}}`: "reply {\"a\": \"bbb",
	} {
		m, err := parseMessage([]byte(in))
		got := ""
		if err != nil {
			got = err.Error()
		} else {
			got = m.kind.String() + " " + m.id
		}
		if !strings.Contains(got, want) {
			t.Errorf("parseMessage(%s) = %q, want %q", in, got, want)
		}
		if err != nil && !errors.Is(err, ErrProtocol) {
			t.Errorf("parseMessage(%s): %v does not wrap ErrProtocol", in, err)
		}
	}
}

func TestReadLine(t *testing.T) {
	r := bufio.NewReaderSize(strings.NewReader("ab\r\n\r\n  \ncdef\nghijklmno\nxy"), 16)
	for _, want := range []string{"ab", "", "", "cdef", "error", "error"} {
		line, err := readLine(r, 4)
		got := string(line)
		if err != nil {
			got = "error"
		}
		if got != want {
			t.Fatalf("readLine = %q (%v), want %q", line, err, want)
		}
	}
}

// FuzzReadLine: lines never exceed the bound, whatever the stream.
func FuzzReadLine(f *testing.F) {
	f.Add([]byte("ab\r\ncd\n\n" + strings.Repeat("x", 40)))
	f.Fuzz(func(t *testing.T, b []byte) {
		r := bufio.NewReaderSize(bytes.NewReader(b), 16)
		for range len(b) + 1 {
			line, err := readLine(r, 20)
			if err != nil {
				if !errors.Is(err, errTooLong) && !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) {
					t.Fatalf("error %v", err)
				}
				return
			}
			if len(line) > 20 || bytes.ContainsAny(line, "\n") {
				t.Fatalf("line %q", line)
			}
		}
	})
}

// FuzzConn plays a peer that sends arbitrary bytes: the client never
// panics, a command's error reply is always safe text, and every error
// is one of the documented ones.
func FuzzConn(f *testing.F) {
	f.Add([]byte(greeting + `{"return": {}, "id": "qvm-1"}` + "\r\n" + `{"event": "X"}` + "\r\n" + `{"error": {"class": "C", "desc": "\u001b[2J"}, "id": "qvm-2"}` + "\r\n"))
	f.Add([]byte(greeting + `{"return": {}, "id": "qvm-1"}` + "\r\n" + `{"return": [{"device": "x"}], "id": "qvm-2"}` + "\r\n"))
	f.Add([]byte(greeting + `{"return": {}, "id": "qvm-1"}` + "\r\n" + `{"return": 1, "id": "qvm-2"}` + "\r\n" + `{"return": [], "id": "qvm-3"}` + "\r\n"))
	f.Add([]byte("{\"QMP\": {\"version\": {\"qemu\": {}}}}\n{\"return\":{},\"id\":\"qvm-1\"}\n\xff\n"))
	f.Fuzz(func(t *testing.T, stream []byte) {
		client, server := socketPair(t)
		go func() {
			// The stream, then EOF; what the client sends is read
			// until it hangs up.
			server.Write(stream)
			server.CloseWrite()
			io.Copy(io.Discard, server)
			server.Close()
		}()
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		check := func(err error) {
			t.Helper()
			var qe *Error
			switch {
			case err == nil:
			case errors.As(err, &qe):
				if termtext.Line(qe.Class) != qe.Class || termtext.Line(qe.Desc) != qe.Desc || len(qe.Desc) > maxErrorText*6+3 {
					t.Fatalf("unsafe error %+v", qe)
				}
			case errors.Is(err, ErrProtocol), errors.Is(err, ErrBroken), errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
			default:
				t.Fatalf("unexpected error %v", err)
			}
		}
		q, err := New(ctx, client, "fuzz")
		if err != nil {
			client.Close()
		}
		check(err)
		if err != nil {
			return
		}
		defer q.Close()
		for range 3 {
			var res []struct{ Device string }
			check(q.Execute(ctx, "query-block", nil, &res))
		}
		for range 3 {
			_, err := q.NextEvent(ctx)
			check(err)
		}
	})
}

// socketPair returns the two ends of a connected unix stream socket.
func socketPair(t *testing.T) (client net.Conn, server *net.UnixConn) {
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	var conns [2]net.Conn
	for i, fd := range fds {
		f := os.NewFile(uintptr(fd), "socketpair")
		c, err := net.FileConn(f)
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		conns[i] = c
	}
	return conns[0], conns[1].(*net.UnixConn)
}

// FuzzParseMessage: a message parses into exactly one kind, or fails
// with ErrProtocol.
func FuzzParseMessage(f *testing.F) {
	for _, s := range []string{greeting, `{"return": {}, "id": "qvm-1"}`, `{"error": {"class": "a", "desc": "b"}}`, `{"event": "X", "data": {}}`, `null`, `{"id": 1}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := parseMessage(b)
		if err != nil {
			if !errors.Is(err, ErrProtocol) {
				t.Fatalf("%v does not wrap ErrProtocol", err)
			}
			return
		}
		if m.kind < kindGreeting || m.kind > kindEvent || len(m.id) > 64 {
			t.Fatalf("%q parsed as %+v", b, m)
		}
		if m.kind == kindReturn && !json.Valid(m.ret) || m.kind == kindEvent && m.event.Data != nil && m.event.Data[0] != '{' {
			t.Fatalf("%q parsed as %+v", b, m)
		}
	})
}
