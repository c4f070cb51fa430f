package vm

import (
	"errors"
	"fmt"
	"sort"
	"strings"
)

// Global settings (qubes-prefs) that VM defaults follow.
const (
	GlobalDefaultNetVM      = "default_netvm"
	GlobalDefaultTemplate   = "default_template"
	GlobalDefaultKernel     = "default_kernel"
	GlobalDefaultDispVM     = "default_dispvm"
	GlobalManagementDispVM  = "management_dispvm"
	defaultManagementDispVM = "default-mgmt-dvm"
)

// Dom0Name is the AdminVM's name. It always exists, with qid 0.
const Dom0Name = "dom0"

// Dom0UUID is dom0's fixed UUID.
const Dom0UUID = "00000000-0000-0000-0000-000000000000"

// MaxQID is the highest qid (and dispid) Qubes hands out.
const MaxQID = 9999

// Host describes the machine, for defaults that depend on it.
type Host struct {
	// MemoryMiB is the host's total memory (caps the default maxmem).
	MemoryMiB int
	// Kernels lists the installed VM kernels, by name (directory under
	// the kernels dir), each with its default kernelopts ("" if none known).
	Kernels map[string]KernelInfo
}

// KernelInfo describes one installed VM kernel.
type KernelInfo struct {
	// DefaultOpts is the kernel's default kernelopts; "" when unknown.
	DefaultOpts string
}

// PowerState is a VM's power state, as Qubes names it.
type PowerState string

// The power states qvm reports.
const (
	// Halted: the hypervisor has no domain for the VM.
	Halted PowerState = "Halted"
	// Running: the domain runs (or is blocked waiting for work).
	Running PowerState = "Running"
	// Paused: the domain exists but its vCPUs are stopped.
	Paused PowerState = "Paused"
	// Halting: the guest has shut down; its domain is not destroyed yet.
	Halting PowerState = "Halting"
	// Dying: the domain is being destroyed.
	Dying PowerState = "Dying"
	// Transient: a qvm command is starting the VM (its domain may not
	// exist yet).
	Transient PowerState = "Transient"
)

// Lower is the state in lower case, as messages and qvm-ls' flags use it.
func (p PowerState) Lower() string { return strings.ToLower(string(p)) }

// Runtime is what the hypervisor says about a VM right now.
type Runtime struct {
	// State is the VM's power state.
	State      PowerState
	XID        int
	StubdomXID int
	StartTime  string
	// MemoryMiB is the memory the domain has now (0 when halted).
	MemoryMiB int
}

// HaltedRuntime is the runtime of a VM the hypervisor does not know.
func HaltedRuntime() Runtime { return Runtime{State: Halted, XID: -1, StubdomXID: -1} }

// System is every VM definition (dom0 included) plus the global settings.
// Host and Runtime are not stored: the caller fills them from the machine.
type System struct {
	Global map[string]string `json:"global,omitempty"`
	VMs    []*Definition     `json:"vms"`

	// Host describes the machine; zero values give conservative defaults.
	Host Host `json:"-"`
	// Runtime, if set, reports the live state of a VM by name.
	Runtime func(name string) (Runtime, bool) `json:"-"`

	byName map[string]*Definition
}

// NewSystem returns a system holding only dom0.
func NewSystem() *System {
	s := &System{}
	s.ensureDom0()
	return s
}

// Normalize makes a freshly decoded system usable: dom0 present, VMs in
// qid order, the name index built. It fails on a corrupt store.
func (s *System) Normalize() error {
	s.ensureDom0()
	seenQID := map[int]string{}
	s.byName = make(map[string]*Definition, len(s.VMs))
	for _, d := range s.VMs {
		if d == nil || d.Name == "" {
			return fmt.Errorf("store holds a VM without a name")
		}
		if other, ok := s.byName[d.Name]; ok && other != d {
			return fmt.Errorf("store holds two VMs named %q", d.Name)
		}
		if other, ok := seenQID[d.QID]; ok {
			return fmt.Errorf("store holds VMs %q and %q with the same qid %d", other, d.Name, d.QID)
		}
		seenQID[d.QID] = d.Name
		s.byName[d.Name] = d
	}
	sort.Slice(s.VMs, func(i, j int) bool { return s.VMs[i].QID < s.VMs[j].QID })
	return nil
}

func (s *System) ensureDom0() {
	for _, d := range s.VMs {
		if d.Class == AdminVM {
			return
		}
	}
	dom0 := &Definition{Name: Dom0Name, Class: AdminVM, QID: 0, UUID: Dom0UUID,
		Props: map[string]string{"label": "black"}}
	s.VMs = append([]*Definition{dom0}, s.VMs...)
	s.byName = nil
}

func (s *System) index() map[string]*Definition {
	if s.byName == nil || len(s.byName) != len(s.VMs) {
		s.byName = make(map[string]*Definition, len(s.VMs))
		for _, d := range s.VMs {
			s.byName[d.Name] = d
		}
	}
	return s.byName
}

// Lookup finds a VM definition by name.
func (s *System) Lookup(name string) (*Definition, bool) {
	d, ok := s.index()[name]
	return d, ok
}

// ErrNoSuchVM is returned (wrapped, with the name) for a VM the system
// does not have.
var ErrNoSuchVM = errors.New("no such VM")

// Get finds a VM or returns an error naming it (matching ErrNoSuchVM).
func (s *System) Get(name string) (*Definition, error) {
	if d, ok := s.Lookup(name); ok {
		return d, nil
	}
	return nil, fmt.Errorf("%w: %q (qvm-ls lists them)", ErrNoSuchVM, name)
}

// Names returns every VM name, sorted.
func (s *System) Names() []string {
	names := make([]string, 0, len(s.VMs))
	for _, d := range s.VMs {
		names = append(names, d.Name)
	}
	sort.Strings(names)
	return names
}

// Add inserts a new definition (already validated) and keeps qid order.
func (s *System) add(d *Definition) {
	s.VMs = append(s.VMs, d)
	sort.Slice(s.VMs, func(i, j int) bool { return s.VMs[i].QID < s.VMs[j].QID })
	s.byName = nil
}

// Delete removes a VM by name (no dependency checks: see Remove).
func (s *System) delete(name string) {
	for i, d := range s.VMs {
		if d.Name == name {
			s.VMs = append(s.VMs[:i], s.VMs[i+1:]...)
			break
		}
	}
	s.byName = nil
}

// RuntimeOf returns the live state of a VM (Halted when unknown).
func (s *System) RuntimeOf(name string) Runtime {
	if name == Dom0Name {
		return Runtime{State: Running, XID: 0, StubdomXID: -1}
	}
	if s.Runtime != nil {
		if rt, ok := s.Runtime(name); ok {
			return rt
		}
	}
	return HaltedRuntime()
}

// IsRunning reports whether the hypervisor has a domain for the VM.
func (s *System) IsRunning(name string) bool {
	return s.RuntimeOf(name).State != Halted
}

func (s *System) global(key string) string { return s.Global[key] }
