package lifecycle

import (
	"context"
	"errors"
	"fmt"

	"github.com/qvm-project/qvm/vm"
)

// ErrNotPaused is returned (wrapped, with the VM's name) for an unpause of
// a VM that is not paused.
var ErrNotPaused = errors.New("is not paused")

// Pause stops a running VM's vCPUs (and its stubdomain's) where they are;
// the domain stays, with its memory, until Unpause or a kill. A VM that is
// halted or already paused is refused, as in Qubes.
func (m *Manager) Pause(ctx context.Context, name string) error {
	hyp, id, st, err := m.domainOf(ctx, name, "paused")
	if err != nil {
		return err
	}
	if st != vm.Running {
		return fmt.Errorf("%s %w (it is %s): only a running VM can be paused", name, ErrNotRunning, st.Lower())
	}
	if err := hyp.Pause(ctx, id); err != nil {
		return fmt.Errorf("pause %s: %w", name, err)
	}
	return nil
}

// Unpause resumes a paused VM.
func (m *Manager) Unpause(ctx context.Context, name string) error {
	hyp, id, st, err := m.domainOf(ctx, name, "unpaused")
	if err != nil {
		return err
	}
	if st != vm.Paused {
		return fmt.Errorf("%s %w (it is %s)", name, ErrNotPaused, st.Lower())
	}
	if err := hyp.Unpause(ctx, id); err != nil {
		return fmt.Errorf("unpause %s: %w", name, err)
	}
	return nil
}

// domainOf finds the domain of a VM other than dom0 and its power state as
// the hypervisor reports it now.
func (m *Manager) domainOf(ctx context.Context, name, what string) (Hypervisor, uint32, vm.PowerState, error) {
	hyp, err := m.hypervisor()
	if err != nil {
		return nil, 0, "", err
	}
	sys, err := m.Store.Load()
	if err != nil {
		return nil, 0, "", err
	}
	sys.Host = m.Host
	if err := m.withRuntime(ctx, sys); err != nil {
		return nil, 0, "", err
	}
	v, err := sys.View(name)
	if err != nil {
		return nil, 0, "", err
	}
	if v.Class() == vm.AdminVM {
		return nil, 0, "", fmt.Errorf("dom0 cannot be %s", what)
	}
	rt := v.Runtime()
	if rt.XID < 0 {
		return nil, 0, "", fmt.Errorf("%s %w (it is halted): start it first", name, ErrNotRunning)
	}
	return hyp, uint32(rt.XID), rt.State, nil
}
