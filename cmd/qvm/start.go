package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/qvm-project/qvm/domconfig"
	"github.com/qvm-project/qvm/lifecycle"
	"github.com/qvm-project/qvm/qemu/cdrom"
	"github.com/qvm-project/qvm/xl"
)

// startOptions are qvm-start's options.
type startOptions struct {
	dryRun, skipRunning, noMonitor, windowsTools bool
	cdrom, drive, hddisk                         string
}

// windowsToolsISO is the disc --install-windows-tools attaches, as Qubes.
const windowsToolsISO = "/usr/lib/qubes/qubes-windows-tools.iso"

// runStart is qvm-start: start VMs (their netvms first), or with
// --dry-run print the configuration libxl would get. Each VM that fails is
// reported and the others still start; the exit code is 1 if any failed.
func runStart(ctx context.Context, a *app, args []string) error {
	c := a.newCmdline(ctx, "[options] [--all [--exclude EXCLUDE]] VMNAME...")
	var o startOptions
	sel := c.selection("")
	c.BoolVar(&o.skipRunning, "skip-if-running", false, "Do not fail if the qube is already running")
	c.StringVar(&o.drive, "drive", "", `temporarily attach specified drive as CD/DVD or hard disk (can be specified with prefix "hd:" or "cdrom:", default is cdrom; qvm: cdrom only)`)
	c.StringVar(&o.hddisk, "hddisk", "", "temporarily attach specified drive as hard disk (not supported by qvm)")
	c.StringVar(&o.cdrom, "cdrom", "", "temporarily attach specified drive as CD/DVD: dom0:/path (or /path) of an ISO image or CD-ROM device, or VM:/path of an image in a running VM")
	c.BoolVar(&o.windowsTools, "install-windows-tools", false, "temporarily attach Windows tools CDROM to the domain")
	c.BoolVar(&o.dryRun, "dry-run", false, "(qvm) print the xl.cfg and libxl JSON a start would use; start nothing")
	c.BoolVar(&o.noMonitor, "no-monitor", false, "do not start the process that destroys the domain when the guest halts (for debugging)")
	c.Lookup("no-monitor").Hidden = true
	c.exclude("drive", "hddisk", "cdrom", "install-windows-tools")
	if err := c.parse(args); err != nil {
		return err
	}
	opt, err := o.startOptions()
	if err != nil {
		return err
	}
	s := c.session()
	_, sys, err := s.load()
	if err != nil {
		return err
	}
	names, err := sel.resolve(sys, c.Args(), true, false)
	if err != nil {
		return err
	}
	if o.dryRun {
		m, err := s.dryManager()
		if err != nil {
			return err
		}
		for _, name := range names {
			cfg, err := m.Config(name, opt)
			if err != nil {
				return err
			}
			warnDom0QEMU(a, name, cfg)
			printConfig(a.stdout, name, cfg)
		}
		return nil
	}
	m, err := s.manager()
	if err != nil {
		return err
	}
	if o.noMonitor {
		m.QVM = ""
	}
	failed := 0
	for _, name := range names {
		if cfg, err := m.Config(name, opt); err == nil {
			warnDom0QEMU(a, name, cfg)
		}
		if _, err := m.Start(ctx, name, opt); err != nil {
			if o.skipRunning && errors.Is(err, lifecycle.ErrAlreadyRunning) {
				continue
			}
			a.printError(fmt.Sprintf("Starting qube failed: %s: %v", name, err))
			failed++
		}
	}
	return exitFailed(failed)
}

// startOptions checks the options that concern the domain: the disc to
// boot from (--cdrom, --drive [cdrom:]..., --install-windows-tools): a
// dom0 disc is checked here; a disc in a VM when the start plans.
func (o startOptions) startOptions() (lifecycle.StartOptions, error) {
	var opt lifecycle.StartOptions
	disc, flag := o.cdrom, "--cdrom"
	switch {
	case o.hddisk != "":
		return opt, fmt.Errorf("--hddisk: qvm attaches a disc for a start as CD-ROM only; give it with --cdrom")
	case o.windowsTools:
		disc, flag = "dom0:"+windowsToolsISO, "--install-windows-tools"
	case o.drive != "":
		flag = "--drive"
		switch kind, rest, ok := strings.Cut(o.drive, ":"); {
		case ok && kind == "hd":
			return opt, fmt.Errorf("--drive %s: qvm attaches a disc for a start as CD-ROM only (cdrom:...)", o.drive)
		case ok && kind == "cdrom":
			disc = rest
		default:
			disc = o.drive
		}
	}
	if vm, path, ok, err := cdrom.VMDisc(flag, disc); ok || err != nil {
		if err != nil {
			return opt, usagef("%v", err)
		}
		opt.CDROMVM, opt.CDROM = vm, path
		return opt, nil
	}
	if disc != "" {
		path, err := cdrom.ParseDisc(flag, disc)
		if errors.Is(err, cdrom.ErrRelativePath) {
			return opt, usagef("%v", err)
		}
		if err != nil {
			return opt, err
		}
		opt.CDROM = path
	}
	return opt, nil
}

// warnDom0QEMU says, on stderr, that an HVM's device model will run in
// dom0 (the VM's qvm-dom0-qemu feature) instead of a stubdomain.
func warnDom0QEMU(a *app, name string, cfg *xl.DomainConfig) {
	if cfg.Type == xl.HVM && !cfg.DeviceModel.Stubdomain {
		fmt.Fprintf(a.stderr, "%s: warning: %s runs its device model (QEMU) in dom0, not in a stubdomain (feature %s): "+
			"a guest that exploits QEMU gets dom0; use this for debugging only (qvm-features --unset %s %s)\n",
			a.prog, name, domconfig.FeatureDom0QEMU, name, domconfig.FeatureDom0QEMU)
	}
}

// printConfig shows a start's configuration as xl.cfg (for Xen's own
// tools) and as libxl's JSON.
func printConfig(w io.Writer, name string, cfg *xl.DomainConfig) {
	fmt.Fprintf(w, "# %s: xl.cfg (xl create -n FILE to check it with Xen's tools)\n%s", name, xl.XLConfig(cfg))
	js, err := xl.JSON(cfg)
	if errors.Is(err, xl.ErrNoLibxl) {
		fmt.Fprintf(w, "# %s: libxl JSON not available: %v\n", name, err)
		return
	}
	if err != nil {
		fmt.Fprintf(w, "# %s: libxl JSON: %v\n", name, err)
		return
	}
	fmt.Fprintf(w, "# %s: libxl domain config (JSON)\n%s\n", name, js)
}
