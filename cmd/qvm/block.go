package main

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/qvm-project/qvm/domconfig"
	"github.com/qvm-project/qvm/qemu/cdrom"
	"github.com/qvm-project/qvm/termtext"
	"github.com/qvm-project/qvm/vm"
)

// runBlock is qvm-block: media in the CD-ROM drive of running HVMs.
//
//	qvm-block attach [--ro] [--devtype=cdrom] [-o devtype=cdrom] VMNAME dom0:PATH
//	qvm-block detach VMNAME dom0:PATH
//	qvm-block [ls [VMNAME...]]
//
// Only CD-ROM media are supported: an HVM started with --cdrom has a
// drive, and a disc can be swapped in and out while it runs (a second
// installer disc). Other block devices are refused with a clear error.
func runBlock(ctx context.Context, a *app, args []string) error {
	if len(args) > 0 && (args[0] == "--list-device-classes" || args[0] == "--list-classes") {
		fmt.Fprintln(a.stdout, "block\npci")
		return nil
	}
	return dispatch(ctx, a, args, "list", []subcommand{
		{names: []string{"list", "ls", "l"}, summary: "list the CD-ROM drives of running HVMs and their discs", run: runBlockLs},
		{names: []string{"attach", "at", "a"}, summary: "put a disc into a running HVM's CD-ROM drive", run: runBlockAttach},
		{names: []string{"detach", "d", "dt"}, summary: "eject the disc from a running HVM's CD-ROM drive", run: runBlockDetach},
		{names: []string{"assign", "s"}, summary: "(not supported: discs are attached to running VMs only)", run: blockUnsupported},
		{names: []string{"unassign", "u"}, summary: "(not supported: discs are attached to running VMs only)", run: blockUnsupported},
		{names: []string{"info", "i"}, summary: "(not supported)", run: blockUnsupported},
	})
}

// blockDisc parses BACKEND:DEVICE; only dom0 images are supported.
func blockDisc(spec string) (string, error) {
	if !strings.Contains(spec, ":") {
		return "", usagef("device %q: give it as BACKEND:DEVICE, e.g. dom0:/var/lib/iso/disc2.iso", spec)
	}
	path, err := cdrom.ParseDisc("disc", spec)
	if errors.Is(err, cdrom.ErrRelativePath) {
		return "", usagef("%v", err)
	}
	return path, err
}

// blockAttachOptions are qvm-block attach's options.
type blockAttachOptions struct {
	ro, persistent bool
	devtype        string
	opts           []string
}

func runBlockAttach(ctx context.Context, a *app, args []string) error {
	c := a.newCmdline(ctx, "[options] VMNAME dom0:PATH")
	var o blockAttachOptions
	c.BoolVar(&o.ro, "ro", false, "read-only (CD-ROM media always are)")
	c.StringVar(&o.devtype, "devtype", "", "device type: cdrom (the only one supported)")
	c.StringArrayVarP(&o.opts, "option", "o", nil, "Set option for the device in opt=value form (can be specified multiple times): devtype=cdrom, read-only=yes")
	c.BoolVarP(&o.persistent, "persistent", "p", false, "attach at every start (not supported for media)")
	if err := c.parse(args); err != nil {
		return err
	}
	if c.NArg() != 2 {
		return usagef("give VMNAME and dom0:PATH")
	}
	if err := o.check(); err != nil {
		return err
	}
	path, err := blockDisc(c.Arg(1))
	if err != nil {
		return err
	}
	ch, domid, err := blockChanger(c, c.Arg(0))
	if err != nil {
		return err
	}
	if err := ch.Insert(ctx, domid, path); err != nil {
		return fmt.Errorf("attach dom0:%s to %s: %w", path, c.Arg(0), err)
	}
	return nil
}

// check applies -o options and refuses what qvm-block cannot do.
func (o *blockAttachOptions) check() error {
	for _, opt := range o.opts {
		k, v, ok := strings.Cut(opt, "=")
		if !ok {
			return usagef("option %q: want KEY=VALUE", opt)
		}
		switch k {
		case "devtype":
			o.devtype = v
		case "read-only", "ro":
			b, err := vm.ParseBool(v)
			if err != nil {
				return usagef("option %s: %q is not true or false", k, v)
			}
			o.ro = b
		default:
			return usagef("unknown option %q: qvm-block knows devtype and read-only", k)
		}
	}
	if o.devtype != "cdrom" {
		return fmt.Errorf("devtype %q: qvm-block changes the medium of an HVM's CD-ROM drive only; give --devtype=cdrom (other block devices cannot be attached yet)", o.devtype)
	}
	if o.persistent {
		return fmt.Errorf("--persistent: a disc is attached to a running VM only; use qvm-start --cdrom=dom0:PATH to start with one")
	}
	// Media are always read-only, whatever --ro says.
	return nil
}

