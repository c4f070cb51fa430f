package main

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/qvm-project/qvm/qemu/cdrom"
	"github.com/qvm-project/qvm/vm"
	"github.com/qvm-project/qvm/xenstore"
	"github.com/qvm-project/qvm/xl"
)

// runBlock is qvm-block: media in the CD-ROM drive of running HVMs.
//
//	qvm-block attach [--ro] [--devtype=cdrom] [-o devtype=cdrom] VMNAME dom0:PATH
//	qvm-block detach VMNAME dom0:PATH
//	qvm-block ls [VMNAME...]
//
// Only CD-ROM media are supported: an HVM started with --cdrom has a
// drive, and a disc can be swapped in and out while it runs (a second
// installer disc). Other block devices are refused with a clear error.
func runBlock(ctx context.Context, a *app, args []string) error {
	if len(args) == 0 {
		return usagef("usage: %s attach|detach|ls ...", a.prog)
	}
	switch args[0] {
	case "attach", "a":
		return runBlockAttach(ctx, a, args[1:])
	case "detach", "d":
		return runBlockDetach(ctx, a, args[1:])
	case "ls", "list", "l":
		return runBlockLs(ctx, a, args[1:])
	}
	return usagef("unknown action %q: use attach, detach or ls", args[0])
}

// blockDevice parses BACKEND:DEVICE; only dom0 images are supported.
func blockDevice(spec string) (string, error) {
	dom, p, ok := strings.Cut(spec, ":")
	if !ok {
		return "", usagef("device %q: give it as BACKEND:DEVICE, e.g. dom0:/var/lib/iso/disc2.iso", spec)
	}
	if dom != "dom0" {
		return "", fmt.Errorf("device %s: images inside VM %s need an agent in it to serve them, which qvm does not have yet: copy the image to dom0 and use dom0:PATH", spec, dom)
	}
	return checkCDROM("disc", "dom0:"+p)
}

func runBlockAttach(ctx context.Context, a *app, args []string) error {
	c := a.newCmdline(ctx, "attach [options] VMNAME dom0:PATH")
	var ro, persistent bool
	var devtype string
	var opts []string
	c.BoolVar(&ro, "ro", false, "read-only (CD-ROM media always are)")
	c.StringVar(&devtype, "devtype", "", "device type: cdrom (the only one supported)")
	c.StringArrayVarP(&opts, "option", "o", nil, "option KEY=VALUE: devtype=cdrom, read-only=true")
	c.BoolVar(&persistent, "persistent", false, "attach at every start (not supported for media)")
	if err := c.parse(args); err != nil {
		return err
	}
	if c.NArg() != 2 {
		return usagef("give VMNAME and dom0:PATH")
	}
	for _, o := range opts {
		k, v, ok := strings.Cut(o, "=")
		if !ok {
			return usagef("option %q: want KEY=VALUE", o)
		}
		switch k {
		case "devtype":
			devtype = v
		case "read-only":
			b, err := strconv.ParseBool(v)
			if err != nil {
				return usagef("option %s: %q is not true or false", k, v)
			}
			ro = b
		default:
			return usagef("unknown option %q: qvm-block knows devtype and read-only", k)
		}
	}
	if devtype != "cdrom" {
		return fmt.Errorf("devtype %q: qvm-block changes the medium of an HVM's CD-ROM drive only; give --devtype=cdrom (other block devices cannot be attached yet)", devtype)
	}
	if persistent {
		return fmt.Errorf("--persistent: a disc is attached to a running VM only; use qvm-start --cdrom=dom0:PATH to start with one")
	}
	_ = ro // media are always read-only
	path, err := blockDevice(c.Arg(1))
	if err != nil {
		return err
	}
	ch, domid, done, err := blockChanger(ctx, c, c.Arg(0))
	if err != nil {
		return err
	}
	defer done()
	if err := ch.Insert(ctx, domid, path); err != nil {
		return fmt.Errorf("attach dom0:%s to %s: %w", path, c.Arg(0), err)
	}
	return nil
}

