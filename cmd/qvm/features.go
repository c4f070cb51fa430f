package main

import (
	"context"
	"fmt"
	"sort"

	"github.com/qvm-project/qvm/store"
)

// runFeatures is qvm-features: list, get, set or unset a VM's features.
func runFeatures(ctx context.Context, a *app, args []string) error {
	c := a.newCmdline(ctx, "[options] VMNAME [FEATURE [VALUE]]")
	var unset bool
	c.BoolVarP(&unset, "unset", "D", false, "remove the feature")
	c.BoolVar(&unset, "default", false, "same as --unset")
	c.BoolVar(&unset, "delete", false, "same as --unset")
	if err := c.parse(args); err != nil {
		return err
	}
	if c.NArg() < 1 || c.NArg() > 3 || (unset && c.NArg() != 2) {
		return usagef("give VMNAME [FEATURE [VALUE]], or --unset VMNAME FEATURE")
	}
	name := c.Arg(0)
	if c.NArg() == 3 || unset {
		return c.update(func(tx *store.Tx) error {
			d, err := tx.Sys.Get(name)
			if err != nil {
				return err
			}
			feature := c.Arg(1)
			if feature == "" {
				return usagef("feature name is empty")
			}
			if unset {
				delete(d.Features, feature)
				return nil
			}
			if d.Features == nil {
				d.Features = map[string]string{}
			}
			d.Features[feature] = c.Arg(2)
			return nil
		})
	}
	_, sys, err := c.loadSystem()
	if err != nil {
		return err
	}
	d, err := sys.Get(name)
	if err != nil {
		return err
	}
	if c.NArg() == 2 {
		val, ok := d.Features[c.Arg(1)]
		if !ok {
			return fmt.Errorf("feature %s is not set on %s", c.Arg(1), name)
		}
		fmt.Fprintln(a.stdout, val)
		return nil
	}
	keys := make([]string, 0, len(d.Features))
	width := 0
	for k := range d.Features {
		keys = append(keys, k)
		width = max(width, len(k))
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Fprintf(a.stdout, "%-*s  %s\n", width, k, d.Features[k])
	}
	return nil
}
