// Package qrexec is Qubes OS's qrexec protocol, version 3: the messages
// that run a command or a service in a VM and carry its standard input,
// output, error and exit code, over any byte stream (in practice a vchan).
//
// Every message is a header of two little-endian uint32s, the type and
// the length of what follows, and that many bytes. Both ends of every
// channel send HELLO first and use the lower of the two versions. A
// VM's agent serves the control channel (vchan port 512, dom0 the
// client); dom0 asks it there to run a command (EXEC_CMDLINE) and names
// a data channel, which dom0 serves and the agent connects to. On a data
// channel dom0 sends DATA_STDIN, the agent DATA_STDOUT and DATA_STDERR (a
// message of length zero ends each stream) and last DATA_EXIT_CODE.
//
// What the other end sends is not trusted: ReadMessage refuses a length
// above the bound the caller gives before it allocates anything, and the
// parsers here check every length and terminator.
package qrexec

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// Type is a message type.
type Type uint32

// Message types of protocol version 3.
const (
	ExecCmdline          Type = 0x200
	JustExec             Type = 0x201
	ServiceConnect       Type = 0x202
	ServiceRefused       Type = 0x203
	TriggerService       Type = 0x210
	ConnectionTerminated Type = 0x211
	TriggerService3      Type = 0x212
	Hello                Type = 0x300
	DataStdin            Type = 0x190
	DataStdout           Type = 0x191
	DataStderr           Type = 0x192
	DataExitCode         Type = 0x193
)

var typeNames = map[Type]string{
	ExecCmdline: "EXEC_CMDLINE", JustExec: "JUST_EXEC", ServiceConnect: "SERVICE_CONNECT",
	ServiceRefused: "SERVICE_REFUSED", TriggerService: "TRIGGER_SERVICE",
	ConnectionTerminated: "CONNECTION_TERMINATED", TriggerService3: "TRIGGER_SERVICE3",
	Hello: "HELLO", DataStdin: "DATA_STDIN", DataStdout: "DATA_STDOUT",
	DataStderr: "DATA_STDERR", DataExitCode: "DATA_EXIT_CODE",
}

func (t Type) String() string {
	if n, ok := typeNames[t]; ok {
		return n
	}
	return fmt.Sprintf("type %#x", uint32(t))
}

// Version is the protocol version this package speaks.
const Version = 3

// MaxDataChunk is the largest DATA_* payload of version 3.
const MaxDataChunk = 65536

// MaxCmdline bounds the command line of an EXEC_CMDLINE (Qubes: 64 KiB).
const MaxCmdline = 65535

// MaxControl bounds any message on a control channel.
const MaxControl = 8 + MaxCmdline + 1

// HeaderSize is the size of a message header.
const HeaderSize = 8

// Exit codes a qrexec caller reports when the command did not run.
const (
	ExitFailed   = 125 // the qrexec connection failed
	ExitRefused  = 126 // the request was refused
	ExitNotFound = 127 // no such service
)

// ErrTooLong is returned (wrapped) for a message longer than allowed.
var ErrTooLong = errors.New("qrexec message too long")

// ErrProtocol is returned (wrapped) for a message that breaks the protocol.
var ErrProtocol = errors.New("qrexec protocol error")

// Message is one message: its type and payload.
type Message struct {
	Type Type
	Data []byte
}

// WriteMessage writes one message in a single Write.
func WriteMessage(w io.Writer, t Type, data []byte) error {
	buf := make([]byte, HeaderSize+len(data))
	binary.LittleEndian.PutUint32(buf, uint32(t))
	binary.LittleEndian.PutUint32(buf[4:], uint32(len(data)))
	copy(buf[HeaderSize:], data)
	if _, err := w.Write(buf); err != nil {
		return fmt.Errorf("qrexec: write %v: %w", t, err)
	}
	return nil
}

