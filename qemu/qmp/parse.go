package qmp

import (
	"bytes"
	"encoding/json"
	"fmt"
	"time"
)

// kind is what a message is.
type kind int

const (
	kindGreeting kind = iota + 1
	kindReturn
	kindError
	kindEvent
)

func (k kind) String() string {
	switch k {
	case kindGreeting:
		return "greeting"
	case kindReturn:
		return "reply"
	case kindError:
		return "error reply"
	case kindEvent:
		return "event"
	}
	return "message"
}

// message is one parsed message from the peer.
type message struct {
	kind     kind
	greeting Greeting        // kindGreeting
	ret      json.RawMessage // kindReturn
	errClass string          // kindError
	errDesc  string          // kindError
	event    Event           // kindEvent
	id       string          // the id of a reply ("" without one)
}

// describe names m in an error: its kind and id, quoted (so escaped).
func (m message) describe() string {
	if m.id == "" {
		return "a " + m.kind.String() + " without an id"
	}
	return fmt.Sprintf("a %s with id %q", m.kind, m.id)
}

// parseMessage parses one line from the peer: a JSON object with exactly
// one of the keys QMP (the greeting), return, error or event.
func parseMessage(line []byte) (message, error) {
	var top map[string]json.RawMessage
	if err := json.Unmarshal(line, &top); err != nil {
		return message{}, fmt.Errorf("%w: %w", ErrProtocol, err)
	}
	if top == nil {
		return message{}, fmt.Errorf("%w: null, not an object", ErrProtocol)
	}
	var m message
	n := 0
	for _, k := range []struct {
		key  string
		kind kind
	}{{"QMP", kindGreeting}, {"return", kindReturn}, {"error", kindError}, {"event", kindEvent}} {
		if _, ok := top[k.key]; ok {
			m.kind = k.kind
			n++
		}
	}
	if n != 1 {
		return message{}, fmt.Errorf("%w: an object with %d of the keys QMP, return, error and event, not one", ErrProtocol, n)
	}
	if raw, ok := top["id"]; ok {
		// qvm sends string ids; another id matches none of them.
		if err := json.Unmarshal(raw, &m.id); err != nil {
			m.id = string(raw)
		}
		if len(m.id) > 64 {
			m.id = m.id[:64]
		}
	}
	var err error
	switch m.kind {
	case kindGreeting:
		m.greeting, err = parseGreeting(top["QMP"])
	case kindReturn:
		m.ret = top["return"]
	case kindError:
		var e struct {
			Class *string `json:"class"`
			Desc  *string `json:"desc"`
		}
		if err = strictObject(top["error"], &e); err == nil && (e.Class == nil || e.Desc == nil) {
			err = fmt.Errorf("no class or desc")
		}
		if err == nil {
			m.errClass, m.errDesc = *e.Class, *e.Desc
		}
	case kindEvent:
		m.event, err = parseEvent(top)
	}
	if err != nil {
		return message{}, fmt.Errorf("%w: %s: %w", ErrProtocol, m.kind, err)
	}
	return m, nil
}

// strictObject decodes raw, which must be a JSON object, into v.
func strictObject(raw json.RawMessage, v any) error {
	if len(raw) == 0 || raw[0] != '{' {
		return fmt.Errorf("not an object")
	}
	return json.Unmarshal(raw, v)
}

func parseGreeting(raw json.RawMessage) (Greeting, error) {
	var g struct {
		Version *struct {
			QEMU *struct {
				Major, Minor, Micro int
			} `json:"qemu"`
			Package string `json:"package"`
		} `json:"version"`
		Capabilities []string `json:"capabilities"`
	}
	if err := strictObject(raw, &g); err != nil {
		return Greeting{}, err
	}
	if g.Version == nil || g.Version.QEMU == nil {
		return Greeting{}, fmt.Errorf("no version.qemu")
	}
	v := g.Version.QEMU
	return Greeting{Major: v.Major, Minor: v.Minor, Micro: v.Micro, Package: g.Version.Package, Capabilities: g.Capabilities}, nil
}

func parseEvent(top map[string]json.RawMessage) (Event, error) {
	var e Event
	if err := json.Unmarshal(top["event"], &e.Name); err != nil {
		return e, fmt.Errorf("name: %w", err)
	}
	if d, ok := top["data"]; ok && !bytes.Equal(d, []byte("null")) {
		if len(d) == 0 || d[0] != '{' {
			return e, fmt.Errorf("%s: data is not an object", e.Name)
		}
		e.Data = d
	}
	if ts, ok := top["timestamp"]; ok {
		var t struct{ Seconds, Microseconds int64 }
		if err := strictObject(ts, &t); err != nil {
			return e, fmt.Errorf("%s: timestamp: %w", e.Name, err)
		}
		if t.Microseconds >= 0 && t.Microseconds < 1e6 && t.Seconds >= 0 {
			e.Time = time.Unix(t.Seconds, t.Microseconds*1000)
		}
	}
	return e, nil
}
