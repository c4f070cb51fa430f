package main

import (
	"context"
	"fmt"
	"os"
	"sort"
	"strings"

	"github.com/qvm-project/qvm/store"
	"github.com/qvm-project/qvm/vm"
	"github.com/qvm-project/qvm/xl"
)

// runPCI is qvm-pci: persistent PCI passthrough assignments.
//
//	qvm-pci [ls [VM]]
//	qvm-pci attach --persistent VM dom0:BB_DD.F [-o permissive=True] [-o no-strict-reset=True]
//	qvm-pci detach VM dom0:BB_DD.F
func runPCI(ctx context.Context, a *app, args []string) error {
	c := a.newCmdline(ctx, "[options] [ls [VM] | attach --persistent VM dom0:BB_DD.F [-o OPT=VAL]... | detach VM dom0:BB_DD.F]")
	var persistent bool
	var opts []string
	c.BoolVarP(&persistent, "persistent", "p", false, "assign the device in the VM's definition (qvm attaches PCI devices only this way)")
	c.StringArrayVarP(&opts, "option", "o", nil, "device option: permissive=True, no-strict-reset=True")
	c.Var((*appendList)(&opts), "opt", "same as --option")
	if err := c.parse(args); err != nil {
		return err
	}
	cmd := "ls"
	rest := c.Args()
	if len(rest) > 0 {
		cmd, rest = rest[0], rest[1:]
	}
	switch cmd {
	case "ls", "list", "l":
		return pciList(c, rest)
	case "attach", "a", "at":
		if len(rest) != 2 {
			return usagef("attach takes VM dom0:BB_DD.F")
		}
		if !persistent {
			return usagef("qvm attaches PCI devices persistently only: add --persistent (the device is given to the VM at its next start)")
		}
		return pciChange(ctx, c, rest[0], rest[1], opts, true)
	case "detach", "d", "dt":
		if len(rest) != 2 {
			return usagef("detach takes VM dom0:BB_DD.F")
		}
		return pciChange(ctx, c, rest[0], rest[1], nil, false)
	}
	return usagef("unknown command %q: use ls, attach or detach", cmd)
}

// parseDevice reads Qubes' dom0:BB_DD.F device id into BB:DD.F.
func parseDevice(id string) (string, error) {
	backend, dev, ok := strings.Cut(id, ":")
	if !ok || backend != "dom0" {
		return "", usagef("device %q: give it as dom0:BB_DD.F, e.g. dom0:00_14.0 (PCI devices are dom0's)", id)
	}
	bdf := strings.Replace(dev, "_", ":", 1)
	addr, err := xl.ParsePCIAddress(bdf)
	if err != nil || addr.Domain != 0 {
		return "", usagef("device %q: give it as dom0:BB_DD.F, e.g. dom0:00_14.0", id)
	}
	return fmt.Sprintf("%02x:%02x.%x", addr.Bus, addr.Device, addr.Function), nil
}

func pciChange(ctx context.Context, c *cmdline, name, id string, opts []string, attach bool) error {
	bdf, err := parseDevice(id)
	if err != nil {
		return err
	}
	dev := vm.PCIDevice{BDF: bdf}
	for _, o := range opts {
		k, v, ok := strings.Cut(o, "=")
		if !ok {
			return usagef("option %q must be NAME=VALUE", o)
		}
		b, err := vm.ParseBool(v)
		if err != nil {
			return usagef("option %s: %v", k, err)
		}
		switch strings.ReplaceAll(k, "_", "-") {
		case "permissive":
			dev.Permissive = b
		case "no-strict-reset":
			dev.NoStrictReset = b
		default:
			return usagef("unknown option %q: qvm knows permissive and no-strict-reset", k)
		}
	}
	if attach {
		if _, err := os.Stat(pciSysfs(bdf)); err != nil {
			return fmt.Errorf("device %s: no such PCI device on this host (%v): see lspci for the devices there", id, err)
		}
	}
	return c.update(func(tx *store.Tx) error {
		if attach {
			return tx.Sys.AttachPCI(name, dev)
		}
		return tx.Sys.DetachPCI(name, bdf)
	})
}

func pciList(c *cmdline, names []string) error {
	_, sys, err := c.loadSystem()
	if err != nil {
		return err
	}
	views, err := selectVMs(sys, names, nil, false, false, false)
	if err != nil {
		return err
	}
	rows := [][]string{{"BACKEND:DEVID", "DESCRIPTION", "USED BY"}}
	var devs []string
	users := map[string][]string{}
	for _, v := range views {
		for _, p := range v.Def().PCI {
			id := "dom0:" + strings.Replace(p.BDF, ":", "_", 1)
			if _, ok := users[id]; !ok {
				devs = append(devs, id)
			}
			var o []string
			if p.Permissive {
				o = append(o, "permissive=True")
			}
			if p.NoStrictReset {
				o = append(o, "no-strict-reset=True")
			}
			u := v.Name()
			if len(o) > 0 {
				u += " (" + strings.Join(o, ", ") + ")"
			}
			users[id] = append(users[id], u)
		}
	}
	sort.Strings(devs)
	for _, d := range devs {
		rows = append(rows, []string{d, pciDescription(d), strings.Join(users[d], ", ")})
	}
	writeTable(c.a.stdout, rows)
	return nil
}

// pciDescription names a device from sysfs when it exists on this host.
func pciDescription(id string) string {
	bdf, err := parseDevice(id)
	if err != nil {
		return "?"
	}
	if cls, err := readSysfs(pciSysfs(bdf) + "/class"); err == nil {
		return "PCI device, class " + cls
	}
	return "not present on this host"
}

// pciSysfs is a host PCI device's sysfs directory.
func pciSysfs(bdf string) string { return "/sys/bus/pci/devices/0000:" + bdf }
