package main

import (
	"context"

	"github.com/google/uuid"

	"github.com/qvm-project/qvm/store"
	"github.com/qvm-project/qvm/volume"
)

// runClone is qvm-clone: copy a VM's definition and images under a new
// name, with its own qid, uuid, IP and MAC.
func runClone(ctx context.Context, a *app, args []string) error {
	c := a.newCmdline(ctx, "[options] VMNAME NEWVM")
	var class, onePool string
	var pools []string
	c.StringVarP(&class, "class", "C", "", "specify the class of the new domain (default: same as source; qvm cannot change it)")
	c.Bool("ignore-errors", false, "log errors encountered during setting metadata but continue clone operation (qvm: a clone is all or nothing)")
	c.StringVarP(&onePool, "P", "P", "", "pool to use for the new domain (only the file pool exists)")
	c.StringArrayVarP(&pools, "pool", "p", nil, "VOLUME=POOL: pool to use for the specific volume (only the file pool exists)")
	c.exclude("P", "pool")
	c.metavar("P", "POOL")
	c.metavar("pool", "VOLUME=POOL")
	if err := c.parse(args); err != nil {
		return err
	}
	if c.NArg() != 2 {
		return usagef("give VMNAME NEWVM (got %d arguments)", c.NArg())
	}
	for _, p := range pools {
		if err := checkPools(p, ""); err != nil {
			return err
		}
	}
	if err := checkPools("", onePool); err != nil {
		return err
	}
	dst := c.Arg(1)
	return c.session().update(func(tx *store.Tx) error {
		src, err := oneVM(tx.Sys, c.Arg(0))
		if err != nil {
			return err
		}
		if sv, err := tx.Sys.View(src); err == nil && class != "" && class != string(sv.Class()) {
			return usagef("--class %s: the clone keeps the class of %s (%s)", class, src, sv.Class())
		}
		_, err = tx.CloneVM(ctx, src, dst, uuid.NewString(), volume.WithProgress(a.stderr))
		return err
	})
}
