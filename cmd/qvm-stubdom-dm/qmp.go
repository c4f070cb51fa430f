package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"time"
)

// The QMP dialogue libxl holds with the device model it started for a
// stubdomain: the greeting, qmp_capabilities, then query-chardev (and
// query-vnc when the stubdomain has a framebuffer, which qvm's never
// has). It is answered as a QEMU with no character devices and no
// display would answer, which is what this process is.

// greeting is what QEMU says first on a QMP connection; libxl reads the
// version from it.
const greeting = `{"QMP": {"version": {"qemu": {"micro": 0, "minor": 2, "major": 7}, "package": "qvm-stubdom-dm"}, "capabilities": []}}` + "\r\n"

// Bounds on a QMP client: libxl's commands are a few dozen bytes.
const (
	maxCommandBytes = 64 << 10
	maxCommands     = 64
	qmpIdle         = 30 * time.Second
)

// command is a QMP request.
type command struct {
	Execute string          `json:"execute"`
	ID      json.RawMessage `json:"id,omitempty"`
}

// reply is a QMP response.
type reply struct {
	Return any             `json:"return,omitempty"`
	Error  *qmpError       `json:"error,omitempty"`
	ID     json.RawMessage `json:"id,omitempty"`
}

type qmpError struct {
	Class string `json:"class"`
	Desc  string `json:"desc"`
}

// answer is the reply to c, and whether the client asked this process to
// quit.
func answer(c command) (reply, bool) {
	r := reply{ID: c.ID}
	switch c.Execute {
	case "qmp_capabilities":
		r.Return = struct{}{}
	case "query-chardev":
		r.Return = []struct{}{}
	case "query-status":
		r.Return = map[string]any{"status": "running", "running": true, "singlestep": false}
	case "query-vnc":
		r.Return = map[string]any{"enabled": false}
	case "quit":
		r.Return = struct{}{}
		return r, true
	default:
		r.Error = &qmpError{Class: "CommandNotFound", Desc: fmt.Sprintf("The command %.64q has not been found", c.Execute)}
	}
	return r, false
}

// serveQMP answers the QMP clients of l (libxl, as root) until ctx ends
// or a client sends quit, which calls quit.
func serveQMP(ctx context.Context, log *slog.Logger, l net.Listener, quit func()) {
	go func() {
		<-ctx.Done()
		l.Close()
	}()
	for {
		c, err := l.Accept()
		if err != nil {
			if ctx.Err() == nil && !errors.Is(err, net.ErrClosed) {
				log.Warn("QMP socket", "err", err)
			}
			return
		}
		go func() {
			defer c.Close()
			if err := qmpSession(c, quit); err != nil && !errors.Is(err, io.EOF) {
				log.Warn("QMP client", "err", err)
			}
		}()
	}
}

// qmpSession holds one QMP connection.
func qmpSession(c net.Conn, quit func()) error {
	c.SetDeadline(time.Now().Add(qmpIdle))
	if _, err := io.WriteString(c, greeting); err != nil {
		return err
	}
	dec := json.NewDecoder(bufio.NewReader(io.LimitReader(c, maxCommandBytes*maxCommands)))
	for range maxCommands {
		c.SetDeadline(time.Now().Add(qmpIdle))
		var cmd command
		if err := dec.Decode(&cmd); err != nil {
			if errors.Is(err, io.EOF) {
				return err
			}
			var se *json.SyntaxError
			var te *json.UnmarshalTypeError
			if !errors.As(err, &se) && !errors.As(err, &te) {
				return err
			}
			// What QEMU says to a line it cannot parse; the stream
			// cannot be resynchronised, so the connection ends.
			b, _ := json.Marshal(reply{Error: &qmpError{Class: "GenericError", Desc: "JSON parse error"}})
			c.Write(append(b, '\r', '\n'))
			return fmt.Errorf("bad QMP command: %w", err)
		}
		r, bye := answer(cmd)
		b, err := json.Marshal(r)
		if err != nil {
			return err
		}
		if _, err := c.Write(append(b, '\r', '\n')); err != nil {
			return err
		}
		if bye {
			quit()
			return nil
		}
	}
	return fmt.Errorf("QMP client sent more than %d commands", maxCommands)
}
