package xenstore

import (
	"fmt"
	"strconv"
	"strings"
)

// Access is what a domain may do with a node.
type Access uint8

const (
	AccessNone  Access = iota // 'n': nothing
	AccessRead                // 'r': read the node and list its children
	AccessWrite               // 'w': write, create children, remove
	AccessBoth                // 'b': read and write
)

// Letter returns the access as xenstored spells it: n, r, w or b.
func (a Access) Letter() byte {
	switch a {
	case AccessNone:
		return 'n'
	case AccessRead:
		return 'r'
	case AccessWrite:
		return 'w'
	case AccessBoth:
		return 'b'
	}
	return '?'
}

func (a Access) String() string {
	switch a {
	case AccessNone:
		return "none"
	case AccessRead:
		return "read"
	case AccessWrite:
		return "write"
	case AccessBoth:
		return "both"
	}
	return "Access(" + strconv.Itoa(int(a)) + ")"
}

// Perm is one entry of a node's permission list: a domain and its access.
// Its string form is xenstored's: the access letter then the domid, "r5".
type Perm struct {
	Domid  uint32
	Access Access
}

func (p Perm) String() string {
	return string(p.Access.Letter()) + strconv.FormatUint(uint64(p.Domid), 10)
}

// ParsePerm parses one permission in xenstored's form, such as "n0", "r5" or
// "b7".
func ParsePerm(s string) (Perm, error) {
	if len(s) < 2 {
		return Perm{}, fmt.Errorf("permission %q: want an access letter (n, r, w, b) then a domid, e.g. r5", s)
	}
	var a Access
	switch s[0] {
	case 'n':
		a = AccessNone
	case 'r':
		a = AccessRead
	case 'w':
		a = AccessWrite
	case 'b':
		a = AccessBoth
	default:
		return Perm{}, fmt.Errorf("permission %q: access letter must be n, r, w or b", s)
	}
	for _, c := range s[1:] {
		if c < '0' || c > '9' {
			return Perm{}, fmt.Errorf("permission %q: domid must be decimal digits", s)
		}
	}
	id, err := strconv.ParseUint(s[1:], 10, 32)
	if err != nil {
		return Perm{}, fmt.Errorf("permission %q: domid out of range", s)
	}
	return Perm{Domid: uint32(id), Access: a}, nil
}

// Perms is a node's permission list as xenstored keeps it. The first entry
// names the owner, who may always read and write the node, and gives the
// access of every domain not listed later; each later entry gives one domain
// its access. Dom0 (and a daemon's privileged domain) may do anything
// regardless. A Perms must not be empty when it is set.
//
// Example: Perms{{0, AccessNone}, {5, AccessRead}} ("n0,r5") lets dom0 own
// the node, domain 5 read it and nobody else see it.
type Perms []Perm

// NewPerms returns the list for a node owned by owner, with others as the
// access of every domain not in grants.
func NewPerms(owner uint32, others Access, grants ...Perm) Perms {
	return append(Perms{{Domid: owner, Access: others}}, grants...)
}

// Owner returns the owning domain (the first entry), or 0 for an empty list.
func (p Perms) Owner() uint32 {
	if len(p) == 0 {
		return 0
	}
	return p[0].Domid
}

// String returns the list in xenstore-ls form, comma separated: "n0,r5".
func (p Perms) String() string {
	var b strings.Builder
	for i, e := range p {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(e.String())
	}
	return b.String()
}

// ParsePerms parses a list of permissions separated by commas or spaces
// ("n0,r5" or "n0 r5").
func ParsePerms(s string) (Perms, error) {
	f := strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == ' ' })
	if len(f) == 0 {
		return nil, fmt.Errorf("permissions %q: empty list; give at least the owner, e.g. n0", s)
	}
	out := make(Perms, 0, len(f))
	for _, e := range f {
		p, err := ParsePerm(e)
		if err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	return out, nil
}

// payload encodes the list as the NUL-terminated strings of a set-perms
// request (after the path).
func (p Perms) payload() []byte {
	var b []byte
	for _, e := range p {
		b = append(b, e.String()...)
		b = append(b, 0)
	}
	return b
}

// decodePerms decodes a get-perms reply.
func decodePerms(payload []byte) (Perms, error) {
	s, err := splitStrings(payload)
	if err != nil {
		return nil, err
	}
	if len(s) == 0 {
		return nil, fmt.Errorf("%w: get-perms reply holds no permission", errProtocol)
	}
	out := make(Perms, 0, len(s))
	for _, e := range s {
		p, err := ParsePerm(e)
		if err != nil {
			return nil, fmt.Errorf("%w: %v", errProtocol, err)
		}
		out = append(out, p)
	}
	return out, nil
}
