package main

import (
	"context"
	"fmt"

	"github.com/qvm-project/qvm/qemu"
	"github.com/qvm-project/qvm/vm"
)

// runSendKey is qvm-sendkey: press keys on a running HVM's emulated
// keyboard, through its device model's QMP send-key (QEMU in its
// stubdomain). Each argument is one combination, its keys pressed
// together ("ctrl-alt-del"); the combinations go in order, so
// `qvm-sendkey work h i ret` types "hi" and Enter.
func runSendKey(ctx context.Context, a *app, args []string) error {
	c := a.newCmdline(ctx, "[options] VMNAME KEY[-KEY...]...")
	var hold int
	c.IntVar(&hold, "hold-time", 0, "hold each combination down this many milliseconds (default: QEMU's, 100)")
	if err := c.parse(args); err != nil {
		return err
	}
	if c.NArg() < 2 {
		return usagef("give a VM name and the keys to press, e.g. %s work ctrl-alt-del (see %s --help)", a.prog, a.prog)
	}
	if hold < 0 || hold > 10000 {
		return usagef("--hold-time %d: give 0 to 10000 milliseconds", hold)
	}
	var combos [][]string
	for _, s := range c.Args()[1:] {
		keys, err := qemu.ParseCombo(s)
		if err != nil {
			return usagef("%v", err)
		}
		combos = append(combos, keys)
	}
	name := c.Arg(0)
	_, sys, err := c.session().load()
	if err != nil {
		return err
	}
	v, err := sys.View(name)
	if err != nil {
		return noSuchDomain(name)
	}
	if v.Class() == vm.AdminVM || v.VirtMode() != vm.HVM {
		return fmt.Errorf("%s is not an HVM: only an HVM has an emulated keyboard (for a PV or PVH VM, type on its console: qvm-console %s)", name, name)
	}
	rt := sys.RuntimeOf(name)
	if !sys.IsRunning(name) || rt.XID < 0 {
		return fmt.Errorf("%s is not running: qvm-start %s first", name, name)
	}
	m, err := qemu.Dial(ctx, qemu.SocketPath(uint32(rt.XID)))
	if err != nil {
		return fmt.Errorf("%s: its device model: %w", name, err)
	}
	defer m.Close()
	for i, keys := range combos {
		if err := m.SendKey(ctx, keys, hold); err != nil {
			return fmt.Errorf("%s: key %s: %w", name, c.Args()[1+i], err)
		}
	}
	return nil
}
