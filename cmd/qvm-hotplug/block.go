package main

import (
	"context"
	"errors"

	"github.com/qvm-project/qvm/blkback"
)

// runBlock is block-qvm, the script for a VM disk that dom0's block
// backend serves from a loop device (see blkback.Hotplug): `block-qvm
// add|remove`, with the backend's xenstore directory in $XENBUS_PATH.
func runBlock(ctx context.Context, env *hookEnv, args []string) error {
	if len(args) < 1 {
		return usagef("usage: block-qvm add|remove (run by libxl, with $XENBUS_PATH set)")
	}
	backend := env.getenv("XENBUS_PATH")
	if backend == "" {
		return usagef("$XENBUS_PATH must be set (this is libxl's hotplug script)")
	}
	xs, err := env.xenstore(ctx)
	if err != nil {
		return err
	}
	defer xs.Close()
	err = blkback.Hotplug(ctx, xs, args[0], backend)
	if errors.Is(err, blkback.ErrUnknownAction) {
		return usagef("%v", err)
	}
	return err
}
