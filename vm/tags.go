package vm

import (
	"fmt"
	"sort"
)

// Tags are labels a VM carries (qvm-tags), for selecting VMs
// (qvm-ls --tags) and, in Qubes, for qrexec policies. A tag is made of
// ASCII letters, digits, '_' and '-', as Qubes requires.

// MaxTagLen bounds a tag's length, in bytes (Qubes sets no bound; a tag
// is shown on terminals and kept in the store).
const MaxTagLen = 255

// ValidateTag checks a tag's name.
func ValidateTag(tag string) error {
	switch {
	case tag == "":
		return fmt.Errorf("tag cannot be empty")
	case len(tag) > MaxTagLen:
		return fmt.Errorf("tag is %d bytes long: use at most %d", len(tag), MaxTagLen)
	}
	for i := 0; i < len(tag); i++ {
		c := tag[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return fmt.Errorf("invalid tag %q: disallowed characters; use only ASCII letters, digits, '_' and '-'", tag)
		}
	}
	return nil
}

// AddTag gives a VM a tag (adding one it has is not an error).
func (s *System) AddTag(vmName, tag string) error {
	d, err := s.Get(vmName)
	if err != nil {
		return err
	}
	if err := ValidateTag(tag); err != nil {
		return err
	}
	if !d.HasTag(tag) {
		d.Tags = append(d.Tags, tag)
		sort.Strings(d.Tags)
	}
	return nil
}

// RemoveTag takes a tag from a VM (removing one it does not have is not
// an error, as in Qubes).
func (s *System) RemoveTag(vmName, tag string) error {
	d, err := s.Get(vmName)
	if err != nil {
		return err
	}
	if err := ValidateTag(tag); err != nil {
		return err
	}
	for i, t := range d.Tags {
		if t == tag {
			d.Tags = append(d.Tags[:i:i], d.Tags[i+1:]...)
			break
		}
	}
	if len(d.Tags) == 0 {
		d.Tags = nil
	}
	return nil
}

// HasTag reports whether the VM has the tag.
func (d *Definition) HasTag(tag string) bool {
	for _, t := range d.Tags {
		if t == tag {
			return true
		}
	}
	return false
}
