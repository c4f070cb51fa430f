package lifecycle

import (
	"context"
	"fmt"
	"time"

	"github.com/qvm-project/qvm/vm"
	"github.com/qvm-project/qvm/xl"
)

// Shutdown asks a running VM to shut down, waits up to its
// shutdown_timeout (or timeout, when positive), then kills it if it is
// still there, and removes its run files. forced reports a kill.
func (m *Manager) Shutdown(ctx context.Context, name string, timeout time.Duration) (forced bool, err error) {
	_, v, id, err := m.running(ctx, name)
	if err != nil {
		return false, err
	}
	if timeout <= 0 {
		timeout = time.Duration(v.Int("shutdown_timeout")) * time.Second
	}
	forced, err = m.Hyp.Shutdown(ctx, id, timeout)
	if err != nil {
		return forced, fmt.Errorf("shut down %s: %w", name, err)
	}
	m.removeRunFiles(v)
	return forced, nil
}

// RequestShutdown asks a running VM to shut down and returns at once; its
// monitor destroys the domain once the guest has halted.
func (m *Manager) RequestShutdown(ctx context.Context, name string) error {
	_, _, id, err := m.running(ctx, name)
	if err != nil {
		return err
	}
	if err := m.Hyp.RequestShutdown(ctx, id); err != nil {
		return fmt.Errorf("shut down %s: %w", name, err)
	}
	return nil
}

// Kill destroys a running VM at once and removes its run files.
func (m *Manager) Kill(ctx context.Context, name string) error {
	sys, _, id, err := m.running(ctx, name)
	if err != nil {
		return err
	}
	return m.kill(ctx, sys, name, id)
}

func (m *Manager) kill(ctx context.Context, sys *vm.System, name string, id uint32) error {
	if err := m.Hyp.Destroy(context.WithoutCancel(ctx), id); err != nil {
		return fmt.Errorf("kill %s: %w", name, err)
	}
	if v, err := sys.View(name); err == nil {
		m.removeRunFiles(v)
	}
	return nil
}

// Wait blocks until the running VM's domain is gone (destroying it once it
// shuts down, which is what on_poweroff/on_reboot/on_crash ask for), then
// removes its run files. It is what a VM's monitor process runs.
func (m *Manager) Wait(ctx context.Context, name string, id uint32) (xl.ShutdownReason, error) {
	reason, err := m.Hyp.WaitDeath(ctx, id)
	if err != nil {
		return reason, fmt.Errorf("wait for %s: %w", name, err)
	}
	if sys, err := m.Store.Load(); err == nil {
		sys.Host = m.Host
		if v, err := sys.View(name); err == nil {
			m.removeRunFiles(v)
		}
	}
	m.log().Info("domain gone", "vm", name, "domid", id, "reason", string(reason))
	return reason, nil
}

// running finds a running VM's domain.
func (m *Manager) running(ctx context.Context, name string) (*vm.System, *vm.View, uint32, error) {
	sys, err := m.Store.Load()
	if err != nil {
		return nil, nil, 0, err
	}
	sys.Host = m.Host
	if err := m.withRuntime(ctx, sys); err != nil {
		return nil, nil, 0, err
	}
	v, err := sys.View(name)
	if err != nil {
		return nil, nil, 0, err
	}
	if v.Class() == vm.AdminVM {
		return nil, nil, 0, fmt.Errorf("dom0 cannot be stopped by qvm")
	}
	id, err := domid(sys, name)
	if err != nil {
		return nil, nil, 0, err
	}
	return sys, v, id, nil
}
