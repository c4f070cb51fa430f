package main

import (
	"context"
	"fmt"
	"os"

	"golang.org/x/term"

	"github.com/qvm-project/qvm/lifecycle"
	"github.com/qvm-project/qvm/termtext"
	"github.com/qvm-project/qvm/vm"
	"github.com/qvm-project/qvm/vmconsole"
)

// runConsole is qvm-console: attach to a running VM's text console (its
// hvc0), as `xl console` does, through the VM's monitor; Ctrl-] leaves.
// --log prints what the console printed so far, this run and the last
// ones (bounded: see vmconsole.LogLimit), for a halted VM too.
// What the guest sent has its control characters replaced when the output
// is a terminal (always with --log), unless --no-filter-escape-chars.
func runConsole(ctx context.Context, a *app, args []string) error {
	c := a.newCmdline(ctx, "[options] VMNAME")
	var o struct{ log, filter, noFilter bool }
	c.BoolVar(&o.log, "log", false, "print what the console printed so far and exit (the VM need not run)")
	c.BoolVar(&o.filter, "filter-escape-chars", false, "replace control characters the guest sent (default when the output is a terminal, and with --log)")
	c.BoolVar(&o.noFilter, "no-filter-escape-chars", false, "pass what the guest sent as it is, escape sequences too (for full-screen programs; the guest can then drive your terminal)")
	c.exclude("filter-escape-chars", "no-filter-escape-chars")
	if err := c.parse(args); err != nil {
		return err
	}
	if c.NArg() != 1 {
		return usagef("give one VM name (see %s --help)", a.prog)
	}
	name := c.Arg(0)
	st, sys, err := c.session().load()
	if err != nil {
		return err
	}
	v, err := sys.View(name)
	if err != nil {
		return noSuchDomain(name)
	}
	if v.Class() == vm.AdminVM {
		return usagef("dom0 has no VM console: it is this machine's own")
	}
	if o.log {
		b, err := vmconsole.ReadLog(lifecycle.ConsoleLogPath(st, name), vmconsole.LogLimit)
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		if !o.noFilter {
			b = []byte(termtext.Text(string(b)))
		}
		_, err = a.stdout.Write(b)
		return err
	}
	if !sys.IsRunning(name) {
		return fmt.Errorf("%s is not running: qvm-start %s first (qvm-console --log %s shows what its console printed)", name, name, name)
	}
	m, err := c.session().manager()
	if err != nil {
		return err
	}
	sock, err := m.ConsoleSocket(v)
	if err != nil {
		return err
	}
	out := a.stdout
	if o.filter || (!o.noFilter && a.stdoutIsTerminal()) {
		fw := termtext.NewWriter(a.stdout)
		defer fw.Flush()
		out = fw // it holds back at most an unfinished rune or a CR
	}
	if f, ok := a.stdin.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		old, err := term.MakeRaw(int(f.Fd()))
		if err != nil {
			return fmt.Errorf("terminal: %w", err)
		}
		defer term.Restore(int(f.Fd()), old)
		fmt.Fprintf(a.stderr, "Connected to the console of %s; Ctrl-] leaves.\r\n", name)
		defer fmt.Fprintf(a.stderr, "\r\n")
	}
	if err := vmconsole.Attach(ctx, sock, a.stdin, out, vmconsole.DefaultEscape); err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	return nil
}
