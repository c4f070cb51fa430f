package qrexec

import (
	"fmt"
	"strings"
)

// Command is a parsed EXEC_CMDLINE command line: "[nogui:]USER:COMMAND",
// where COMMAND is either a shell command or "QUBESRPC SERVICE[+ARG]
// SOURCE" for a service call.
type Command struct {
	User    string // "DEFAULT" is the VM's default user
	NoGUI   bool
	Command string // the shell command, when Service is ""
	Service string // the service name, without its argument
	Arg     string // the service argument (after '+'), or ""
	Source  string // the calling domain's name, for a service
}

// RPCPrefix starts the COMMAND of a service call.
const RPCPrefix = "QUBESRPC "

// ParseCommand splits a command line.
func ParseCommand(s string) (Command, error) {
	var c Command
	if rest, ok := strings.CutPrefix(s, "nogui:"); ok {
		c.NoGUI, s = true, rest
	}
	user, cmd, ok := strings.Cut(s, ":")
	if !ok || user == "" {
		return Command{}, fmt.Errorf("%w: command line without USER: prefix", ErrProtocol)
	}
	if !validUser(user) {
		return Command{}, fmt.Errorf("%w: user name %q", ErrProtocol, user)
	}
	c.User = user
	rpc, ok := strings.CutPrefix(cmd, RPCPrefix)
	if !ok {
		if cmd == "" {
			return Command{}, fmt.Errorf("%w: empty command", ErrProtocol)
		}
		c.Command = cmd
		return c, nil
	}
	svc, src, _ := strings.Cut(rpc, " ")
	name, arg, _ := strings.Cut(svc, "+")
	if !validService(name) || strings.ContainsAny(arg, "/ \x00") {
		return Command{}, fmt.Errorf("%w: service %q", ErrProtocol, svc)
	}
	c.Service, c.Arg, c.Source = name, arg, src
	return c, nil
}

// String is the command line of c.
func (c Command) String() string {
	var b strings.Builder
	if c.NoGUI {
		b.WriteString("nogui:")
	}
	b.WriteString(c.User)
	b.WriteByte(':')
	if c.Service == "" {
		b.WriteString(c.Command)
		return b.String()
	}
	b.WriteString(RPCPrefix)
	b.WriteString(c.Service)
	if c.Arg != "" {
		b.WriteByte('+')
		b.WriteString(c.Arg)
	}
	if c.Source != "" {
		b.WriteByte(' ')
		b.WriteString(c.Source)
	}
	return b.String()
}

// validUser accepts a user name of a Linux system: letters, digits and
// "_.-", not starting with '-', at most 32 bytes.
func validUser(s string) bool {
	if s == "" || len(s) > 32 || s[0] == '-' {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !wordByte(s[i]) && s[i] != '-' {
			return false
		}
	}
	return true
}

// validService accepts a service name: letters, digits and "_.-", at most
// 64 bytes, not "." or "..".
func validService(s string) bool {
	if s == "" || len(s) > 64 || s == "." || s == ".." {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !wordByte(s[i]) && s[i] != '-' {
			return false
		}
	}
	return true
}

func wordByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '.'
}

// EncodeVMExec encodes a command's arguments as the argument of the
// qubes.VMExec service: joined by '+', each byte outside [a-zA-Z0-9_.]
// written "-XX" (hex), '-' written "--".
func EncodeVMExec(args []string) string {
	var b strings.Builder
	for i, a := range args {
		if i > 0 {
			b.WriteByte('+')
		}
		for j := 0; j < len(a); j++ {
			switch c := a[j]; {
			case wordByte(c):
				b.WriteByte(c)
			case c == '-':
				b.WriteString("--")
			default:
				fmt.Fprintf(&b, "-%02X", c)
			}
		}
	}
	return b.String()
}

// DecodeVMExec reverses EncodeVMExec.
func DecodeVMExec(s string) ([]string, error) {
	var args []string
	for _, part := range strings.Split(s, "+") {
		var b strings.Builder
		for i := 0; i < len(part); i++ {
			c := part[i]
			switch {
			case wordByte(c):
				b.WriteByte(c)
			case c != '-':
				return nil, fmt.Errorf("%w: byte %q in a VMExec argument", ErrProtocol, c)
			case i+1 < len(part) && part[i+1] == '-':
				b.WriteByte('-')
				i++
			case i+2 < len(part) && hexVal(part[i+1]) >= 0 && hexVal(part[i+2]) >= 0:
				b.WriteByte(byte(hexVal(part[i+1])<<4 | hexVal(part[i+2])))
				i += 2
			default:
				return nil, fmt.Errorf("%w: bad escape in VMExec argument %q", ErrProtocol, part)
			}
		}
		args = append(args, b.String())
	}
	return args, nil
}

func hexVal(c byte) int {
	switch {
	case c >= '0' && c <= '9':
		return int(c - '0')
	case c >= 'a' && c <= 'f':
		return int(c-'a') + 10
	case c >= 'A' && c <= 'F':
		return int(c-'A') + 10
	}
	return -1
}
