package qrexec

import (
	"bytes"
	"context"
	"io"
	"testing"
)

// rw is a peer that sends fixed bytes and swallows what it is sent.
type rw struct{ io.Reader }

func (rw) Write(p []byte) (int, error) { return len(p), nil }

func hello() []byte {
	var b bytes.Buffer
	WriteMessage(&b, Hello, ExitCodeData(3))
	return b.Bytes()
}

// FuzzRun feeds dom0's side of a data channel what a hostile agent could
// send: it must end (no hang, no panic) and never write more than was sent.
func FuzzRun(f *testing.F) {
	var b bytes.Buffer
	b.Write(hello())
	WriteMessage(&b, DataStdout, []byte("out"))
	WriteMessage(&b, DataExitCode, ExitCodeData(1))
	f.Add(b.Bytes())
	f.Add(append(hello(), 0x91, 1, 0, 0, 0xff, 0xff, 0xff, 0xff))
	f.Fuzz(func(t *testing.T, data []byte) {
		var out, errOut bytes.Buffer
		Run(context.Background(), rw{bytes.NewReader(data)}, nil, &out, &errOut)
		if out.Len()+errOut.Len() > len(data) {
			t.Fatalf("wrote %d bytes from %d", out.Len()+errOut.Len(), len(data))
		}
	})
}

// FuzzControl feeds dom0's end of a control channel.
func FuzzControl(f *testing.F) {
	trig := append(hello(), 0x12, 2, 0, 0, 97, 0, 0, 0)
	trig = append(trig, make([]byte, 97)...)
	f.Add(trig)
	f.Add(append(hello(), 0x11, 2, 0, 0, 8, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := NewControl(rw{bytes.NewReader(data)})
		if err != nil {
			return
		}
		c.Serve(context.Background())
	})
}

// FuzzParse checks the payload parsers: no panic, and what parses
// re-encodes to the same bytes.
func FuzzParse(f *testing.F) {
	f.Add([]byte("\x00\x00\x00\x00\x01\x02\x00\x00root:QUBESRPC qubes.VMExec+ls+--la dom0\x00"))
	f.Add([]byte("nogui:user:ls -l\x00\x00\x00\x00\x00\x00\x00\x00\x00"))
	f.Fuzz(func(t *testing.T, data []byte) {
		if p, err := ParseExecParams(data); err == nil {
			b, err := p.Marshal()
			if err != nil || !bytes.Equal(b, data) {
				t.Fatalf("re-encoded %q as %q, %v", data, b, err)
			}
		}
		if c, err := ParseCommand(string(data)); err == nil {
			if c.String() != string(data) && !bytes.Contains(data, []byte(RPCPrefix)) {
				t.Fatalf("command %q came back as %q", data, c.String())
			}
		}
		if args, err := DecodeVMExec(string(data)); err == nil {
			if _, err := DecodeVMExec(EncodeVMExec(args)); err != nil {
				t.Fatal(err)
			}
		}
	})
}
