package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"sort"
	"strconv"
	"strings"

	"github.com/qvm-project/qvm/pcihost"
	"github.com/qvm-project/qvm/store"
	"github.com/qvm-project/qvm/vm"
	"github.com/qvm-project/qvm/xl"
)

// runPCI is qvm-pci (Qubes' qvm-device pci): the host's PCI devices and
// their assignments to VMs.
//
//	qvm-pci [list [-s] [--with-sbdf] [VM...]]
//	qvm-pci attach --persistent VM dom0:BB_DD.F [-o permissive=True] [-o no-strict-reset=True]
//	qvm-pci assign --required VM dom0:BB_DD.F [-o ...]
//	qvm-pci detach VM [dom0:BB_DD.F]     (qvm: removes the assignment)
//	qvm-pci unassign VM [dom0:BB_DD.F]
//	qvm-pci info dom0:BB_DD.F
func runPCI(ctx context.Context, a *app, args []string) error {
	if len(args) > 0 && (args[0] == "--list-device-classes" || args[0] == "--list-classes") {
		fmt.Fprintln(a.stdout, "block\npci")
		return nil
	}
	return dispatch(ctx, a, args, "list", []subcommand{
		{names: []string{"list", "ls", "l"}, summary: "list devices", run: pciList},
		{names: []string{"attach", "at", "a"}, summary: "Attach device to domain (qvm: with --persistent only, for its next start)", run: runPCIAttach},
		{names: []string{"detach", "d", "dt"}, summary: "Detach device from domain (qvm: removes its assignment)", run: pciUnassign},
		{names: []string{"assign", "s"}, summary: "Assign device to domain (--required: attached at each start)", run: runPCIAssign},
		{names: []string{"unassign", "u"}, summary: "Remove assignment of device from domain", run: pciUnassign},
		{names: []string{"info", "i"}, summary: "Show info about device from domain", run: pciInfo},
	})
}

// pciAssignFlags are the options attach and assign share.
type pciAssignFlags struct {
	opts  []string
	ro    bool
	force bool
}

func (f *pciAssignFlags) define(c *cmdline) {
	c.StringArrayVarP(&f.opts, "option", "o", nil, "Set option for the device in opt=value form (can be specified multiple times): permissive=True, no-strict-reset=True")
	c.BoolVar(&f.ro, "ro", false, "Attach device read-only (not for PCI devices)")
	c.BoolVarP(&f.force, "force", "f", false, "(qvm) assign a device that a dom0 driver uses (dom0 loses it when the VM starts)")
}

func runPCIAttach(ctx context.Context, a *app, args []string) error {
	c := a.newCmdline(ctx, "[options] VMNAME BACKEND:DEVICE_ID")
	var persistent bool
	var f pciAssignFlags
	f.define(c)
	c.BoolVarP(&persistent, "persistent", "p", false, "Alias to `assign --required` for backward compatibility")
	if err := c.parse(args); err != nil {
		return err
	}
	if c.NArg() != 2 {
		return usagef("attach takes VMNAME BACKEND:DEVICE_ID")
	}
	if !persistent {
		return usagef("qvm attaches PCI devices persistently only: add --persistent (the device is given to the VM at its next start)")
	}
	return pciAssign(c, f)
}

