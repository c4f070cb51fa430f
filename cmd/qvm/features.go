package main

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/qvm-project/qvm/store"
	"github.com/qvm-project/qvm/vm"
)

// runFeatures is qvm-features: list, get, set or unset a VM's features.
// Getting a feature that is not set prints nothing and exits 1, as Qubes.
func runFeatures(ctx context.Context, a *app, args []string) error {
	c := a.newCmdline(ctx, "[options] VMNAME [FEATURE [VALUE]]")
	var unset bool
	c.BoolVarP(&unset, "unset", "D", false, "unset the feature")
	c.BoolVar(&unset, "default", false, "same as --unset")
	c.BoolVar(&unset, "delete", false, "same as --unset")
	if err := c.parse(args); err != nil {
		return err
	}
	if c.NArg() < 1 || c.NArg() > 3 {
		return usagef("give VMNAME [FEATURE [VALUE]]")
	}
	if unset && c.NArg() == 1 {
		return usagef("--unset requires a feature")
	}
	if unset && c.NArg() == 3 {
		return usagef("cannot both set and unset a value")
	}
	s := c.session()
	switch {
	case unset:
		return s.update(func(tx *store.Tx) error {
			name, err := oneVM(tx.Sys, c.Arg(0))
			if err != nil {
				return err
			}
			return tx.Sys.UnsetFeature(name, c.Arg(1))
		})
	case c.NArg() == 3:
		return s.update(func(tx *store.Tx) error {
			name, err := oneVM(tx.Sys, c.Arg(0))
			if err != nil {
				return err
			}
			return tx.Sys.SetFeature(name, c.Arg(1), c.Arg(2))
		})
	}
	_, sys, err := s.load()
	if err != nil {
		return err
	}
	name, err := oneVM(sys, c.Arg(0))
	if err != nil {
		return err
	}
	if c.NArg() == 2 {
		val, err := sys.Feature(name, c.Arg(1))
		if errors.Is(err, vm.ErrNoSuchFeature) {
			return exitWith(1, "")
		}
		if err != nil {
			return err
		}
		fmt.Fprintln(a.stdout, val)
		return nil
	}
	d, _ := sys.Get(name)
	keys := make([]string, 0, len(d.Features))
	for k := range d.Features {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	rows := make([][]string, len(keys))
	for i, k := range keys {
		rows[i] = []string{k, d.Features[k]}
	}
	writeTable(a.stdout, rows)
	return nil
}

// serviceFeature is the feature behind a service.
func serviceFeature(service string) string { return "service." + service }

// runService is qvm-service: a VM's services, the service.NAME features
// (on is "1", off is "", as Qubes stores them).
func runService(ctx context.Context, a *app, args []string) error {
	c := a.newCmdline(ctx, "[options] VMNAME [SERVICE [VALUE]]")
	var unset, list, enable, disable bool
	c.BoolVarP(&unset, "unset", "D", false, "unset service (default to VM preference)")
	c.BoolVar(&unset, "default", false, "same as --unset")
	c.BoolVar(&unset, "delete", false, "same as --unset")
	c.BoolVarP(&list, "list", "l", false, "list services (default action)")
	c.BoolVarP(&enable, "enable", "e", false, `enable service (same as setting "on" value)`)
	c.BoolVarP(&disable, "disable", "d", false, `disable service (same as setting "off" value)`)
	if err := c.parse(args); err != nil {
		return err
	}
	if c.NArg() < 1 || c.NArg() > 3 {
		return usagef("give VMNAME [SERVICE [VALUE]]")
	}
	value, hasValue := "", c.NArg() == 3
	if hasValue {
		value = c.Arg(2)
	}
	// As argparse: the last of VALUE, --enable and --disable wins; they
	// share one destination.
	if enable {
		value, hasValue = "1", true
	}
	if disable {
		value, hasValue = "0", true
	}
	if c.NArg() == 1 {
		if unset {
			return usagef("--unset requires a feature")
		}
		_, sys, err := c.session().load()
		if err != nil {
			return err
		}
		name, err := oneVM(sys, c.Arg(0))
		if err != nil {
			return err
		}
		d, _ := sys.Get(name)
		var rows [][]string
		for k, v := range d.Features {
			if svc, ok := strings.CutPrefix(k, "service."); ok {
				rows = append(rows, []string{svc, onOff(v)})
			}
		}
		sort.Slice(rows, func(i, j int) bool { return rows[i][0] < rows[j][0] })
		writeTable(a.stdout, rows)
		return nil
	}
	feature := serviceFeature(c.Arg(1))
	switch {
	case unset && hasValue:
		return usagef("cannot both set and unset a value")
	case unset:
		return c.session().update(func(tx *store.Tx) error {
			name, err := oneVM(tx.Sys, c.Arg(0))
			if err != nil {
				return err
			}
			return tx.Sys.UnsetFeature(name, feature)
		})
	case hasValue:
		on, err := vm.ParseBool(value)
		if err != nil {
			return qubesErrorf("Invalid literal for boolean value: %s", pyRepr(value))
		}
		stored := ""
		if on {
			stored = "1"
		}
		return c.session().update(func(tx *store.Tx) error {
			name, err := oneVM(tx.Sys, c.Arg(0))
			if err != nil {
				return err
			}
			return tx.Sys.SetFeature(name, feature, stored)
		})
	}
	_, sys, err := c.session().load()
	if err != nil {
		return err
	}
	name, err := oneVM(sys, c.Arg(0))
	if err != nil {
		return err
	}
	val, err := sys.Feature(name, feature)
	if errors.Is(err, vm.ErrNoSuchFeature) {
		return exitWith(1, "")
	}
	if err != nil {
		return err
	}
	fmt.Fprintln(a.stdout, onOff(val))
	return nil
}

// onOff is a service's state as Qubes reads its feature: any value but ""
// is on.
func onOff(v string) string {
	if v != "" {
		return "on"
	}
	return "off"
}

// runTags is qvm-tags: a VM's tags.
//
//	qvm-tags VMNAME [list|ls|l [TAG]]     the tags (with TAG: exit 1 unless it has it)
//	qvm-tags VMNAME add|a|set TAG...
//	qvm-tags VMNAME del|d|unset|u TAG
func runTags(ctx context.Context, a *app, args []string) error {
	c := a.newCmdline(ctx, "[options] VMNAME [ACTION [TAG...]]")
	c.SetInterspersed(false)
	if err := c.parse(args); err != nil {
		return err
	}
	if c.NArg() < 1 {
		return usagef("the following arguments are required: VMNAME")
	}
	action, tags := "list", []string{}
	if c.NArg() >= 2 {
		action, tags = c.Arg(1), c.Args()[2:]
	}
	switch action {
	case "list", "ls", "l":
		if len(tags) > 1 {
			return usagef("unrecognized arguments: %s", strings.Join(tags[1:], " "))
		}
		_, sys, err := c.session().load()
		if err != nil {
			return err
		}
		name, err := oneVM(sys, c.Arg(0))
		if err != nil {
			return err
		}
		d, _ := sys.Get(name)
		if len(tags) == 1 {
			if !d.HasTag(tags[0]) {
				return exitWith(1, "")
			}
			fmt.Fprintln(a.stdout, tags[0])
			return nil
		}
		for _, t := range d.Tags {
			fmt.Fprintln(a.stdout, t)
		}
		return nil
	case "add", "a", "set":
		if len(tags) == 0 {
			return usagef("the following arguments are required: tag")
		}
	case "del", "d", "unset", "u":
		if len(tags) != 1 {
			return usagef("del takes exactly one tag")
		}
	default:
		return usagef("argument command: invalid choice: %s (choose from 'list', 'ls', 'l', 'add', 'a', 'set', 'del', 'd', 'unset', 'u')", pyRepr(action))
	}
	return c.session().update(func(tx *store.Tx) error {
		name, err := oneVM(tx.Sys, c.Arg(0))
		if err != nil {
			return err
		}
		for _, t := range tags {
			var err error
			if action == "add" || action == "a" || action == "set" {
				err = tx.Sys.AddTag(name, t)
			} else {
				err = tx.Sys.RemoveTag(name, t)
			}
			if err != nil {
				return err
			}
		}
		return nil
	})
}