// blockUnsupported refuses the actions qvm-block does not have.
func blockUnsupported(ctx context.Context, a *app, args []string) error {
	c := a.newCmdline(ctx, "[options] [VMNAME] [BACKEND:DEVICE_ID]")
	if err := c.parse(args); err != nil {
		return err
	}
	return fmt.Errorf("qvm-block changes the medium of a running HVM's CD-ROM drive only (attach, detach, list): " +
		"to start an HVM with a disc, use qvm-start --cdrom=dom0:PATH")
}

func runBlockDetach(ctx context.Context, a *app, args []string) error {
	c := a.newCmdline(ctx, "VMNAME [dom0:PATH]")
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
	ch, domid, err := blockChanger(c, c.Arg(0))
	if err != nil {
		return err
	}
	if err := ch.Eject(ctx, domid, path); err != nil {
		return fmt.Errorf("detach from %s: %w", c.Arg(0), err)
	}
	return nil
}

// runBlockLs lists the CD-ROM drives of running VMs and their media, as
// Qubes lists block devices: BACKEND:DEVID, a description and who uses it
// ("inst (attached: devtype=cdrom, read-only=yes, frontend-dev=xvdd)"),
// with a header on a terminal only.
func runBlockLs(ctx context.Context, a *app, args []string) error {
	c := a.newCmdline(ctx, "[options] [--all [--exclude EXCLUDE]] [VMNAME...]")
	sel := c.selection("list devices assigned to specific domain(s)")
	c.BoolP("assignments", "s", false, "Include info about device assignments (qvm has none for discs)")
	if err := c.parse(args); err != nil {
		return err
	}
	s := c.session()
	_, sys, err := s.load()
	if err != nil {
		return err
	}
	names, err := sel.resolve(sys, c.Args(), false, true)
	if err != nil {
		return err
	}
	if len(c.Args()) == 0 && !sel.all {
		names = sys.Names()
	}
	sort.Strings(names)
	var rows [][]string
	for _, name := range names {
		v, err := sys.View(name)
		if err != nil {
			return err
		}
		rt := v.Runtime()
		if rt.XID <= 0 || v.VirtMode() != vm.HVM {
			continue
		}
		ch, err := s.changer()
		if err != nil {
			return err
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
			rows = append(rows, []string{"-", "empty CD-ROM drive (" + where + ")", name + " (attached: devtype=cdrom, frontend-dev=" + domconfig.CDROMVdev + ")"})
			continue
		}
		// The path is dom0's (from its backend), or the one the user
		// gave for a disc a VM serves (from libxl's record); a file name
		// can hold anything.
		disc, desc := "dom0:"+termtext.Line(st.Medium), "cdrom, read-only ("+where+")"
		if st.Server != 0 {
			disc = serverName(sys, st.Server) + ":" + termtext.Line(st.Medium)
			desc = "cdrom, read-only, a loop device of its VM (" + where + ")"
		}
		rows = append(rows, []string{disc, desc,
			name + " (attached: devtype=cdrom, read-only=yes, frontend-dev=" + domconfig.CDROMVdev + ")"})
	}
	sort.Slice(rows, func(i, j int) bool { return strings.Join(rows[i], "\x00") < strings.Join(rows[j], "\x00") })
	if a.stdoutIsTerminal() {
		rows = append([][]string{{"BACKEND:DEVID", "DESCRIPTION", "USED BY"}}, rows...)
	}
	writeTable(a.stdout, rows)
	return nil
}

// serverName is the name of the running VM with domain ID domid, or
// "domDOMID" when none of qvm's VMs has it.
func serverName(sys *vm.System, domid uint32) string {
	for _, n := range sys.Names() {
		if v, err := sys.View(n); err == nil && v.Runtime().XID == int(domid) {
			return n
		}
	}
	return fmt.Sprintf("dom%d", domid)
}

// blockChanger finds the running HVM name and opens what changing its
// media needs.
func blockChanger(c *cmdline, name string) (*cdrom.Changer, uint32, error) {
	s := c.session()
	_, sys, err := s.load()
	if err != nil {
		return nil, 0, err
	}
	v, err := sys.View(name)
	if err != nil {
		return nil, 0, err
	}
	if v.Class() == vm.AdminVM {
		return nil, 0, fmt.Errorf("dom0 has no CD-ROM drive qvm manages")
	}
	rt := v.Runtime()
	if rt.XID <= 0 {
		return nil, 0, fmt.Errorf("%s is not running: start it with qvm-start --cdrom=dom0:PATH to boot from a disc", name)
	}
	if mode := v.VirtMode(); mode != vm.HVM {
		return nil, 0, fmt.Errorf("%s is a %s VM: only HVMs have a CD-ROM drive", name, mode)
	}
	ch, err := s.changer()
	if err != nil {
		return nil, 0, err
	}
	return ch, uint32(rt.XID), nil
}