func runPCIAssign(ctx context.Context, a *app, args []string) error {
	c := a.newCmdline(ctx, "[options] VMNAME BACKEND:DEVICE_ID")
	var required, ask bool
	var f pciAssignFlags
	f.define(c)
	c.BoolVarP(&required, "required", "r", false, "Mark device as required so it will be required to the qube's startup and then automatically attached")
	c.BoolVar(&ask, "ask", false, "Always ask before auto-attachment")
	c.BoolVar(&ask, "ask-to-attach", false, "same as --ask")
	c.Bool("port", false, "Ignore device presented identity (qvm: always by port)")
	c.Bool("only-port", false, "same as --port")
	c.Bool("device", false, "Ignore current port identity (not supported)")
	c.Bool("only-device", false, "same as --device")
	c.exclude("ask", "ask-to-attach", "required")
	c.exclude("port", "only-port", "device", "only-device")
	if err := c.parse(args); err != nil {
		return err
	}
	if c.NArg() != 2 {
		return usagef("assign takes VMNAME BACKEND:DEVICE_ID")
	}
	if c.Changed("device") || c.Changed("only-device") {
		return fmt.Errorf("--device: qvm assigns PCI devices by their address only")
	}
	if !required {
		return fmt.Errorf("qvm assigns PCI devices as required only (attached at each start, the start fails without them): add --required")
	}
	return pciAssign(c, f)
}

// pciAssign records an assignment (the VM gets the device at its next start).
func pciAssign(c *cmdline, f pciAssignFlags) error {
	if f.ro {
		return fmt.Errorf("--ro: a PCI device cannot be attached read-only")
	}
	dev, err := pciAssignment(c.Arg(1), f.opts)
	if err != nil {
		return err
	}
	host, err := pcihost.Lookup(dev.BDF)
	if err != nil {
		return err
	}
	if err := host.Assignable(f.force); err != nil {
		return err
	}
	return c.session().update(func(tx *store.Tx) error {
		name, err := oneVM(tx.Sys, c.Arg(0))
		if err != nil {
			return err
		}
		return tx.Sys.AttachPCI(name, dev)
	})
}

func pciUnassign(ctx context.Context, a *app, args []string) error {
	c := a.newCmdline(ctx, "[options] VMNAME [BACKEND:DEVICE_ID]")
	if !strings.HasSuffix(a.prog, " detach") {
		c.Bool("port", false, "Ignore device presented identity (qvm: always by port)")
		c.Bool("only-port", false, "same as --port")
		c.Bool("device", false, "Ignore current port identity (not supported)")
		c.Bool("only-device", false, "same as --device")
	}
	if err := c.parse(args); err != nil {
		return err
	}
	if c.NArg() < 1 || c.NArg() > 2 {
		return usagef("give VMNAME [BACKEND:DEVICE_ID]")
	}
	bdf := ""
	if c.NArg() == 2 {
		var err error
		if bdf, err = parseDevice(c.Arg(1)); err != nil {
			return err
		}
	}
	return c.session().update(func(tx *store.Tx) error {
		name, err := oneVM(tx.Sys, c.Arg(0))
		if err != nil {
			return err
		}
		if bdf != "" {
			return tx.Sys.DetachPCI(name, bdf)
		}
		d, _ := tx.Sys.Get(name)
		for len(d.PCI) > 0 {
			if err := tx.Sys.DetachPCI(name, d.PCI[0].BDF); err != nil {
				return err
			}
		}
		return nil
	})
}

func pciInfo(ctx context.Context, a *app, args []string) error {
	c := a.newCmdline(ctx, "[options] BACKEND:DEVICE_ID")
	if err := c.parse(args); err != nil {
		return err
	}
	if c.NArg() != 1 {
		return usagef("info takes BACKEND:DEVICE_ID")
	}
	bdf, err := parseDevice(c.Arg(0))
	if err != nil {
		return err
	}
	d, err := pcihost.Lookup(bdf)
	if err != nil {
		return fmt.Errorf("backend vm dom0 doesn't expose pci device %s", pyRepr(pciPort(bdf)))
	}
	db, _ := pcihost.LoadDB()
	fmt.Fprintln(a.stdout, db.Describe(d))
	fmt.Fprintf(a.stdout, "device ID: %s\n", pciDeviceID(d))
	fmt.Fprintf(a.stdout, "sbdf: 0000:%s\n", d.BDF)
	if d.Driver != "" {
		fmt.Fprintf(a.stdout, "driver: %s\n", d.Driver)
	}
	return nil
}