func runBlockDetach(ctx context.Context, a *app, args []string) error {
	c := a.newCmdline(ctx, "detach VMNAME [dom0:PATH]")
	if err := c.parse(args); err != nil {
		return err
	}
	if c.NArg() < 1 || c.NArg() > 2 {
		return usagef("give VMNAME and optionally the dom0:PATH to eject")
	}
	path := ""
	if c.NArg() == 2 {
		dom, p, ok := strings.Cut(c.Arg(1), ":")
		if !ok || dom != "dom0" {
			return usagef("device %q: give it as dom0:PATH", c.Arg(1))
		}
		path = p
	}
	ch, domid, done, err := blockChanger(ctx, c, c.Arg(0))
	if err != nil {
		return err
	}
	defer done()
	if err := ch.Eject(ctx, domid, path); err != nil {
		return fmt.Errorf("detach from %s: %w", c.Arg(0), err)
	}
	return nil
}

// runBlockLs lists the CD-ROM drives of running VMs and their media.
func runBlockLs(ctx context.Context, a *app, args []string) error {
	c := a.newCmdline(ctx, "ls [VMNAME...]")
	if err := c.parse(args); err != nil {
		return err
	}
	_, sys, err := c.loadSystem()
	if err != nil {
		return err
	}
	if err := setRuntime(ctx, a, sys); err != nil {
		return err
	}
	names := c.Args()
	if len(names) == 0 {
		names = sys.Names()
	}
	sort.Strings(names)
	type row struct{ dev, desc, vm string }
	var rows []row
	var ch *cdrom.Changer
	for _, name := range names {
		v, err := sys.View(name)
		if err != nil {
			return err
		}
		rt := v.Runtime()
		if rt.XID <= 0 || v.Str("virt_mode") != "hvm" {
			continue
		}
		if ch == nil {
			var done func()
			if ch, done, err = openChanger(ctx, a); err != nil {
				return err
			}
			defer done()
		}
		st, err := ch.Status(ctx, uint32(rt.XID))
		if errors.Is(err, cdrom.ErrNoDrive) {
			continue
		}
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		where := "dom0 QEMU"
		if st.Stubdom != 0 {
			where = "stubdomain"
		}
		if st.Medium == "" {
			rows = append(rows, row{"-", "empty CD-ROM drive (" + where + ")", name + " (" + cdrom.CDROMVdev + ")"})
			continue
		}
		rows = append(rows, row{"dom0:" + st.Medium, "cdrom, read-only (" + where + ")", name + " (" + cdrom.CDROMVdev + ")"})
	}
	tw := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "BACKEND:DEVID\tDESCRIPTION\tUSED BY")
	for _, r := range rows {
		fmt.Fprintf(tw, "%s\t%s\t%s\n", r.dev, r.desc, r.vm)
	}
	return tw.Flush()
}

// blockChanger finds the running HVM name and opens what changing its
// media needs.
func blockChanger(ctx context.Context, c *cmdline, name string) (*cdrom.Changer, uint32, func(), error) {
	_, sys, err := c.loadSystem()
	if err != nil {
		return nil, 0, nil, err
	}
	if err := setRuntime(ctx, c.a, sys); err != nil {
		return nil, 0, nil, err
	}
	v, err := sys.View(name)
	if err != nil {
		return nil, 0, nil, err
	}
	if v.Class() == vm.AdminVM {
		return nil, 0, nil, fmt.Errorf("dom0 has no CD-ROM drive qvm manages")
	}
	rt := v.Runtime()
	if rt.XID <= 0 {
		return nil, 0, nil, fmt.Errorf("%s is not running: start it with qvm-start --cdrom=dom0:PATH to boot from a disc", name)
	}
	if mode := v.Str("virt_mode"); mode != "hvm" {
		return nil, 0, nil, fmt.Errorf("%s is a %s VM: only HVMs have a CD-ROM drive", name, mode)
	}
	ch, done, err := openChanger(ctx, c.a)
	if err != nil {
		return nil, 0, nil, err
	}
	return ch, uint32(rt.XID), done, nil
}

// openChanger connects to libxl and xenstore.
func openChanger(ctx context.Context, a *app) (*cdrom.Changer, func(), error) {
	if !underXen() {
		return nil, nil, fmt.Errorf("this machine is not the dom0 of a running Xen: %s needs the hypervisor", a.prog)
	}
	x, err := xl.Open(ctx, a.log)
	if err != nil {
		return nil, nil, err
	}
	xs, err := xenstore.Dial(ctx)
	if err != nil {
		x.Close()
		return nil, nil, fmt.Errorf("connect to xenstored: %w", err)
	}
	return &cdrom.Changer{XS: xs, Hyp: x, Disks: cdrom.XenstoreDisks{XS: xs}}, func() { xs.Close(); x.Close() }, nil
}
