package lifecycle

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/qvm-project/qvm/vm"
	"github.com/qvm-project/qvm/xl"
)

// Shutdown asks a running VM to shut down and waits until its domain is
// gone: its monitor destroys it once the guest has halted (or, without a
// monitor, Shutdown does after a short grace). After the VM's
// shutdown_timeout (or timeout, when positive) it is killed; forced
// reports that. Its run files are removed, and it returns once the VM's
// monitor has finished (see awaitMonitor).
func (m *Manager) Shutdown(ctx context.Context, name string, timeout time.Duration) (forced bool, err error) {
	hyp, err := m.hypervisor()
	if err != nil {
		return false, err
	}
	_, v, id, err := m.running(ctx, name)
	if err != nil {
		return false, err
	}
	if timeout <= 0 {
		timeout = defaultShutdownTimeout
		if v != nil {
			timeout = time.Duration(v.Int("shutdown_timeout")) * time.Second
		}
	}
	if err := hyp.RequestShutdown(ctx, id); err != nil {
		return false, fmt.Errorf("shut down %s: %w", name, err)
	}
	deadline := time.Now().Add(timeout)
	var haltedSince time.Time
	for {
		st, alive, err := domainState(ctx, hyp, id)
		if err != nil {
			return false, fmt.Errorf("shut down %s: %w", name, err)
		}
		if !alive {
			break
		}
		switch {
		case st == xl.StateShutdown && haltedSince.IsZero():
			haltedSince = time.Now()
		case st == xl.StateShutdown && time.Since(haltedSince) > haltedGrace && !Starting(m.Store)(name):
			// Halted, and no monitor (none holds the VM's run lock) to
			// take it away: a live monitor is left to do it, however
			// slow, so that two destroys do not race.
			if err := destroy(ctx, hyp, id); err != nil {
				return false, fmt.Errorf("shut down %s: %w", name, err)
			}
		case time.Now().After(deadline):
			m.log().Warn("VM did not shut down in time, killing it", "vm", name, "timeout", timeout)
			if err := destroy(ctx, hyp, id); err != nil {
				return true, fmt.Errorf("kill %s after its shutdown timeout: %w", name, err)
			}
			forced = true
		}
		select {
		case <-ctx.Done():
			return forced, fmt.Errorf("shut down %s: %w", name, ctx.Err())
		case <-time.After(pollInterval):
		}
	}
	if v != nil {
		m.removeRunFiles(v)
	}
	m.awaitMonitor(ctx, name)
	return forced, nil
}

// How Shutdown watches a domain go.
const (
	// defaultShutdownTimeout is Qubes' shutdown_timeout default, used
	// when the VM's own cannot be read.
	defaultShutdownTimeout = 60 * time.Second
	pollInterval           = 250 * time.Millisecond
	// haltedGrace is how long a halted domain is left for its monitor to
	// destroy before Shutdown does it itself.
	haltedGrace = 3 * time.Second
)

// domainState reports a domain's state, and whether it still exists.
func domainState(ctx context.Context, hyp Hypervisor, id uint32) (xl.DomainState, bool, error) {
	doms, err := hyp.List(ctx)
	if err != nil {
		return "", false, err
	}
	for _, d := range doms {
		if d.ID == id {
			return d.State, true, nil
		}
	}
	return "", false, nil
}

// destroy destroys a domain; another process destroying it at the same
// time (its monitor) is not an error as long as it is gone afterwards.
func destroy(ctx context.Context, hyp Hypervisor, id uint32) error {
	err := hyp.Destroy(context.WithoutCancel(ctx), id)
	if err == nil {
		return nil
	}
	for i := 0; i < 20; i++ {
		if _, alive, lerr := domainState(ctx, hyp, id); lerr == nil && !alive {
			return nil
		}
		time.Sleep(pollInterval)
	}
	return err
}

// RequestShutdown asks a running VM to shut down and returns at once; its
// monitor destroys the domain once the guest has halted.
func (m *Manager) RequestShutdown(ctx context.Context, name string) error {
	hyp, err := m.hypervisor()
	if err != nil {
		return err
	}
	_, _, id, err := m.running(ctx, name)
	if err != nil {
		return err
	}
	if err := hyp.RequestShutdown(ctx, id); err != nil {
		return fmt.Errorf("shut down %s: %w", name, err)
	}
	return nil
}

// Kill destroys a running VM at once and removes its run files; it
// returns once the VM's monitor has finished (see awaitMonitor).
func (m *Manager) Kill(ctx context.Context, name string) error {
	hyp, err := m.hypervisor()
	if err != nil {
		return err
	}
	sys, _, id, err := m.running(ctx, name)
	if err != nil {
		return err
	}
	if err := m.kill(ctx, hyp, sys, name, id); err != nil {
		return err
	}
	m.awaitMonitor(ctx, name)
	return nil
}

func (m *Manager) kill(ctx context.Context, hyp Hypervisor, sys *vm.System, name string, id uint32) error {
	if err := destroy(ctx, hyp, id); err != nil {
		return fmt.Errorf("kill %s: %w", name, err)
	}
	if sys == nil {
		return nil
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
	hyp, err := m.hypervisor()
	if err != nil {
		return "", err
	}
	reason, err := hyp.WaitDeath(ctx, id)
	if err != nil {
		// Someone else (qvm-kill, qvm-shutdown) destroying it at the same
		// moment can make our destroy fail: what matters is that it went.
		if _, alive, lerr := domainState(ctx, hyp, id); lerr != nil || alive {
			return reason, fmt.Errorf("wait for %s: %w", name, err)
		}
		m.log().Info("domain destroyed concurrently", "vm", name, "domid", id, "err", err)
	}
	sys, err := m.Store.Load()
	if err == nil {
		sys.Host = m.Host
		var v *vm.View
		if v, err = sys.View(name); err == nil {
			m.removeRunFiles(v)
		}
	}
	if err != nil {
		m.log().Warn("cannot remove the run files of a VM that is gone", "vm", name, "err", err)
	}
	m.log().Info("domain gone", "vm", name, "domid", id, "reason", string(reason))
	return reason, nil
}

// domainByName finds a domain by its name, for when the definitions are
// not available; dom0 is refused.
func (m *Manager) domainByName(ctx context.Context, name string) (uint32, error) {
	hyp, err := m.hypervisor()
	if err != nil {
		return 0, err
	}
	d, ok, err := domainNamed(ctx, hyp, name)
	if err != nil {
		return 0, err
	}
	if !ok {
		return 0, fmt.Errorf("%s %w (the hypervisor has no domain of that name)", name, ErrNotRunning)
	}
	return d.ID, nil
}

// running finds a running VM's domain.
//
// When the store cannot be read (damaged), a VM that runs can still be
// stopped: its domain is found by name in the hypervisor, and sys and v
// are nil (the caller skips what needs the definitions).
func (m *Manager) running(ctx context.Context, name string) (*vm.System, *vm.View, uint32, error) {
	sys, err := m.Store.Load()
	if err != nil {
		id, ferr := m.domainByName(ctx, name)
		if ferr != nil {
			return nil, nil, 0, errors.Join(err, ferr)
		}
		m.log().Warn("the store cannot be read; acting on the domain alone", "vm", name, "domid", id, "err", err)
		return nil, nil, id, nil
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