// pciDeviceID is Qubes' identity of a PCI device: vendor:device::p and
// the class code.
func pciDeviceID(d pcihost.Device) string {
	return fmt.Sprintf("%04x:%04x::p%06x", d.Vendor, d.ID, d.Class)
}

// pciPort is a device's port id, as qvm writes it: BB_DD.F.
func pciPort(bdf string) string { return strings.Replace(bdf, ":", "_", 1) }

// parseDevice reads Qubes' dom0:BB_DD.F device id into BB:DD.F.
func parseDevice(id string) (string, error) {
	backend, dev, ok := strings.Cut(id, ":")
	if !ok || backend != vm.Dom0Name {
		return "", usagef("device %q: give it as dom0:BB_DD.F, e.g. dom0:00_14.0 (PCI devices are dom0's)", id)
	}
	bdf := strings.Replace(dev, "_", ":", 1)
	addr, err := xl.ParsePCIAddress(bdf)
	if err != nil || addr.Domain != 0 {
		return "", usagef("device %q: give it as dom0:BB_DD.F, e.g. dom0:00_14.0", id)
	}
	return fmt.Sprintf("%02x:%02x.%x", addr.Bus, addr.Device, addr.Function), nil
}

// pciAssignment reads a device and its -o options.
func pciAssignment(id string, opts []string) (vm.PCIDevice, error) {
	bdf, err := parseDevice(id)
	if err != nil {
		return vm.PCIDevice{}, err
	}
	dev := vm.PCIDevice{BDF: bdf}
	for _, o := range opts {
		k, v, ok := strings.Cut(o, "=")
		if !ok {
			return dev, usagef("option %q must be NAME=VALUE", o)
		}
		b, err := vm.ParseBool(v)
		if err != nil {
			return dev, usagef("option %s: %v", k, err)
		}
		switch strings.ReplaceAll(k, "_", "-") {
		case "permissive":
			dev.Permissive = b
		case "no-strict-reset":
			dev.NoStrictReset = b
		default:
			return dev, usagef("unknown option %q: qvm knows permissive and no-strict-reset", k)
		}
	}
	return dev, nil
}

// pciOptions are an assignment's options as Qubes lists them.
func pciOptions(p vm.PCIDevice) string {
	var o []string
	if p.Permissive {
		o = append(o, "permissive=True")
	}
	if p.NoStrictReset {
		o = append(o, "no-strict-reset=True")
	}
	return strings.Join(o, ", ")
}

