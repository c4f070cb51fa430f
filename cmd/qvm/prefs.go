package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/qvm-project/qvm/store"
	"github.com/qvm-project/qvm/vm"
)

// prefsOptions are what qvm-prefs and qubes-prefs share (Qubes makes both
// from one parser).
type prefsOptions struct {
	reset, hideDefault, helpProps bool
}

func (o *prefsOptions) define(c *cmdline) {
	c.BoolVar(&o.helpProps, "help-properties", false, "list all available properties with short descriptions and exit")
	c.BoolVar(&o.hideDefault, "hide-default", false, "Do not show properties that are set to the default value.")
	c.BoolP("get", "g", false, "Ignored; for compatibility with older scripts.")
	c.BoolP("set", "s", false, "Ignored; for compatibility with older scripts.")
	c.BoolVarP(&o.reset, "default", "D", false, "reset property to its default value")
}

// noneProps are the VM references for which any case of "none" means no
// VM, as qvm-prefs reads them.
var noneProps = map[string]bool{"default_dispvm": true, "netvm": true, "template": true, "guivm": true, "audiovm": true}

// runPrefs is qvm-prefs: list, get, set or reset a VM's properties.
//
//	qvm-prefs VM                 every property, with D / - / U marks
//	qvm-prefs VM PROP            one value
//	qvm-prefs VM PROP VALUE      set (R3: qvm-prefs VM -s PROP VALUE)
//	qvm-prefs --default VM PROP  back to the default (-D)
func runPrefs(ctx context.Context, a *app, args []string) error {
	c := a.newCmdline(ctx, "[options] VMNAME [PROPERTY [VALUE]]")
	var o prefsOptions
	o.define(c)
	c.BoolP("list", "l", false, "Ignored; for compatibility with older scripts (R3).")
	c.Lookup("list").Hidden = true
	if err := c.parse(args); err != nil {
		return err
	}
	if c.NArg() < 1 || c.NArg() > 3 {
		return usagef("give VMNAME [PROPERTY [VALUE]] (see %s --help)", a.prog)
	}
	prop, value, set := "", "", c.NArg() == 3
	if c.NArg() >= 2 {
		prop = strings.ReplaceAll(c.Arg(1), "-", "_")
	}
	if set {
		value = c.Arg(2)
		if noneProps[prop] && strings.EqualFold(value, "none") {
			value = ""
		}
	}
	if o.reset && (prop == "" || set) {
		return usagef("--default needs exactly VMNAME PROPERTY")
	}
	s := c.session()
	if set || o.reset {
		return noSuchProperty(prop, s.update(func(tx *store.Tx) error {
			name, err := oneVM(tx.Sys, c.Arg(0))
			if err != nil {
				return err
			}
			if o.reset {
				return tx.Sys.ResetProp(name, prop)
			}
			return tx.Sys.SetProp(name, prop, value)
		}))
	}
	_, sys, err := s.load()
	if err != nil {
		return err
	}
	name, err := oneVM(sys, c.Arg(0))
	if err != nil {
		return err
	}
	v, _ := sys.View(name)
	if o.helpProps {
		printPropertyHelp(a.stdout, vm.PropertyDocs(v.Class()))
		return nil
	}
	if prop == "" {
		rows := make([][]string, 0, 48)
		names := v.PropertyNames()
		for _, n := range names {
			val, _ := v.Get(n)
			rows = propertyRow(rows, n, longest(names), val, o.hideDefault)
		}
		writeTable(a.stdout, rows)
		return nil
	}
	val, err := v.Get(prop)
	if err != nil {
		return noSuchProperty(prop, err)
	}
	return printValue(a.stdout, val, o.hideDefault, fmt.Sprintf("property %s of %s", prop, name))
}

// noSuchProperty words a property the VM lacks as Qubes' tools do, a usage
// error.
func noSuchProperty(prop string, err error) error {
	if errors.Is(err, vm.ErrNoSuchProperty) || errors.Is(err, vm.ErrNoSuchGlobal) {
		return usagef("no such property: %s", pyRepr(prop))
	}
	return err
}

