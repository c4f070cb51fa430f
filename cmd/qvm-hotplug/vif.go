package main

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"

	"github.com/qvm-project/qvm/vifroute"
	"github.com/qvm-project/qvm/vm"
	"github.com/qvm-project/qvm/vmfirewall"
)

// failVifHotplug is a failpoint for the end-to-end tests only: with
// QVM_FAILPOINT=vif-hotplug in qvm-start's environment (libxl passes it on
// to its hotplug scripts) bringing a VM's interface up fails, after libxl
// has built the domain.
const failVifHotplug = "vif-hotplug"

// runVif is vif-route-qvm, the script for a VM interface dom0 serves (see
// vifroute.Hotplug): `vif-route-qvm online|add|offline|remove
// [type_if=vif|tap]`, with the interface in $vif and its backend's
// xenstore directory in $XENBUS_PATH.
func runVif(ctx context.Context, env *hookEnv, args []string) error {
	if len(args) < 1 || len(args) > 2 {
		return usagef("usage: vif-route-qvm online|add|offline|remove [type_if=vif|tap] (run by libxl, with $vif and $XENBUS_PATH set)")
	}
	action := vifroute.Action(args[0])
	up, err := action.Up()
	if err != nil {
		return usagef("%v", err)
	}
	ifname, backend := env.getenv("vif"), env.getenv("XENBUS_PATH")
	if ifname == "" || backend == "" {
		return usagef("$vif and $XENBUS_PATH must be set (this is libxl's hotplug script)")
	}
	if env.getenv("QVM_FAILPOINT") == failVifHotplug && up {
		return fmt.Errorf("failpoint %s: the hotplug step fails (for the end-to-end tests of failures)", failVifHotplug)
	}
	xs, err := env.xenstore(ctx)
	if err != nil {
		return err
	}
	defer xs.Close()
	var fw vmfirewall.Filter
	if len(args) == 2 && args[1] == "type_if=tap" || strings.HasSuffix(ifname, "-emu") {
		// The emulated twin of an HVM's interface (dom0 QEMU only): the
		// PV interface carries the routes, but this one is filtered the
		// same, or the guest could use it to reach dom0.
		if !up {
			return fw.Remove(ctx, ifname)
		}
		addrs, err := vifroute.BackendAddrs(ctx, xs, ifname, backend)
		if err != nil {
			return err
		}
		return fw.Add(ctx, vmfirewall.Vif{Interface: ifname, Addrs: addrs})
	}
	err = vifroute.Hotplug(ctx, xs, action, ifname, backend,
		netip.MustParseAddr(vm.Dom0Gateway), netip.MustParseAddr(vm.Dom0Gateway6), fw)
	if errors.Is(err, vifroute.ErrUnknownAction) {
		return usagef("%v", err)
	}
	return err
}
