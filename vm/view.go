package vm

import (
	"fmt"
	"sort"
)

// Mark says where a property's value comes from, as qvm-prefs shows it.
type Mark byte

// The marks of seed 001: default, set, unset.
const (
	MarkDefault Mark = 'D'
	MarkSet     Mark = '-'
	MarkUnset   Mark = 'U'
)

// Kind is a property's value type.
type Kind int

// The property kinds.
const (
	KindString Kind = iota
	KindInt
	KindBool
	KindVM // a reference to another VM; empty means none
	KindLabel
)

// Value is one property's value as seen on a VM.
type Value struct {
	Text string
	Mark Mark
	Kind Kind
}

// String formats the value as qvm-prefs prints it: a VM reference that
// is empty prints as None.
func (v Value) String() string {
	if v.Kind == KindVM && v.Text == "" && v.Mark != MarkUnset {
		return "None"
	}
	return v.Text
}

// View evaluates the properties of one VM within its system.
type View struct {
	sys *System
	d   *Definition
}

// View returns a property view of the named VM.
func (s *System) View(name string) (*View, error) {
	d, err := s.Get(name)
	if err != nil {
		return nil, err
	}
	return &View{sys: s, d: d}, nil
}

func (s *System) viewOf(d *Definition) *View { return &View{sys: s, d: d} }

// Def returns the VM's definition.
func (v *View) Def() *Definition { return v.d }

// Name is the VM's name.
func (v *View) Name() string { return v.d.Name }

// Class is the VM's class.
func (v *View) Class() Class { return v.d.Class }

// Runtime is the VM's live state.
func (v *View) Runtime() Runtime { return v.sys.RuntimeOf(v.d.Name) }

// PropertyNames lists the properties of the VM's class, sorted.
func (v *View) PropertyNames() []string {
	var names []string
	for _, p := range properties {
		if p.appliesTo(v.d.Class) {
			names = append(names, p.name)
		}
	}
	sort.Strings(names)
	return names
}

// Get returns a property's value.
func (v *View) Get(name string) (Value, error) {
	p, err := lookupProperty(v.d.Class, name)
	if err != nil {
		return Value{}, err
	}
	return v.get(p), nil
}

func (v *View) get(p *property) Value {
	if p.compute != nil {
		text, mark := p.compute(v)
		return Value{Text: text, Mark: mark, Kind: p.kind}
	}
	if text, ok := v.d.Props[p.name]; ok {
		return Value{Text: text, Mark: MarkSet, Kind: p.kind}
	}
	if p.def != nil {
		if text, ok := p.def(v); ok {
			return Value{Text: text, Mark: MarkDefault, Kind: p.kind}
		}
	}
	return Value{Mark: MarkUnset, Kind: p.kind}
}

// Str returns a property's effective text: "" when it is unset, none, or
// not a property of the VM's class (dom0 has no kernel). A name that is no
// property at all is a programming error: Str panics, so that a typo
// cannot read as an empty value.
func (v *View) Str(name string) string {
	p, ok := propertyIndex[name]
	if !ok {
		panic(fmt.Sprintf("vm: View.Str(%q): no such property", name))
	}
	if !p.appliesTo(v.d.Class) {
		return ""
	}
	return v.get(p).Text
}

// VirtMode is the VM's virtualisation mode ("" for dom0, which has none).
func (v *View) VirtMode() VirtMode { return VirtMode(v.Str("virt_mode")) }

// Bool returns a boolean property's effective value.
func (v *View) Bool(name string) bool { return v.Str(name) == "True" }

// Int returns an integer property's effective value (0 when unset).
func (v *View) Int(name string) int {
	n, _ := parseInt(v.Str(name))
	return n
}

// Template returns the view of the VM's template, or nil.
func (v *View) Template() *View {
	if !v.d.Class.NeedsTemplate() {
		return nil
	}
	return v.ref(v.d.Props["template"])
}

// NetVM returns the view of the VM's netvm, or nil when disconnected.
func (v *View) NetVM() *View {
	if v.d.Class == AdminVM {
		return nil
	}
	return v.ref(v.Str("netvm"))
}

func (v *View) ref(name string) *View {
	if name == "" {
		return nil
	}
	d, ok := v.sys.Lookup(name)
	if !ok {
		return nil
	}
	return v.sys.viewOf(d)
}

// ProvidesNetwork reports whether other VMs can use this one as netvm.
// dom0 can: in a single-host setup it is the network backend.
func (v *View) ProvidesNetwork() bool {
	return v.d.Class == AdminVM || v.Bool("provides_network")
}

// Networked reports whether the VM has network settings (an IP).
func (v *View) Networked() bool {
	if v.d.Class == AdminVM {
		return false
	}
	return v.NetVM() != nil || v.Bool("provides_network")
}

// Feature returns a feature's value and whether it is set.
func (v *View) Feature(name string) (string, bool) {
	val, ok := v.d.Features[name]
	return val, ok
}

// featureTrue interprets a feature as Qubes does: set and not "" or "0".
func featureTrue(val string, ok bool) bool { return ok && val != "" && val != "0" }

// checkWithNetVM looks for a true feature on the VM, then up its netvm chain.
func (v *View) checkWithNetVM(feature string) bool {
	seen := map[string]bool{}
	for cur := v; cur != nil && !seen[cur.d.Name]; cur = cur.NetVM() {
		seen[cur.d.Name] = true
		if val, ok := cur.Feature(feature); ok {
			return featureTrue(val, ok)
		}
	}
	return false
}

// IPv6 reports whether the VM gets IPv6 addresses.
func (v *View) IPv6() bool { return v.Networked() && v.checkWithNetVM("ipv6") }

// HasPCI reports whether PCI devices are assigned to the VM.
func (v *View) HasPCI() bool { return len(v.d.PCI) > 0 }

// String is the VM's name, for messages.
func (v *View) String() string { return v.d.Name }