// propertyRow adds a listing row: NAME (padded to width, the longest of
// all the names, as Qubes pads even when it hides some), the mark and the
// value (an unset property has no value; with hideDefault a default one
// is left out).
func propertyRow(rows [][]string, name string, width int, val vm.Value, hideDefault bool) [][]string {
	name += strings.Repeat(" ", max(width-len(name), 0))
	switch {
	case val.Mark == vm.MarkUnset:
		return append(rows, []string{name, string(val.Mark)})
	case val.Mark == vm.MarkDefault && hideDefault:
		return rows
	}
	return append(rows, []string{name, string(val.Mark), val.String()})
}

func longest(names []string) int {
	n := 0
	for _, s := range names {
		n = max(n, len(s))
	}
	return n
}

// printValue prints one property's value: nothing for a VM reference that
// is none, or, with hideDefault, for a default.
func printValue(w io.Writer, val vm.Value, hideDefault bool, what string) error {
	if hideDefault && val.Mark == vm.MarkDefault {
		return nil
	}
	if val.Mark == vm.MarkUnset {
		return fmt.Errorf("%s is not set and has no default", what)
	}
	if val.Kind == vm.KindVM && val.Text == "" {
		return nil
	}
	fmt.Fprintln(w, val.Text)
	return nil
}

// printPropertyHelp is --help-properties: each property with its
// description, wrapped at 80 columns as Qubes does.
func printPropertyHelp(w io.Writer, docs []vm.PropertyDoc) {
	width := 0
	for _, d := range docs {
		width = max(width, len(d.Name))
	}
	var b strings.Builder
	for _, d := range docs {
		doc := d.Doc
		if d.ReadOnly {
			doc += " (read-only)"
		}
		b.WriteString(wrapText(fmt.Sprintf("%-*s  %s", width, d.Name, doc), 80, "  ", strings.Repeat(" ", width+6)))
		b.WriteByte('\n')
	}
	io.WriteString(w, b.String())
}

// runGlobalPrefs is qubes-prefs: the system-wide settings.
func runGlobalPrefs(ctx context.Context, a *app, args []string) error {
	c := a.newCmdline(ctx, "[options] [PROPERTY [VALUE]]")
	var o prefsOptions
	o.define(c)
	if err := c.parse(args); err != nil {
		return err
	}
	if o.helpProps {
		printPropertyHelp(a.stdout, vm.GlobalDocs())
		return nil
	}
	if c.NArg() > 2 || (o.reset && c.NArg() != 1) {
		return usagef("give [PROPERTY [VALUE]], or --default PROPERTY")
	}
	prop := ""
	if c.NArg() > 0 {
		prop = strings.ReplaceAll(c.Arg(0), "-", "_")
	}
	if c.NArg() == 2 || o.reset {
		return noSuchProperty(prop, c.session().update(func(tx *store.Tx) error {
			if o.reset {
				return tx.Sys.ResetGlobal(prop)
			}
			value := c.Arg(1)
			if strings.EqualFold(value, "none") {
				if val, err := tx.Sys.GetGlobal(prop); err == nil && val.Kind == vm.KindVM {
					value = ""
				}
			}
			return tx.Sys.SetGlobal(prop, value)
		}))
	}
	_, sys, err := c.session().load()
	if err != nil {
		return err
	}
	if c.NArg() == 1 {
		val, err := sys.GetGlobal(prop)
		if err != nil {
			return noSuchProperty(prop, err)
		}
		return printValue(a.stdout, val, o.hideDefault, "global property "+prop)
	}
	var rows [][]string
	names := vm.GlobalNames()
	for _, n := range names {
		val, _ := sys.GetGlobal(n)
		rows = propertyRow(rows, n, longest(names), val, o.hideDefault)
	}
	writeTable(a.stdout, rows)
	return nil
}
