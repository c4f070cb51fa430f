package main

import (
	"context"

	"github.com/qvm-project/qvm/store"
)

// runRemove is qvm-remove: delete VMs and their images.
func runRemove(ctx context.Context, a *app, args []string) error {
	c := a.newCmdline(ctx, "[options] VMNAME...")
	var force, all bool
	c.BoolVarP(&force, "force", "f", false, "do not ask for confirmation")
	c.BoolVarP(&force, "yes", "y", false, "same as --force")
	c.BoolVar(&all, "all", false, "refused: remove VMs by name")
	if err := c.parse(args); err != nil {
		return err
	}
	if all {
		return usagef("--all is refused: name the VMs to remove")
	}
	if c.NArg() == 0 {
		return usagef("give at least one VMNAME")
	}
	// All named VMs go, or none: one store change.
	return c.update(func(tx *store.Tx) error {
		for _, name := range c.Args() {
			d, err := tx.Sys.Remove(name)
			if err != nil {
				return err
			}
			if err := tx.DropVMDir(d.Name, d.Class); err != nil {
				return err
			}
		}
		return nil
	})
}
