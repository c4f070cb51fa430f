package vm

import (
	"errors"
	"fmt"
	"regexp"
)

// Features are free-form settings of a VM (qvm-features) that qvm and the
// VM's agents read: e.g. ipv6, uefi, service.NAME. Names and values are
// shown on terminals and written into xenstore, so both are restricted.

// MaxFeatureLen bounds a feature's name and its value, in bytes.
const MaxFeatureLen = 1024

var featureNameRE = regexp.MustCompile(`\A[a-zA-Z0-9_.-]+\z`)

// ErrNoSuchFeature is returned (wrapped) for a feature the VM does not have.
var ErrNoSuchFeature = errors.New("no such feature")

// ValidateFeature checks a feature's name and value: the name made of
// letters, digits, '_', '.' and '-', the value printable ASCII (space
// included), each at most MaxFeatureLen bytes.
func ValidateFeature(name, value string) error {
	switch {
	case name == "":
		return fmt.Errorf("feature name is empty")
	case len(name) > MaxFeatureLen:
		return fmt.Errorf("feature name is %d bytes long: use at most %d", len(name), MaxFeatureLen)
	case !featureNameRE.MatchString(name):
		return fmt.Errorf("invalid feature name %q: use only letters, digits, '_', '.' and '-'", name)
	case len(value) > MaxFeatureLen:
		return fmt.Errorf("feature %s: value is %d bytes long: use at most %d", name, len(value), MaxFeatureLen)
	}
	for i := 0; i < len(value); i++ {
		if c := value[i]; c < 0x20 || c > 0x7e {
			return fmt.Errorf("feature %s: value has a control or non-ASCII byte 0x%02x at offset %d: use printable ASCII", name, c, i)
		}
	}
	return nil
}

// SetFeature sets a feature of a VM after checking it.
func (s *System) SetFeature(vmName, name, value string) error {
	d, err := s.Get(vmName)
	if err != nil {
		return err
	}
	if err := ValidateFeature(name, value); err != nil {
		return err
	}
	if d.Features == nil {
		d.Features = map[string]string{}
	}
	d.Features[name] = value
	return nil
}

// UnsetFeature removes a feature of a VM; removing one that is not set is
// not an error (as in Qubes).
func (s *System) UnsetFeature(vmName, name string) error {
	d, err := s.Get(vmName)
	if err != nil {
		return err
	}
	if err := ValidateFeature(name, ""); err != nil {
		return err
	}
	delete(d.Features, name)
	return nil
}

// Feature returns a VM's feature, or an error matching ErrNoSuchFeature.
func (s *System) Feature(vmName, name string) (string, error) {
	d, err := s.Get(vmName)
	if err != nil {
		return "", err
	}
	val, ok := d.Features[name]
	if !ok {
		return "", fmt.Errorf("%w: %s is not set on %s", ErrNoSuchFeature, name, vmName)
	}
	return val, nil
}
