package lifecycle

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/qvm-project/qvm/vm"
)

// TestPauseUnpause: a running VM pauses and resumes; pausing what is not
// running and unpausing what is not paused are refused and change nothing.
func TestPauseUnpause(t *testing.T) {
	m, _ := setup(t)
	ctx := context.Background()
	state := func() vm.PowerState {
		t.Helper()
		rt, err := m.Runtime(ctx)
		if err != nil {
			t.Fatal(err)
		}
		r, ok := rt("direct")
		if !ok {
			return vm.Halted
		}
		return r.State
	}
	if err := m.Pause(ctx, "direct"); !errors.Is(err, ErrNotRunning) || !strings.Contains(err.Error(), "direct is not running (it is halted)") {
		t.Errorf("pause of a halted VM: %v", err)
	}
	if err := m.Unpause(ctx, "direct"); !errors.Is(err, ErrNotRunning) {
		t.Errorf("unpause of a halted VM: %v", err)
	}
	if _, err := m.Start(ctx, "direct", StartOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := m.Unpause(ctx, "direct"); !errors.Is(err, ErrNotPaused) || err.Error() != "direct is not paused (it is running)" {
		t.Errorf("unpause of a running VM: %v", err)
	}
	if err := m.Pause(ctx, "direct"); err != nil {
		t.Fatal(err)
	}
	if st := state(); st != vm.Paused {
		t.Errorf("after pause: %s", st)
	}
	if err := m.Pause(ctx, "direct"); !errors.Is(err, ErrNotRunning) || !strings.Contains(err.Error(), "(it is paused)") {
		t.Errorf("second pause: %v", err)
	}
	if err := m.Unpause(ctx, "direct"); err != nil {
		t.Fatal(err)
	}
	if st := state(); st != vm.Running {
		t.Errorf("after unpause: %s", st)
	}
	if err := m.Pause(ctx, "dom0"); err == nil || err.Error() != "dom0 cannot be paused" {
		t.Errorf("pause dom0: %v", err)
	}
	if err := m.Pause(ctx, "nope"); !errors.Is(err, vm.ErrNoSuchVM) {
		t.Errorf("pause of no VM: %v", err)
	}
	m.Hyp = nil
	if err := m.Pause(ctx, "direct"); !errors.Is(err, ErrNoHypervisor) {
		t.Errorf("pause without a hypervisor: %v", err)
	}
}