// pciList lists the host's PCI devices with the VMs they are attached to
// now (Qubes: "VM (attached)"), and with -s the assignments, marked *
// ("*VM (required: permissive=True)"). A header is printed on a terminal
// only, as Qubes does.
func pciList(ctx context.Context, a *app, args []string) error {
	c := a.newCmdline(ctx, "[options] [--all [--exclude EXCLUDE]] [VMNAME...]")
	var assignments, withSBDF bool
	sel := c.selection("list devices assigned to specific domain(s)")
	c.BoolVarP(&assignments, "assignments", "s", false, "Include info about device assignments, indicated by '*' before qube name.")
	c.BoolVar(&withSBDF, "with-sbdf", false, "Include resolved PCI path (SBDF) identifier of the PCI devices")
	c.BoolVar(&withSBDF, "resolve-paths", false, "same as --with-sbdf")
	if err := c.parse(args); err != nil {
		return err
	}
	s := c.session()
	_, sys, err := s.load()
	if err != nil {
		return err
	}
	names, err := sel.resolve(sys, c.Args(), false, false)
	if err != nil {
		return err
	}
	filtered := sel.all || len(c.Args()) > 0
	attached, err := s.attachedPCI(sys)
	if err != nil {
		return err
	}
	host, err := pcihost.List()
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	db, _ := pcihost.LoadDB()
	desc := map[string]string{}
	for _, d := range host {
		desc[d.BDF] = db.Describe(d)
	}
	var rows [][]string
	line := func(bdf, description, users string) {
		r := []string{"dom0:" + pciPort(bdf)}
		if withSBDF {
			r = append(r, "0000:"+bdf)
		}
		rows = append(rows, append(r, description, users))
	}
	// The devices there are: dom0 exposes them all; listing for VMs
	// shows those attached to them (and dom0's, when dom0 is named).
	for _, d := range host {
		if filtered && !contains(names, vm.Dom0Name) && !contains(names, attached[d.BDF]) {
			continue
		}
		users := ""
		if u := attached[d.BDF]; u != "" {
			users = u + " (attached)"
		}
		line(d.BDF, desc[d.BDF], users)
	}
	if assignments {
		// Every assignment, whichever VMs were named (a named VM can be
		// the device's backend), as Qubes does.
		users := map[string][]string{}
		var bdfs []string
		for _, n := range sys.Names() {
			d, _ := sys.Get(n)
			for _, p := range d.PCI {
				if users[p.BDF] == nil {
					bdfs = append(bdfs, p.BDF)
				}
				u := "*" + n + " (required"
				if o := pciOptions(p); o != "" {
					u += ": " + o
				}
				users[p.BDF] = append(users[p.BDF], u+")")
			}
		}
		for _, bdf := range bdfs {
			description, ok := desc[bdf]
			if !ok {
				description = "any device"
			}
			line(bdf, description, strings.Join(users[bdf], ", "))
		}
	}
	sort.Slice(rows, func(i, j int) bool { return strings.Join(rows[i], "\x00") < strings.Join(rows[j], "\x00") })
	if a.stdoutIsTerminal() {
		head := []string{"BACKEND:DEVID"}
		if withSBDF {
			head = append(head, "SBDF")
		}
		rows = append([][]string{append(head, "DESCRIPTION", "USED BY")}, rows...)
	}
	writeTable(a.stdout, rows)
	return nil
}

// attachedPCI maps each PCI device attached to a running domain now to
// the VM's name, from dom0's PCI backends in xenstore (what libxl made);
// without Xen nothing is attached.
func (s *session) attachedPCI(sys *vm.System) (map[string]string, error) {
	out := map[string]string{}
	if !underXen() {
		return out, nil
	}
	xs, err := s.xenstore()
	if err != nil {
		return nil, err
	}
	byID := map[string]string{}
	for _, n := range sys.Names() {
		if rt := sys.RuntimeOf(n); rt.XID > 0 {
			byID[strconv.Itoa(rt.XID)] = n
		}
	}
	const base = "/local/domain/0/backend/pci"
	doms, err := xs.Directory(s.ctx, base)
	if err != nil {
		return out, nil // no PCI backend at all
	}
	for _, dom := range doms {
		name, ok := byID[dom]
		if !ok {
			continue
		}
		devs, _ := xs.Directory(s.ctx, base+"/"+dom)
		for _, dev := range devs {
			p := base + "/" + dom + "/" + dev
			num, err := xs.ReadString(s.ctx, p+"/num_devs")
			if err != nil {
				continue
			}
			n, err := strconv.Atoi(num)
			if err != nil || n < 0 || n > 256 {
				continue
			}
			for i := 0; i < n; i++ {
				sbdf, err := xs.ReadString(s.ctx, p+"/dev-"+strconv.Itoa(i))
				if bdf, ok := strings.CutPrefix(sbdf, "0000:"); err == nil && ok {
					out[bdf] = name
				}
			}
		}
	}
	return out, nil
}

// pciCandidates are the host's devices as dom0:BB_DD.F (for completion).
func pciCandidates() []string {
	devs, _ := pcihost.List()
	out := make([]string, len(devs))
	for i, d := range devs {
		out[i] = "dom0:" + pciPort(d.BDF)
	}
	return out
}