// ReadMessage reads one message whose payload is at most max bytes; a
// longer one is ErrTooLong, found from the header before any payload is
// read or allocated. A stream that ends before a header begins is io.EOF;
// one that ends inside a message is io.ErrUnexpectedEOF.
func ReadMessage(r io.Reader, max int) (Message, error) {
	var hdr [HeaderSize]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return Message{}, err
	}
	t := Type(binary.LittleEndian.Uint32(hdr[:]))
	n := binary.LittleEndian.Uint32(hdr[4:])
	if uint64(n) > uint64(max) {
		return Message{}, fmt.Errorf("%w: %v of %d bytes (at most %d)", ErrTooLong, t, n, max)
	}
	m := Message{Type: t, Data: make([]byte, n)}
	if _, err := io.ReadFull(r, m.Data); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return Message{}, fmt.Errorf("qrexec: read %v: %w", t, err)
	}
	return m, nil
}

// SayHello sends HELLO, reads the peer's and returns the version both
// use (the lower one). A first message that is not a HELLO of four bytes,
// or a version below 2, is ErrProtocol.
func SayHello(rw io.ReadWriter) (int, error) {
	var v [4]byte
	binary.LittleEndian.PutUint32(v[:], Version)
	if err := WriteMessage(rw, Hello, v[:]); err != nil {
		return 0, err
	}
	m, err := ReadMessage(rw, 64)
	if err != nil {
		return 0, fmt.Errorf("qrexec: read the peer's HELLO: %w", err)
	}
	if m.Type != Hello || len(m.Data) != 4 {
		return 0, fmt.Errorf("%w: first message is %v of %d bytes, want HELLO of 4", ErrProtocol, m.Type, len(m.Data))
	}
	peer := binary.LittleEndian.Uint32(m.Data)
	if peer < 2 {
		return 0, fmt.Errorf("%w: peer speaks version %d", ErrProtocol, peer)
	}
	return int(min(peer, Version)), nil
}

// ExecParams is the payload of EXEC_CMDLINE and JUST_EXEC: which data
// channel to connect to (the domain serving it and its vchan port) and
// the command line ("USER:COMMAND").
type ExecParams struct {
	ConnectDomain uint32
	ConnectPort   uint32
	Cmdline       string
}

// Marshal encodes p, its command line NUL-terminated.
func (p ExecParams) Marshal() ([]byte, error) {
	if err := checkCmdline(p.Cmdline); err != nil {
		return nil, err
	}
	b := make([]byte, 8, 8+len(p.Cmdline)+1)
	binary.LittleEndian.PutUint32(b, p.ConnectDomain)
	binary.LittleEndian.PutUint32(b[4:], p.ConnectPort)
	b = append(b, p.Cmdline...)
	return append(b, 0), nil
}

// ParseExecParams decodes an EXEC_CMDLINE or JUST_EXEC payload: eight
// bytes of domain and port, then a command line with one terminating NUL
// and no other.
func ParseExecParams(b []byte) (ExecParams, error) {
	if len(b) < 9 {
		return ExecParams{}, fmt.Errorf("%w: exec parameters of %d bytes", ErrProtocol, len(b))
	}
	if b[len(b)-1] != 0 {
		return ExecParams{}, fmt.Errorf("%w: command line not NUL-terminated", ErrProtocol)
	}
	p := ExecParams{
		ConnectDomain: binary.LittleEndian.Uint32(b),
		ConnectPort:   binary.LittleEndian.Uint32(b[4:]),
		Cmdline:       string(b[8 : len(b)-1]),
	}
	if err := checkCmdline(p.Cmdline); err != nil {
		return ExecParams{}, err
	}
	return p, nil
}

func checkCmdline(s string) error {
	if s == "" {
		return fmt.Errorf("%w: empty command line", ErrProtocol)
	}
	if len(s) > MaxCmdline {
		return fmt.Errorf("%w: command line of %d bytes", ErrTooLong, len(s))
	}
	for i := 0; i < len(s); i++ {
		if s[i] == 0 {
			return fmt.Errorf("%w: NUL inside the command line", ErrProtocol)
		}
	}
	return nil
}

// ExitCodeData encodes an exit code as DATA_EXIT_CODE's payload.
func ExitCodeData(code int) []byte {
	var b [4]byte
	binary.LittleEndian.PutUint32(b[:], uint32(int32(code)))
	return b[:]
}

// ParseExitCode decodes DATA_EXIT_CODE's payload.
func ParseExitCode(b []byte) (int, error) {
	if len(b) != 4 {
		return 0, fmt.Errorf("%w: exit code of %d bytes", ErrProtocol, len(b))
	}
	return int(int32(binary.LittleEndian.Uint32(b))), nil
}
