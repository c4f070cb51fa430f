package main

import (
	"context"
	"fmt"

	"github.com/google/uuid"

	"github.com/qvm-project/qvm/store"
	"github.com/qvm-project/qvm/vm"
)

// runClone is qvm-clone: copy a VM's definition and images under a new
// name, with its own qid, uuid, IP and MAC.
func runClone(ctx context.Context, a *app, args []string) error {
	c := a.newCmdline(ctx, "[options] VMNAME NEWNAME")
	var class, pool, onePool string
	c.StringVarP(&class, "class", "C", "", "ignored unless equal to the source's class (qvm cannot change a VM's class)")
	c.StringVarP(&pool, "pool", "p", "", "VOLUME=POOL (only the file pool exists)")
	c.StringVarP(&onePool, "P", "P", "", "POOL (only the file pool exists)")
	if err := c.parse(args); err != nil {
		return err
	}
	if c.NArg() != 2 {
		return usagef("give VMNAME NEWNAME (got %d arguments)", c.NArg())
	}
	if err := checkPools(pool, onePool); err != nil {
		return err
	}
	src, dst := c.Arg(0), c.Arg(1)
	return c.update(func(tx *store.Tx) error {
		sv, err := tx.Sys.View(src)
		if err != nil {
			return err
		}
		if sv.Class() == vm.AdminVM {
			return fmt.Errorf("dom0 cannot be cloned")
		}
		if class != "" && class != string(sv.Class()) {
			return usagef("--class %s: the clone keeps the class of %s (%s)", class, src, sv.Class())
		}
		if tx.Sys.IsRunning(src) {
			return fmt.Errorf("%s is running: its images may change while copied; shut it down first (qvm-shutdown --wait %s)", src, src)
		}
		d, err := tx.Sys.Clone(src, dst, uuid.NewString())
		if err != nil {
			return err
		}
		return makeImages(ctx, a, tx, d, sv, nil)
	})
}
