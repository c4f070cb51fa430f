package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/qvm-project/qvm/lifecycle"
	"github.com/qvm-project/qvm/vm"
)

// runShutdown is qvm-shutdown: ask VMs to shut down; with --wait, wait
// until they are gone (killing them after their shutdown_timeout, or
// --timeout). VMs that are not running are not errors; each failure is
// reported and counted in the exit code, as in Qubes.
func runShutdown(ctx context.Context, a *app, args []string) error {
	c := a.newCmdline(ctx, "[options] [--all [--exclude EXCLUDE]] VMNAME...")
	var wait, force, dryRun bool
	var timeout string
	sel := c.selection("")
	c.BoolVar(&wait, "wait", false, "wait for the VMs to shut down")
	c.StringVar(&timeout, "timeout", "", "Deprecated, use --wait instead. Setting this option will enable --wait (qvm: seconds to wait before killing)")
	c.BoolVar(&force, "force", false, "shut down even if other qubes depend on this one (qvm never refuses)")
	c.BoolVar(&dryRun, "dry-run", false, "don't really shutdown or kill the domains; useful with --wait")
	if err := c.parse(args); err != nil {
		return err
	}
	secs := 0
	if timeout != "" {
		n, err := strconv.Atoi(timeout)
		if err != nil || n < 0 {
			return usagef("argument --timeout: %s is not a number of seconds", pyRepr(timeout))
		}
		secs, wait = n, true
	}
	_, sys, err := c.session().load()
	if err != nil {
		return err
	}
	names, err := sel.resolve(sys, c.Args(), true, false)
	if err != nil {
		return err
	}
	if dryRun {
		return nil
	}
	// Without Xen nothing runs: say so rather than succeed.
	m, err := c.session().manager()
	if err != nil {
		return err
	}
	var running []string
	for _, n := range names {
		if sys.IsRunning(n) {
			running = append(running, n)
		}
	}
	var wg sync.WaitGroup
	errs := make([]error, len(running))
	for i, name := range running {
		if !wait {
			errs[i] = m.RequestShutdown(ctx, name)
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			forced, err := m.Shutdown(ctx, name, time.Duration(secs)*time.Second)
			if forced {
				fmt.Fprintf(a.stderr, "%s: %s did not shut down in time and was killed\n", a.prog, name)
			}
			errs[i] = err
		}()
	}
	wg.Wait()
	return reportFailures(a, "Failed to shut down", running, errs)
}

// reportFailures prints each VM's failure, as Qubes does, and exits with
// their number.
func reportFailures(a *app, what string, names []string, errs []error) error {
	failed := 0
	for i, err := range errs {
		if err != nil && !errors.Is(err, lifecycle.ErrNotRunning) {
			a.printError(fmt.Sprintf("%s: %s: %v", what, names[i], err))
			failed++
		}
	}
	if failed > 0 {
		return exitWith(failed, "")
	}
	return nil
}

// runKill is qvm-kill: destroy VMs at once. A VM that is not running is
// not an error; the exit code is the number of failures.
func runKill(ctx context.Context, a *app, args []string) error {
	c := a.newCmdline(ctx, "[options] [--all [--exclude EXCLUDE]] VMNAME...")
	sel := c.selection("")
	if err := c.parse(args); err != nil {
		return err
	}
	_, sys, err := c.session().load()
	if err != nil {
		return err
	}
	names, err := sel.resolve(sys, c.Args(), true, false)
	if err != nil {
		return err
	}
	for _, n := range names {
		if n == vm.Dom0Name {
			return fmt.Errorf("dom0 cannot be killed")
		}
	}
	m, err := c.session().manager()
	if err != nil {
		return err
	}
	var running []string
	for _, n := range names {
		if sys.IsRunning(n) {
			running = append(running, n)
		}
	}
	errs := make([]error, len(running))
	for i, name := range running {
		errs[i] = m.Kill(ctx, name)
	}
	return reportFailures(a, "Failed to kill", running, errs)
}

// runMonitor is the process that watches a domain (see
// lifecycle/monitor.go): `qvm monitor --handoff VMNAME` as qvm-start spawns
// it (the run lock on fd 3, qvm-start's pipe on fd 4), or `qvm monitor
// VMNAME DOMID` to watch a running domain whose monitor is gone. It writes
// the VM's log itself, bounded (lifecycle.OpenLog): its own lines at Info
// level (or Debug with QVM_DEBUG), the Go runtime's (its standard output
// and error follow the log file) and its DHCP responder's.
func runMonitor(ctx context.Context, a *app, args []string) error {
	c := a.newCmdline(ctx, "[--handoff VMNAME | VMNAME DOMID]")
	var handoff bool
	c.BoolVar(&handoff, strings.TrimPrefix(lifecycle.HandoffFlag, "--"), false, "spawned by qvm-start: the run lock on fd 3, the handoff pipe on fd 4")
	if err := c.parse(args); err != nil {
		return err
	}
	var id uint64
	switch {
	case handoff && c.NArg() != 1:
		return usagef("give --handoff VMNAME")
	case !handoff && c.NArg() != 2:
		return usagef("give VMNAME DOMID")
	case !handoff:
		var err error
		if id, err = strconv.ParseUint(c.Arg(1), 10, 32); err != nil {
			return usagef("DOMID %q: %v", c.Arg(1), err)
		}
	}
	name := c.Arg(0)
	st, err := c.session().store()
	if err != nil {
		return err
	}
	level := slog.LevelInfo
	if a.log.Enabled(ctx, slog.LevelDebug) {
		level = slog.LevelDebug
	}
	var out io.Writer
	if lf, err := lifecycle.OpenLog(st, name); err != nil {
		a.log.Warn("logging to standard error", "vm", name, "err", err)
	} else {
		defer lf.Close()
		if err := lf.CaptureStdio(); err != nil {
			a.log.Warn("the Go runtime's own messages may miss the log", "vm", name, "err", err)
		}
		out, a.stderr = lf, lf
	}
	a.log = slog.New(slog.NewTextHandler(a.stderr, &slog.HandlerOptions{Level: level}))
	m, err := c.session().manager()
	if err != nil {
		return err
	}
	m.Log = a.log
	if handoff {
		return m.RunHandoffMonitor(ctx, name, os.NewFile(3, "run-lock"), os.NewFile(4, "handoff"), out)
	}
	return m.RunMonitor(ctx, name, uint32(id), out)
}
