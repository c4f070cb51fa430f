package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"github.com/qvm-project/qvm/domconfig"
	"github.com/qvm-project/qvm/lifecycle"
	"github.com/qvm-project/qvm/xl"
)

// runStart is qvm-start: start VMs (their netvms first), or with
// --dry-run print the configuration libxl would get.
func runStart(ctx context.Context, a *app, args []string) error {
	c := a.newCmdline(ctx, "[options] VMNAME...")
	var dryRun, skipRunning, noMonitor bool
	var cdrom string
	c.BoolVar(&dryRun, "dry-run", false, "print the xl.cfg and libxl JSON a start would use; start nothing")
	c.BoolVar(&skipRunning, "skip-if-running", false, "do nothing for VMs that already run")
	c.StringVar(&cdrom, "cdrom", "", "attach an ISO image or CD-ROM device as the HVM's CD-ROM for this run: dom0:/path (or /path)")
	c.BoolVar(&noMonitor, "no-monitor", false, "do not start the process that destroys the domain when the guest halts (for debugging)")
	c.Lookup("no-monitor").Hidden = true
	if err := c.parse(args); err != nil {
		return err
	}
	if c.NArg() == 0 {
		return usagef("give at least one VMNAME")
	}
	opt := lifecycle.StartOptions{}
	if cdrom != "" {
		path, err := checkCDROM("--cdrom", cdrom)
		if err != nil {
			return err
		}
		opt.CDROM = path
	}
	if dryRun {
		m, _, err := c.dryManager()
		if err != nil {
			return err
		}
		for _, name := range c.Args() {
			cfg, err := m.Config(name, opt)
			if err != nil {
				return err
			}
			warnDom0QEMU(a, name, cfg)
			printConfig(a.stdout, name, cfg)
		}
		return nil
	}
	m, done, err := c.manager(ctx)
	if err != nil {
		return err
	}
	defer done()
	for _, name := range c.Args() {
		if cfg, err := m.Config(name, opt); err == nil {
			warnDom0QEMU(a, name, cfg)
		}
		started, err := m.Start(ctx, name, opt)
		if err != nil {
			if skipRunning && strings.Contains(err.Error(), "is already") {
				continue
			}
			return err
		}
		if noMonitor {
			continue
		}
		for _, s := range started {
			if err := spawnMonitor(c, s); err != nil {
				// Without its monitor a halted guest would stay a zombie
				// domain: take it down rather than leave it half managed.
				m.Kill(context.WithoutCancel(ctx), s.Name)
				return fmt.Errorf("start %s: %w", s.Name, err)
			}
		}
	}
	return nil
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

// checkCDROM validates a disc for a CD-ROM drive before anything starts:
// the R4 form dom0:/path, or the R3 form /path; a file must be an ISO 9660
// or UDF image, or a block device. what names the argument in errors
// (--cdrom, or the disc of qvm-block).
func checkCDROM(what, spec string) (string, error) {
	path := spec
	if dom, p, ok := strings.Cut(spec, ":"); ok && !strings.HasPrefix(spec, "/") {
		if dom != "dom0" {
			return "", fmt.Errorf("%s %s: an image inside VM %s needs an agent in it to serve the file, which qvm does not have yet: copy the ISO to dom0 and use dom0:PATH", what, spec, dom)
		}
		path = p
	}
	if !filepath.IsAbs(path) {
		return "", usagef("%s %s: give an absolute path, e.g. dom0:/usr/local/iso/installer.iso", what, spec)
	}
	fi, err := os.Stat(path)
	if err != nil {
		return "", fmt.Errorf("%s: %w", what, err)
	}
	if fi.Mode()&os.ModeDevice != 0 && fi.Mode()&os.ModeCharDevice == 0 {
		return path, nil
	}
	if !fi.Mode().IsRegular() {
		return "", fmt.Errorf("%s %s: not an image file or a block device", what, path)
	}
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("%s: cannot read it: %w", what, err)
	}
	defer f.Close()
	if !isOpticalImage(f) {
		return "", fmt.Errorf("%s %s: not an ISO 9660 or UDF image (no CD001/BEA01/NSR0 descriptor at sector 16): give an installer .iso", what, path)
	}
	return path, nil
}

// isOpticalImage looks for the volume descriptor of ISO 9660 ("CD001")
// or UDF ("BEA01", "NSR02/03") in the descriptors from byte 32768.
func isOpticalImage(r io.ReaderAt) bool {
	buf := make([]byte, 6)
	for sector := int64(16); sector < 32; sector++ {
		if _, err := r.ReadAt(buf, sector*2048); err != nil {
			return false
		}
		switch string(buf[1:6]) {
		case "CD001", "BEA01", "NSR02", "NSR03":
			return true
		}
	}
	return false
}

// spawnMonitor starts the process that watches a VM's domain until it is
// gone: it destroys the domain when the guest halts (on_poweroff
// "destroy"), runs the DHCP responder when dom0 is the VM's backend, and
// cleans up the run files. It outlives this command, in its own session.
func spawnMonitor(c *cmdline, s lifecycle.Started) error {
	self, err := os.Executable()
	if err != nil {
		return fmt.Errorf("find the qvm binary for the monitor: %w", err)
	}
	logDir := filepath.Join(c.stateDir(), "log")
	if err := os.MkdirAll(logDir, 0o755); err != nil {
		return fmt.Errorf("monitor log: %w", err)
	}
	logf, err := os.OpenFile(filepath.Join(logDir, s.Name+".log"), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("monitor log: %w", err)
	}
	defer logf.Close()
	cmd := exec.Command(self, "monitor", "--dir", c.stateDir(), s.Name, strconv.FormatUint(uint64(s.Domid), 10))
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Env = append(os.Environ(), "QVM_DEBUG=1")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start monitor: %w", err)
	}
	return cmd.Process.Release()
}
