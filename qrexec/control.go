package qrexec

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
)

// Control is dom0's end of a VM's control channel (dom0 is the client
// of the agent's vchan on port 512).
type Control struct {
	r  io.Reader
	lw *lockedWriter
}

// NewControl says HELLO on a control channel and returns dom0's end.
func NewControl(rw io.ReadWriter) (*Control, error) {
	if _, err := SayHello(rw); err != nil {
		return nil, fmt.Errorf("control channel: %w", err)
	}
	return &Control{r: rw, lw: &lockedWriter{w: rw}}, nil
}

// Exec asks the agent to run p.Cmdline with its streams on the data
// channel that domain p.ConnectDomain serves on vchan port p.ConnectPort.
func (c *Control) Exec(p ExecParams) error {
	b, err := p.Marshal()
	if err != nil {
		return err
	}
	return c.lw.send(ExecCmdline, b)
}

// Lengths in TRIGGER_SERVICE3: the target domain's name and the request
// id, both NUL-padded fields, then the service name.
const (
	targetLen = 64
	identLen  = 32
)

// Serve reads what the agent sends on the control channel until it ends
// (nil for a clean close) or ctx does (the caller closes the channel to
// unblock the read). dom0 serves no calls from VMs: a service call
// (TRIGGER_SERVICE3) is refused; notices of ended connections are
// dropped; any other message is a protocol error.
func (c *Control) Serve(ctx context.Context) error {
	for ctx.Err() == nil {
		m, err := ReadMessage(c.r, MaxControl)
		if err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
		switch m.Type {
		case TriggerService3:
			if len(m.Data) < targetLen+identLen+1 {
				return fmt.Errorf("%w: TRIGGER_SERVICE3 of %d bytes", ErrProtocol, len(m.Data))
			}
			ident := m.Data[targetLen : targetLen+identLen]
			if err := c.lw.send(ServiceRefused, bytes.Clone(ident)); err != nil {
				return err
			}
		case ConnectionTerminated:
		default:
			return fmt.Errorf("%w: %v on the control channel", ErrProtocol, m.Type)
		}
	}
	return ctx.Err()
}
