package main

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"strings"

	"github.com/qvm-project/qvm/vifroute"
	"github.com/qvm-project/qvm/vm"
	"github.com/qvm-project/qvm/xenstore"
)

// runVifHook is the hotplug script libxl runs in dom0 for a VM interface
// dom0 serves (installed as /etc/xen/scripts/vif-route-qvm, a link to
// qvm): `vif-route-qvm online|add|offline|remove`, with the interface in
// $vif and its backend's xenstore directory in $XENBUS_PATH.
func runVifHook(ctx context.Context, a *app, args []string) error {
	// libxl runs `vif-route-qvm ACTION type_if=vif|tap`.
	if len(args) < 1 || len(args) > 2 {
		return usagef("usage: vif-route-qvm online|add|offline|remove [type_if=vif|tap] (run by libxl, with $vif and $XENBUS_PATH set)")
	}
	if len(args) == 2 && args[1] == "type_if=tap" {
		// The emulated twin of an HVM's interface (dom0 QEMU only): the
		// PV interface carries the routes.
		return nil
	}
	ifname, backend := os.Getenv("vif"), os.Getenv("XENBUS_PATH")
	if ifname == "" || backend == "" {
		return usagef("$vif and $XENBUS_PATH must be set (this is libxl's hotplug script)")
	}
	if strings.HasSuffix(ifname, "-emu") {
		// The emulated twin of an HVM's interface (dom0 QEMU only): the
		// PV interface carries the routes.
		return nil
	}
	xs, err := xenstore.Dial(ctx)
	if err != nil {
		return fmt.Errorf("connect to xenstored: %w", err)
	}
	defer xs.Close()
	ips, err := xs.ReadString(ctx, backend+"/ip")
	if err != nil {
		return fmt.Errorf("%s: the VM's addresses: %w", ifname, err)
	}
	cfg := vifroute.Config{Interface: ifname,
		Gateways: []netip.Addr{netip.MustParseAddr(vm.Dom0Gateway)}}
	for _, f := range strings.Fields(ips) {
		addr, err := netip.ParseAddr(f)
		if err != nil {
			return fmt.Errorf("%s: address %q in %s/ip: %w", ifname, f, backend, err)
		}
		cfg.VMAddrs = append(cfg.VMAddrs, addr)
		if addr.Is6() {
			cfg.Gateways = append(cfg.Gateways, netip.MustParseAddr(vm.Dom0Gateway6))
		}
	}
	switch args[0] {
	case "online", "add":
		if err := vifroute.Up(cfg); err != nil {
			return err
		}
		return xs.WriteString(ctx, backend+"/hotplug-status", "connected")
	case "offline", "remove":
		return vifroute.Down(cfg)
	}
	return usagef("unknown action %q: want online, add, offline or remove", args[0])
}
