package main

import (
	"context"
	"fmt"
	"io"
	"strings"

	"github.com/qvm-project/qvm/store"
	"github.com/qvm-project/qvm/vm"
)

// runPrefs is qvm-prefs: list, get, set or reset a VM's properties.
//
//	qvm-prefs VM                 every property, with D / - / U marks
//	qvm-prefs VM PROP            one value
//	qvm-prefs VM PROP VALUE      set (R3: qvm-prefs VM -s PROP VALUE)
//	qvm-prefs --default VM PROP  back to the default (-D)
func runPrefs(ctx context.Context, a *app, args []string) error {
	c := a.newCmdline(ctx, "[options] VMNAME [PROPERTY [VALUE]]")
	var reset, hideDefault, helpProps, get, set, list bool
	c.BoolVarP(&reset, "default", "D", false, "reset the property to its default")
	c.BoolVar(&hideDefault, "hide-default", false, "do not show properties that have their default value")
	c.BoolVar(&helpProps, "help-properties", false, "list the properties with a description and exit")
	c.BoolVarP(&get, "get", "g", false, "ignored; for older scripts (R3)")
	c.BoolVarP(&set, "set", "s", false, "ignored; for older scripts (R3)")
	c.BoolVarP(&list, "list", "l", false, "ignored; for older scripts (R3)")
	if err := c.parse(args); err != nil {
		return err
	}
	if c.NArg() < 1 || c.NArg() > 3 {
		return usagef("give VMNAME [PROPERTY [VALUE]] (see %s --help)", a.prog)
	}
	name := c.Arg(0)
	prop := ""
	if c.NArg() >= 2 {
		prop = strings.ReplaceAll(c.Arg(1), "-", "_")
	}
	if reset && (prop == "" || c.NArg() == 3) {
		return usagef("--default needs exactly VMNAME PROPERTY")
	}

	if c.NArg() == 3 || reset {
		return c.update(func(tx *store.Tx) error {
			if reset {
				return tx.Sys.ResetProp(name, prop)
			}
			return tx.Sys.SetProp(name, prop, c.Arg(2))
		})
	}

	_, sys, err := c.loadSystem()
	if err != nil {
		return err
	}
	v, err := sys.View(name)
	if err != nil {
		return err
	}
	if helpProps {
		printPropertyHelp(a.stdout, vm.PropertyDocs(v.Class()))
		return nil
	}
	if prop == "" {
		printProperties(a.stdout, v, hideDefault)
		return nil
	}
	val, err := v.Get(prop)
	if err != nil {
		return err
	}
	if val.Mark == vm.MarkUnset {
		return fmt.Errorf("property %s of %s is not set and has no default", prop, name)
	}
	if hideDefault && val.Mark == vm.MarkDefault {
		return nil
	}
	// As Qubes: a VM reference that is none prints nothing.
	if val.Kind == vm.KindVM && val.Text == "" {
		return nil
	}
	fmt.Fprintln(a.stdout, val.Text)
	return nil
}

// printProperties writes the seed-001 listing: NAME, then 2 spaces, the
// mark, 2 spaces and the value; names padded to the longest.
func printProperties(w io.Writer, v *vm.View, hideDefault bool) {
	names := v.PropertyNames()
	width := 0
	for _, n := range names {
		width = max(width, len(n))
	}
	var b strings.Builder
	for _, n := range names {
		val, _ := v.Get(n)
		switch {
		case val.Mark == vm.MarkUnset:
			fmt.Fprintf(&b, "%-*s  U\n", width, n)
		case val.Mark == vm.MarkDefault && hideDefault:
		default:
			fmt.Fprintf(&b, "%-*s  %c  %s\n", width, n, val.Mark, val.String())
		}
	}
	io.WriteString(w, b.String())
}

func printPropertyHelp(w io.Writer, docs []vm.PropertyDoc) {
	width := 0
	for _, d := range docs {
		width = max(width, len(d.Name))
	}
	for _, d := range docs {
		ro := ""
		if d.ReadOnly {
			ro = " (read-only)"
		}
		fmt.Fprintf(w, "  %-*s  %s%s\n", width, d.Name, d.Doc, ro)
	}
}

// runGlobalPrefs is qubes-prefs: the system-wide settings.
func runGlobalPrefs(ctx context.Context, a *app, args []string) error {
	c := a.newCmdline(ctx, "[options] [PROPERTY [VALUE]]")
	var reset bool
	c.BoolVarP(&reset, "default", "D", false, "reset the property to its default")
	c.BoolP("get", "g", false, "ignored; for older scripts")
	c.BoolP("set", "s", false, "ignored; for older scripts")
	if err := c.parse(args); err != nil {
		return err
	}
	if c.NArg() > 2 || (reset && c.NArg() != 1) {
		return usagef("give [PROPERTY [VALUE]], or --default PROPERTY")
	}
	if c.NArg() == 2 || reset {
		return c.update(func(tx *store.Tx) error {
			if reset {
				return tx.Sys.ResetGlobal(c.Arg(0))
			}
			return tx.Sys.SetGlobal(c.Arg(0), c.Arg(1))
		})
	}
	_, sys, err := c.loadSystem()
	if err != nil {
		return err
	}
	if c.NArg() == 1 {
		val, err := sys.GetGlobal(c.Arg(0))
		if err != nil {
			return err
		}
		if !(val.Kind == vm.KindVM && val.Text == "") {
			fmt.Fprintln(a.stdout, val.Text)
		}
		return nil
	}
	names := vm.GlobalNames()
	width := 0
	for _, n := range names {
		width = max(width, len(n))
	}
	for _, n := range names {
		val, _ := sys.GetGlobal(n)
		fmt.Fprintf(a.stdout, "%-*s  %c  %s\n", width, n, val.Mark, val.String())
	}
	return nil
}
