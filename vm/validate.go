package vm

import (
	"fmt"
	"regexp"
	"strings"
)

// maxStoredValue bounds a stored property value, in bytes.
const maxStoredValue = 4096

var (
	uuidRE = regexp.MustCompile(`\A[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\z`)
	bdfRE  = regexp.MustCompile(`\A[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]\z`)
)

// Validate checks every definition as a store loads it, with the rules a
// create applies: a store edited by hand, damaged or written by someone
// else must not make qvm act on a name such as "../../x" (VM names become
// directory names) or on values nobody could have set. The cross-VM rules
// of Check apply too. Values that depend on the host (an installed kernel)
// are not checked here: a kernel removed later must not make the store
// unreadable.
func (s *System) Validate() error {
	dom0s := 0
	for _, d := range s.VMs {
		if d.Class == AdminVM {
			dom0s++
			if d.Name != Dom0Name || d.QID != 0 {
				return fmt.Errorf("the AdminVM must be dom0 with qid 0, not %q with qid %d", d.Name, d.QID)
			}
			continue
		}
		if err := validateDefinition(d); err != nil {
			return fmt.Errorf("VM %q: %w", d.Name, err)
		}
	}
	if dom0s != 1 {
		return fmt.Errorf("%d AdminVMs: there is exactly one, dom0", dom0s)
	}
	if err := s.validateGlobals(); err != nil {
		return err
	}
	return s.Check()
}

func validateDefinition(d *Definition) error {
	if err := ValidateName(d.Name); err != nil {
		return err
	}
	if _, err := ParseClass(string(d.Class)); err != nil || string(d.Class) != strings.TrimSpace(string(d.Class)) {
		return fmt.Errorf("class %q: %v", d.Class, err)
	}
	for _, c := range creatableClasses {
		if strings.EqualFold(string(c), string(d.Class)) && c != d.Class {
			return fmt.Errorf("class %q is not spelled %s", d.Class, c)
		}
	}
	if d.QID < 1 || d.QID > MaxQID {
		return fmt.Errorf("qid %d is out of range 1..%d", d.QID, MaxQID)
	}
	if d.Class == DispVM && (d.DispID < 1 || d.DispID > MaxQID) {
		return fmt.Errorf("dispid %d is out of range 1..%d", d.DispID, MaxQID)
	}
	if d.Class != DispVM && d.DispID != 0 {
		return fmt.Errorf("a %s has no dispid (it has %d)", d.Class, d.DispID)
	}
	if !uuidRE.MatchString(d.UUID) {
		return fmt.Errorf("uuid %q is not a lower-case UUID", d.UUID)
	}
	if _, err := LookupLabel(d.Props["label"]); err != nil {
		return fmt.Errorf("label: %w", err)
	}
	for name, val := range d.Props {
		p, err := lookupProperty(d.Class, name)
		if err != nil {
			return err
		}
		if p.readOnly || p.check == nil {
			return fmt.Errorf("property %s is read-only and cannot be stored", name)
		}
		if len(val) > maxStoredValue {
			return fmt.Errorf("property %s is %d bytes long: at most %d", name, len(val), maxStoredValue)
		}
		for i := 0; i < len(val); i++ {
			if c := val[i]; c < 0x20 || c > 0x7e {
				return fmt.Errorf("property %s has a control or non-ASCII byte 0x%02x", name, c)
			}
		}
	}
	if k := d.Props["kernel"]; strings.Contains(k, "/") || k == "." || k == ".." {
		return fmt.Errorf("kernel %q is not a kernel name", k)
	}
	for name, val := range d.Features {
		if err := ValidateFeature(name, val); err != nil {
			return err
		}
	}
	seen := map[string]bool{}
	for _, p := range d.PCI {
		if !bdfRE.MatchString(p.BDF) {
			return fmt.Errorf("PCI device %q is not BB:DD.F", p.BDF)
		}
		if seen[p.BDF] {
			return fmt.Errorf("PCI device %s is assigned twice", p.BDF)
		}
		seen[p.BDF] = true
	}
	for i, tag := range d.Tags {
		if err := ValidateTag(tag); err != nil {
			return err
		}
		if i > 0 && d.Tags[i-1] >= tag {
			return fmt.Errorf("tags are not sorted and unique at %q", tag)
		}
	}
	return nil
}
