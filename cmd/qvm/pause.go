package main

import (
	"context"
	"fmt"

	"github.com/qvm-project/qvm/termtext"
)

// runPause is qvm-pause: stop VMs' vCPUs where they are (libxl's pause).
func runPause(ctx context.Context, a *app, args []string) error {
	c := a.newCmdline(ctx, "[options] [--all [--exclude EXCLUDE]] VMNAME...")
	var suspend bool
	sel := c.selection("")
	c.BoolVarP(&suspend, "suspend", "S", false, "Put the qube to (S3) suspend mode instead of emergency pause (not supported by qvm)")
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
	if suspend {
		return fmt.Errorf("--suspend: qvm cannot suspend VMs to S3 (it needs the VM's agent); qvm-pause without -S pauses them")
	}
	m, err := c.session().manager()
	if err != nil {
		return err
	}
	failed := 0
	for _, n := range names {
		if err := m.Pause(ctx, n); err != nil {
			a.printError(fmt.Sprintf("Failed to pause: %s: %v", n, err))
			failed++
		}
	}
	return exitFailed(failed)
}

// runUnpause is qvm-unpause: resume paused VMs. --all leaves out the VMs
// with the internal feature, as Qubes does.
func runUnpause(ctx context.Context, a *app, args []string) error {
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
	m, err := c.session().manager()
	if err != nil {
		return err
	}
	failed := 0
	for _, n := range names {
		if v, _ := sys.View(n); sel.all && featureSet(v.Feature("internal")) {
			continue
		}
		if err := m.Unpause(ctx, n); err != nil {
			a.printError(fmt.Sprintf("Failed to unpause/resume: %s: %v", n, err))
			failed++
		}
	}
	return exitFailed(failed)
}

// featureSet reports a feature that is set to anything but "".
func featureSet(val string, ok bool) bool { return ok && val != "" }

// printError writes one error line, as run does for the error a verb returns.
func (a *app) printError(msg string) {
	fmt.Fprintf(a.stderr, "%s: error: %s\n", a.prog, termtext.Lines(msg))
}

// exitFailed is the exit of a verb that acted on several VMs: 1 if any
// failed (their errors printed already).
func exitFailed(failed int) error {
	if failed > 0 {
		return exitWith(1, "")
	}
	return nil
}
