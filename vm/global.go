package vm

import (
	"fmt"
	"sort"
)

// globalProps are the system-wide settings shown by qubes-prefs.
var globalProps = map[string]func(s *System, value string) (string, error){
	GlobalDefaultNetVM: func(s *System, value string) (string, error) {
		if isNone(value) {
			return "", nil
		}
		v, err := s.View(value)
		if err != nil {
			return "", err
		}
		if !v.ProvidesNetwork() {
			return "", fmt.Errorf("%s does not provide network: set `qvm-prefs %s provides_network True` first", value, value)
		}
		return v.d.Name, nil
	},
	GlobalDefaultTemplate: func(s *System, value string) (string, error) {
		if isNone(value) {
			return "", nil
		}
		v, err := s.View(value)
		if err != nil {
			return "", err
		}
		if v.d.Class != TemplateVM {
			return "", fmt.Errorf("%s is a %s, not a TemplateVM", value, v.d.Class)
		}
		return v.d.Name, nil
	},
	GlobalDefaultKernel: func(s *System, value string) (string, error) {
		return checkKernel(&View{sys: s, d: &Definition{}}, value)
	},
	GlobalDefaultDispVM: func(s *System, value string) (string, error) {
		return checkDispVMTemplateRef(&View{sys: s, d: &Definition{}}, value)
	},
	GlobalManagementDispVM: func(s *System, value string) (string, error) {
		return checkDispVMTemplateRef(&View{sys: s, d: &Definition{}}, value)
	},
}

func globalNames() []string {
	names := make([]string, 0, len(globalProps))
	for k := range globalProps {
		names = append(names, k)
	}
	sort.Strings(names)
	return names
}

// GlobalNames lists the global settings, sorted.
func GlobalNames() []string { return globalNames() }

// GetGlobal returns a global setting with its mark (D when not set).
func (s *System) GetGlobal(name string) (Value, error) {
	if _, ok := globalProps[name]; !ok {
		return Value{}, fmt.Errorf("no such global property %q (known: %v)", name, globalNames())
	}
	kind := KindVM
	if name == GlobalDefaultKernel {
		kind = KindString
	}
	if val, ok := s.Global[name]; ok {
		return Value{Text: val, Mark: MarkSet, Kind: kind}, nil
	}
	val := ""
	switch name {
	case GlobalDefaultKernel:
		val = s.newestKernel()
	case GlobalManagementDispVM:
		val = defaultManagementDispVM
	case GlobalDefaultNetVM:
		val = Dom0Name
	}
	return Value{Text: val, Mark: MarkDefault, Kind: kind}, nil
}

// SetGlobal checks and sets a global setting.
func (s *System) SetGlobal(name, value string) error {
	check, ok := globalProps[name]
	if !ok {
		return fmt.Errorf("no such global property %q (known: %v)", name, globalNames())
	}
	canon, err := check(s, value)
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	old, had := s.Global[name]
	if s.Global == nil {
		s.Global = map[string]string{}
	}
	s.Global[name] = canon
	if err := s.Check(); err != nil {
		if had {
			s.Global[name] = old
		} else {
			delete(s.Global, name)
		}
		return err
	}
	return nil
}

// ResetGlobal returns a global setting to its default.
func (s *System) ResetGlobal(name string) error {
	if _, ok := globalProps[name]; !ok {
		return fmt.Errorf("no such global property %q (known: %v)", name, globalNames())
	}
	old, had := s.Global[name]
	delete(s.Global, name)
	if err := s.Check(); err != nil {
		if had {
			s.Global[name] = old
		}
		return err
	}
	return nil
}

// defaultNetVM is the netvm VMs get by default: the global setting, else
// dom0 (qvm: in a single-host setup dom0 is the network backend).
func (s *System) defaultNetVM() string {
	if val, ok := s.Global[GlobalDefaultNetVM]; ok {
		return val
	}
	return Dom0Name
}
