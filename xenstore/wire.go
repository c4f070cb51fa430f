package xenstore

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strconv"
)

// msgType is the type field of a message header (xsd_sockmsg_type in Xen's
// xs_wire.h).
type msgType uint32

const (
	msgControl            msgType = 0
	msgDirectory          msgType = 1
	msgRead               msgType = 2
	msgGetPerms           msgType = 3
	msgWatch              msgType = 4
	msgUnwatch            msgType = 5
	msgTransactionStart   msgType = 6
	msgTransactionEnd     msgType = 7
	msgIntroduce          msgType = 8
	msgRelease            msgType = 9
	msgGetDomainPath      msgType = 10
	msgWrite              msgType = 11
	msgMkdir              msgType = 12
	msgRm                 msgType = 13
	msgSetPerms           msgType = 14
	msgWatchEvent         msgType = 15
	msgError              msgType = 16
	msgIsDomainIntroduced msgType = 17
	msgResume             msgType = 18
	msgSetTarget          msgType = 19
	msgResetWatches       msgType = 21
	msgDirectoryPart      msgType = 22
	msgTypeCount          msgType = 23
)

var msgNames = [...]string{
	msgControl:            "control",
	msgDirectory:          "directory",
	msgRead:               "read",
	msgGetPerms:           "get-perms",
	msgWatch:              "watch",
	msgUnwatch:            "unwatch",
	msgTransactionStart:   "transaction-start",
	msgTransactionEnd:     "transaction-end",
	msgIntroduce:          "introduce",
	msgRelease:            "release",
	msgGetDomainPath:      "get-domain-path",
	msgWrite:              "write",
	msgMkdir:              "mkdir",
	msgRm:                 "rm",
	msgSetPerms:           "set-perms",
	msgWatchEvent:         "watch-event",
	msgError:              "error",
	msgIsDomainIntroduced: "is-domain-introduced",
	msgResume:             "resume",
	msgSetTarget:          "set-target",
	20:                    "type-20",
	msgResetWatches:       "reset-watches",
	msgDirectoryPart:      "directory-part",
}

func (t msgType) String() string {
	if t < msgTypeCount {
		return msgNames[t]
	}
	return "type-" + strconv.FormatUint(uint64(t), 10)
}

const (
	// headerSize is the size of the fixed message header: type, req_id,
	// tx_id and len, each a little-endian uint32.
	headerSize = 16
	// PayloadMax is the largest payload a message may carry
	// (XENSTORE_PAYLOAD_MAX). The daemon drops a client that sends more.
	PayloadMax = 4096
)

// header is the fixed part of every message, in both directions.
type header struct {
	Type  msgType
	ReqID uint32
	TxID  uint32
	Len   uint32
}

// message is one decoded message: its header and its payload.
type message struct {
	header
	Payload []byte
}

// errProtocol marks a byte stream that is not the xenstore protocol. The
// connection it came from cannot be trusted any further.
var errProtocol = errors.New("xenstore protocol violation")

// appendMessage appends the encoding of one request to buf. The payload is
// the concatenation of parts. The caller has checked the payload size.
func appendMessage(buf []byte, t msgType, reqID, txID uint32, parts ...[]byte) []byte {
	n := 0
	for _, p := range parts {
		n += len(p)
	}
	buf = binary.LittleEndian.AppendUint32(buf, uint32(t))
	buf = binary.LittleEndian.AppendUint32(buf, reqID)
	buf = binary.LittleEndian.AppendUint32(buf, txID)
	buf = binary.LittleEndian.AppendUint32(buf, uint32(n))
	for _, p := range parts {
		buf = append(buf, p...)
	}
	return buf
}

// decodeHeader decodes and checks a 16-byte header.
func decodeHeader(b []byte) (header, error) {
	h := header{
		Type:  msgType(binary.LittleEndian.Uint32(b[0:4])),
		ReqID: binary.LittleEndian.Uint32(b[4:8]),
		TxID:  binary.LittleEndian.Uint32(b[8:12]),
		Len:   binary.LittleEndian.Uint32(b[12:16]),
	}
	if h.Len > PayloadMax {
		return h, fmt.Errorf("%w: %s message announces %d payload bytes, more than the limit of %d", errProtocol, h.Type, h.Len, PayloadMax)
	}
	if h.Type >= msgTypeCount || h.Type == 20 {
		return h, fmt.Errorf("%w: unknown message type %d", errProtocol, uint32(h.Type))
	}
	return h, nil
}

// readMessage reads one message from r. It never allocates more than
// PayloadMax bytes for a payload, whatever the header says: a header that
// announces more is a protocol error.
func readMessage(r *bufio.Reader) (message, error) {
	var hb [headerSize]byte
	if _, err := io.ReadFull(r, hb[:]); err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) {
			return message{}, fmt.Errorf("%w: stream ends inside a message header", errProtocol)
		}
		return message{}, err
	}
	h, err := decodeHeader(hb[:])
	if err != nil {
		return message{}, err
	}
	m := message{header: h, Payload: make([]byte, h.Len)}
	if _, err := io.ReadFull(r, m.Payload); err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return message{}, fmt.Errorf("%w: stream ends inside a %s payload", errProtocol, h.Type)
		}
		return message{}, err
	}
	return m, nil
}

// splitStrings splits a payload of NUL-terminated strings. A payload whose
// last string lacks its terminator is an error. An empty payload is no
// strings.
func splitStrings(p []byte) ([]string, error) {
	if len(p) == 0 {
		return nil, nil
	}
	if p[len(p)-1] != 0 {
		return nil, fmt.Errorf("%w: payload string is not NUL-terminated", errProtocol)
	}
	var out []string
	start := 0
	for i, b := range p {
		if b == 0 {
			out = append(out, string(p[start:i]))
			start = i + 1
		}
	}
	return out, nil
}

// oneString decodes a payload that holds exactly one NUL-terminated string.
// Xenstored terminates these replies; a missing terminator is tolerated
// (some daemons omit it), an embedded NUL is not.
func oneString(p []byte) (string, error) {
	if n := len(p); n > 0 && p[n-1] == 0 {
		p = p[:n-1]
	}
	for _, b := range p {
		if b == 0 {
			return "", fmt.Errorf("%w: reply holds more than one string", errProtocol)
		}
	}
	return string(p), nil
}

// watchEvent decodes a watch event payload: path NUL token NUL (xenstored
// may add further strings after them, which are ignored).
func decodeWatchEvent(p []byte) (path, token string, err error) {
	s, err := splitStrings(p)
	if err != nil {
		return "", "", err
	}
	if len(s) < 2 {
		return "", "", fmt.Errorf("%w: watch event has %d strings, want path and token", errProtocol, len(s))
	}
	return s[0], s[1], nil
}

// decodeDirectoryPart decodes an XS_DIRECTORY_PART reply: the node's
// generation, then child names; an empty name ends the list. It reports
// whether the list is complete.
func decodeDirectoryPart(p []byte) (generation string, names []string, done bool, err error) {
	s, err := splitStrings(p)
	if err != nil {
		return "", nil, false, err
	}
	if len(s) == 0 {
		return "", nil, false, fmt.Errorf("%w: empty directory-part reply", errProtocol)
	}
	generation = s[0]
	for _, n := range s[1:] {
		if n == "" {
			return generation, names, true, nil
		}
		names = append(names, n)
	}
	return generation, names, false, nil
}
