package main

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/qvm-project/qvm/store"
	"github.com/qvm-project/qvm/vm"
)

// runRemove is qvm-remove: delete VMs and their images, after asking (as
// Qubes does: "Are you sure? [y/N]"; only y goes ahead). Without a
// terminal to ask on, it refuses unless -f.
func runRemove(ctx context.Context, a *app, args []string) error {
	c := a.newCmdline(ctx, "[options] [--all [--exclude EXCLUDE]] VMNAME...")
	var force bool
	sel := c.selection("")
	c.BoolVarP(&force, "force", "f", false, "do not prompt for confirmation")
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
			return exitWith(1, "Domain 'dom0' cannot be removed.")
		}
	}
	if sel.all && !force && len(sel.exclude) == 0 {
		fmt.Fprintln(a.stderr, "WARNING!!! Removing all domains may leave your system in an unrecoverable state!")
		answer, err := a.ask("Are you certain? [N/IKNOWWHATIAMDOING]")
		if err != nil {
			return removeRefused(err)
		}
		if answer != "IKNOWWHATIAMDOING" {
			return exitWith(1, "Remove cancelled.")
		}
	}
	if !force {
		if !a.stdinIsTerminal() {
			return removeRefused(errNoTerminal)
		}
		fmt.Fprintln(a.stderr, "This will completely remove the selected VM(s)...")
		for _, n := range names {
			fmt.Fprintf(a.stdout, "  %s\n", n)
		}
		answer, err := a.ask("Are you sure? [y/N] ")
		if err != nil {
			return removeRefused(err)
		}
		if strings.ToUpper(answer) != "Y" {
			return exitWith(1, "Remove cancelled.")
		}
	}
	// All named VMs go, or none: one store change, in an order that
	// removes a VM's users (in the set) before it.
	err = c.session().update(func(tx *store.Tx) error {
		pending := names
		for len(pending) > 0 {
			var left []string
			var first error
			for _, n := range pending {
				if err := tx.RemoveVM(n); err != nil {
					var inUse *vm.InUseError
					if !errors.As(err, &inUse) {
						return err
					}
					if first == nil {
						first = err
					}
					left = append(left, n)
				}
			}
			if len(left) == len(pending) {
				return first
			}
			pending = left
		}
		return nil
	})
	var inUse *vm.InUseError
	if errors.As(err, &inUse) {
		fmt.Fprintf(a.stderr, "VM %s cannot be removed. It is in use as:\n", inUse.VM)
		for _, d := range inUse.Uses {
			if d.Holder == "" {
				fmt.Fprintf(a.stderr, " - global property %s\n", d.Prop)
			} else {
				fmt.Fprintf(a.stderr, " - %s for %s\n", d.Prop, d.Holder)
			}
		}
	}
	return err
}

func removeRefused(err error) error {
	return fmt.Errorf("remove cancelled: %w; add -f (--force) to remove without asking", err)
}
