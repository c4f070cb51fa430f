package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/qvm-project/qvm/lifecycle"
	"github.com/qvm-project/qvm/vm"
)

// runShutdown is qvm-shutdown: ask VMs to shut down; with --wait, wait
// until they are gone (killing them after the timeout).
func runShutdown(ctx context.Context, a *app, args []string) error {
	c := a.newCmdline(ctx, "[options] VMNAME...")
	var wait, all, force bool
	var timeout int
	var exclude []string
	c.BoolVar(&wait, "wait", false, "wait until the VMs are gone")
	c.IntVar(&timeout, "timeout", 0, "seconds to wait before killing (default: each VM's shutdown_timeout)")
	c.BoolVar(&all, "all", false, "every running VM")
	c.StringArrayVar(&exclude, "exclude", nil, "with --all: leave this VM running (repeatable)")
	c.BoolVar(&force, "force", false, "ignored (qvm does not refuse to stop a netvm in use)")
	if err := c.parse(args); err != nil {
		return err
	}
	names, err := targets(c, all, exclude)
	if err != nil {
		return err
	}
	m, done, err := c.manager(ctx)
	if err != nil {
		return err
	}
	defer done()
	var wg sync.WaitGroup
	errs := make([]error, len(names))
	for i, name := range names {
		if !wait {
			errs[i] = m.RequestShutdown(ctx, name)
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			forced, err := m.Shutdown(ctx, name, time.Duration(timeout)*time.Second)
			if forced {
				fmt.Fprintf(a.stderr, "%s: %s did not shut down in time and was killed\n", a.prog, name)
			}
			errs[i] = err
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// runKill is qvm-kill: destroy VMs at once.
func runKill(ctx context.Context, a *app, args []string) error {
	c := a.newCmdline(ctx, "[options] VMNAME...")
	if err := c.parse(args); err != nil {
		return err
	}
	if c.NArg() == 0 {
		return usagef("give at least one VMNAME")
	}
	m, done, err := c.manager(ctx)
	if err != nil {
		return err
	}
	defer done()
	var errs []error
	for _, name := range c.Args() {
		errs = append(errs, m.Kill(ctx, name))
	}
	return errors.Join(errs...)
}

// targets resolves VMNAME... or --all (running VMs but dom0).
func targets(c *cmdline, all bool, exclude []string) ([]string, error) {
	if !all {
		if c.NArg() == 0 {
			return nil, usagef("give at least one VMNAME, or --all")
		}
		return c.Args(), nil
	}
	_, sys, err := c.loadSystem()
	if err != nil {
		return nil, err
	}
	skip := map[string]bool{vm.Dom0Name: true}
	for _, e := range exclude {
		skip[e] = true
	}
	var names []string
	for _, n := range sys.Names() {
		if !skip[n] && sys.IsRunning(n) {
			names = append(names, n)
		}
	}
	return names, nil
}

// runMonitor is the process qvm-start leaves behind for each domain (see
// spawnMonitor): `qvm monitor VMNAME DOMID`.
func runMonitor(ctx context.Context, a *app, args []string) error {
	c := a.newCmdline(ctx, "VMNAME DOMID")
	if err := c.parse(args); err != nil {
		return err
	}
	if c.NArg() != 2 {
		return usagef("give VMNAME DOMID")
	}
	name := c.Arg(0)
	id, err := strconv.ParseUint(c.Arg(1), 10, 32)
	if err != nil {
		return usagef("DOMID %q: %v", c.Arg(1), err)
	}
	m, done, err := c.manager(ctx)
	if err != nil {
		return err
	}
	defer done()
	stopDHCP := startBackendDHCP(c, m, name, uint32(id))
	defer stopDHCP()
	a.log.Info("watching domain", "vm", name, "domid", id)
	reason, err := m.Wait(ctx, name, uint32(id))
	if err != nil {
		return err
	}
	a.log.Info("VM halted", "vm", name, "domid", id, "reason", string(reason))
	return nil
}

// startBackendDHCP runs the DHCP responder on the VM's backend interface
// when dom0 is its network backend, so that a guest without Qubes agents
// (an installer, Windows) gets its address. It returns a stop function.
func startBackendDHCP(c *cmdline, m *lifecycle.Manager, name string, id uint32) func() {
	// The definitions only: the hypervisor need not be asked again.
	sys, err := m.Store.Load()
	if err != nil {
		return func() {}
	}
	sys.Host = m.Host
	v, err := sys.View(name)
	if err != nil || v.NetVM() == nil || v.NetVM().Class() != vm.AdminVM || v.Str("virt_mode") == "hvm" {
		// HVMs get theirs from the stubdomain, on its bridge.
		return func() {}
	}
	self, err := os.Executable()
	if err != nil {
		return func() {}
	}
	ifname := fmt.Sprintf("vif%d.0", id)
	cmd := exec.Command(self, "dhcpd", "--interface", ifname, "--mac", v.Str("mac"), "--ip", v.Str("visible_ip"),
		"--gateway", v.Str("visible_gateway"), "--netmask", v.Str("visible_netmask"), "--hostname", name)
	cmd.Stdout, cmd.Stderr = c.a.stderr, c.a.stderr
	if err := cmd.Start(); err != nil {
		c.a.log.Warn("DHCP responder did not start", "vm", name, "interface", ifname, "err", err)
		return func() {}
	}
	return func() {
		cmd.Process.Signal(syscall.SIGTERM)
		cmd.Wait()
	}
}
