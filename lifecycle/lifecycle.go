// Package lifecycle starts and stops VMs: it prepares a VM's images for a
// run, builds its domain configuration, creates the domain through the
// hypervisor, publishes the VM's QubesDB-like keys in xenstore before the
// guest runs, and cleans up after the domain is gone. Nothing is left half
// done: a start that fails leaves no domain, no keys and no files.
package lifecycle

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"

	"github.com/qvm-project/qvm/store"
	"github.com/qvm-project/qvm/vm"
	"github.com/qvm-project/qvm/xenstore"
	"github.com/qvm-project/qvm/xl"
)

// Hypervisor is what lifecycle needs from Xen. *xl.Context implements it;
// tests on a machine without Xen use a stand-in for this seam only.
type Hypervisor interface {
	// CreatePaused builds the domain and leaves it paused.
	CreatePaused(ctx context.Context, cfg *xl.DomainConfig) (uint32, error)
	Unpause(ctx context.Context, domid uint32) error
	// Pause stops the domain's vCPUs (and its stubdomain's).
	Pause(ctx context.Context, domid uint32) error
	Destroy(ctx context.Context, domid uint32) error
	List(ctx context.Context) ([]xl.DomainInfo, error)
	PhysInfo(ctx context.Context) (xl.PhysInfo, error)
	// RequestShutdown asks the guest to shut down and returns at once.
	RequestShutdown(ctx context.Context, domid uint32) error
	WaitDeath(ctx context.Context, domid uint32) (xl.ShutdownReason, error)
}

// Manager starts and stops the VMs of one store on one host.
type Manager struct {
	Store *store.Store
	// Hyp is the hypervisor; nil for a manager that only computes
	// configurations (dry runs): everything that needs it then fails
	// with ErrNoHypervisor.
	Hyp Hypervisor
	// XS is dom0's xenstore connection.
	XS  *xenstore.Client
	Log *slog.Logger
	// Host describes the machine for the VM model.
	Host vm.Host
	// StubdomKernel and StubdomRamdisk are the HVM stubdomain's files.
	StubdomKernel, StubdomRamdisk string
	// StubdomDM is the stubdomain's device model in dom0
	// (cmd/qvm-stubdom-dm), which libxl runs instead of QEMU.
	StubdomDM string
	// QVM is the qvm binary that each started domain's monitor runs
	// (see monitor.go); empty: Start leaves no monitor behind.
	QVM string
	// Failpoint, for tests only, makes Start stop at a named point (see
	// FailBeforeUnpause).
	Failpoint string
}

// FailBeforeUnpause is a Failpoint: Start waits, with the domain built and
// paused and its keys published, until its context ends (a test kills the
// process there).
const FailBeforeUnpause = "before-unpause"

// ErrNoHypervisor is returned by a Manager without a hypervisor for
// anything that needs one.
var ErrNoHypervisor = errors.New("no hypervisor: this machine is not the dom0 of a running Xen")

// ErrNotRunning is returned (wrapped, with the VM's name) for a VM that
// has no domain.
var ErrNotRunning = errors.New("is not running")

func (m *Manager) hypervisor() (Hypervisor, error) {
	if m.Hyp == nil {
		return nil, ErrNoHypervisor
	}
	return m.Hyp, nil
}

// StubdomSuffix names a VM's device-model stubdomain: NAME-dm.
const StubdomSuffix = "-dm"

// Runtime asks the hypervisor for every domain and returns a lookup of
// each VM's live state, for the VM model.
func (m *Manager) Runtime(ctx context.Context) (func(string) (vm.Runtime, bool), error) {
	hyp, err := m.hypervisor()
	if err != nil {
		return nil, err
	}
	return RuntimeOf(ctx, hyp)
}

// RuntimeOf returns the live state of VMs as the hypervisor reports it.
func RuntimeOf(ctx context.Context, h interface {
	List(context.Context) ([]xl.DomainInfo, error)
}) (func(string) (vm.Runtime, bool), error) {
	doms, err := h.List(ctx)
	if err != nil {
		return nil, err
	}
	byName := make(map[string]xl.DomainInfo, len(doms))
	for _, d := range doms {
		if d.Name != "" {
			byName[d.Name] = d
		}
	}
	return func(name string) (vm.Runtime, bool) {
		d, ok := byName[name]
		if !ok {
			return vm.Runtime{}, false
		}
		rt := vm.Runtime{State: PowerState(d.State), XID: int(d.ID), StubdomXID: -1, MemoryMiB: int(d.CurrentMemKiB / 1024)}
		if s, ok := byName[name+StubdomSuffix]; ok {
			rt.StubdomXID = int(s.ID)
		}
		return rt, true
	}, nil
}

// PowerState maps Xen's domain state to Qubes' power state.
func PowerState(s xl.DomainState) vm.PowerState {
	switch s {
	case xl.StatePaused:
		return vm.Paused
	case xl.StateShutdown:
		return vm.Halting
	case xl.StateDying:
		return vm.Dying
	}
	return vm.Running
}

// runFiles are the files a VM needs only while it runs, in its directory.
const (
	rootSnapshot    = "root-snap.img"
	privateSnapshot = "private-snap.img"
)

func (m *Manager) log() *slog.Logger {
	if m.Log != nil {
		return m.Log
	}
	return slog.Default()
}

// loadWithRuntime reads the system and attaches the live state.
func (m *Manager) withRuntime(ctx context.Context, sys *vm.System) error {
	rt, err := m.Runtime(ctx)
	if err != nil {
		return err
	}
	sys.Runtime = rt
	return nil
}

// domid returns the domain of a running VM.
func domid(sys *vm.System, name string) (uint32, error) {
	rt := sys.RuntimeOf(name)
	if rt.XID < 0 {
		return 0, fmt.Errorf("%s %w", name, ErrNotRunning)
	}
	return uint32(rt.XID), nil
}

func removeIfExists(path string) error {
	if err := os.Remove(path); err != nil && !os.IsNotExist(err) {
		return err
	}
	return nil
}
