package main

import (
	"context"
	"fmt"
	"sort"
	"strings"

	"github.com/qvm-project/qvm/vm"
)

// runCheck is qvm-check: whether VMs exist, and with --running, --paused,
// --template, --networked whether they are so. Exit 0 when all are, 3
// when some are, 1 when none is or a VM does not exist. It says so on
// stderr ("qvm-check: work: running") unless -q, as Qubes' log does.
func runCheck(ctx context.Context, a *app, args []string) error {
	c := a.newCmdline(ctx, "[options] [--all [--exclude EXCLUDE]] VMNAME...")
	var running, paused, template, networked bool
	sel := c.selection("")
	c.BoolVar(&running, "running", false, "Determine if (any of given) VM is running")
	c.BoolVar(&paused, "paused", false, "Determine if (any of given) VM is paused")
	c.BoolVar(&template, "template", false, "Determine if (any of given) VM is a template")
	c.BoolVar(&networked, "networked", false, "Determine if (any of given) VM can reach network")
	if err := c.parse(args); err != nil {
		return err
	}
	if !sel.all && len(sel.exclude) > 0 {
		return usagef("--exclude can only be used with --all")
	}
	if !sel.all && c.NArg() == 0 {
		return usagef("one of the arguments --all VMNAME is required")
	}
	if sel.all && c.NArg() > 0 {
		return usagef("argument VMNAME: not allowed with argument --all")
	}
	s := c.session()
	if running || paused {
		// The state is libxl's: without Xen there is nothing to ask.
		if _, err := s.hypervisor(); err != nil {
			return err
		}
	}
	_, sys, err := s.load()
	if err != nil {
		return err
	}
	var domains, invalid []string
	if sel.all {
		domains, _ = sel.resolve(sys, nil, false, false)
	} else {
		for _, n := range c.Args() {
			if _, ok := sys.Lookup(n); ok {
				domains = append(domains, n)
			} else {
				invalid = append(invalid, n)
			}
		}
	}
	type filter struct {
		status string
		check  func(v *vm.View) bool
	}
	var filters []filter
	if running {
		// As Qubes' is_running: started, paused or not.
		filters = append(filters, filter{"running", func(v *vm.View) bool { return v.Runtime().State != vm.Halted }})
	}
	if paused {
		filters = append(filters, filter{"paused", func(v *vm.View) bool { return v.Runtime().State == vm.Paused }})
	}
	if template {
		filters = append(filters, filter{"template", func(v *vm.View) bool { return v.Class() == vm.TemplateVM }})
	}
	if networked {
		filters = append(filters, filter{"networked", func(v *vm.View) bool { return v.ProvidesNetwork() || v.NetVM() != nil }})
	}
	info := func(msg string) {
		if c.verbosity() >= 1 {
			fmt.Fprintf(a.stderr, "%s: %s\n", a.prog, msg)
		}
	}
	warn := func(msg string) {
		if c.verbosity() >= 1 {
			msg = a.prog + ": " + msg
		}
		fmt.Fprintln(a.stderr, msg)
	}
	status := []string{"exists"}
	matched := append([]string(nil), domains...)
	if len(filters) > 0 {
		status = status[:0]
		for _, f := range filters {
			status = append(status, f.status)
			keep := matched[:0:0]
			for _, n := range matched {
				if v, _ := sys.View(n); f.check(v) {
					keep = append(keep, n)
				}
			}
			matched = keep
		}
	}
	code := 0
	switch {
	case len(domains) == 0 || len(matched) == 0:
		code = 1
	case len(matched) < len(domains):
		code = 3
	}
	sort.Strings(matched)
	if len(matched) == 0 && len(filters) > 0 {
		info("None of qubes: " + strings.Join(status, ", "))
	}
	for _, n := range matched {
		info(n + ": " + strings.Join(status, ", "))
	}
	if len(invalid) > 0 {
		for _, n := range invalid {
			warn(n + ": non-existent!")
		}
		code = 1
	}
	if code != 0 {
		return exitWith(code, "")
	}
	return nil
}
