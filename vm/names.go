package vm

import (
	"fmt"
	"regexp"
	"strings"
)

// MaxNameLen is the longest VM name Qubes accepts.
const MaxNameLen = 31

var nameRE = regexp.MustCompile(`\A[a-zA-Z][a-zA-Z0-9_.-]*\z`)

// ValidateName checks a name for a new VM against Qubes' rules.
func ValidateName(name string) error {
	switch {
	case name == "":
		return fmt.Errorf("VM name is empty: give a name such as my-new-vm")
	case len(name) > MaxNameLen:
		return fmt.Errorf("VM name %q is %d characters long: use at most %d", name, len(name), MaxNameLen)
	case !nameRE.MatchString(name):
		return fmt.Errorf("invalid VM name %q: start with a letter, then use only letters, digits, '_', '.' and '-'", name)
	case name == "Domain-0" || name == "none" || name == "None" || name == "default":
		return fmt.Errorf("VM name %q is reserved: choose another name", name)
	case name == "dom0":
		return fmt.Errorf("VM name %q is reserved for the AdminVM: choose another name", name)
	case strings.HasSuffix(name, "-dm"):
		return fmt.Errorf("VM name %q ends in \"-dm\", which names device-model stubdomains: choose another name", name)
	}
	return nil
}

// Label is a VM's colour label.
type Label struct {
	Name  string
	Index int
	Color uint32
}

var labels = []Label{
	{"red", 1, 0xcc0000},
	{"orange", 2, 0xf57900},
	{"yellow", 3, 0xedd400},
	{"green", 4, 0x73d216},
	{"gray", 5, 0x555555},
	{"blue", 6, 0x3465a4},
	{"purple", 7, 0x75507b},
	{"black", 8, 0x000000},
}

// Labels returns every label, in Qubes' order.
func Labels() []Label { return append([]Label(nil), labels...) }

// LookupLabel finds a label by name (any letter case).
func LookupLabel(name string) (Label, error) {
	for _, l := range labels {
		if strings.EqualFold(l.Name, name) {
			return l, nil
		}
	}
	names := make([]string, len(labels))
	for i, l := range labels {
		names[i] = l.Name
	}
	return Label{}, fmt.Errorf("unknown label %q: use one of %s", name, strings.Join(names, ", "))
}

// ColorHex is the label's colour as 0xRRGGBB.
func (l Label) ColorHex() string { return fmt.Sprintf("0x%06x", l.Color) }
