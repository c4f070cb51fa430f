package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"strings"
	"time"

	"github.com/qvm-project/qvm/lifecycle"
	"github.com/qvm-project/qvm/qrexec"
	"github.com/qvm-project/qvm/termtext"
	"github.com/qvm-project/qvm/vm"
)

// runRun is qvm-run: run a command in VMs through their qrexec agent
// (cmd/qrexec-agent), as Qubes' qvm-run does: a COMMAND alone is a shell
// command for the qubes.VMShell service, COMMAND with ARGS (or
// --no-shell) runs as given through qubes.VMExec,
// --service calls a service by name. The exit code is the command's
// (the highest of several VMs'); 125 when qrexec failed, 126 refused,
// 127 no such service.
func runRun(ctx context.Context, a *app, args []string) error {
	c := a.newCmdline(ctx, "[options] VMNAME COMMAND [ARG...] | --all [--exclude EXCLUDE] COMMAND")
	sel := c.selection("run the command on all qubes")
	var o struct {
		user                        string
		passio, noShell, service    bool
		autostart, noAutostart      bool
		gui, noGUI                  bool
		filter, noFilter            bool
		colorOut, colorErr, noColor string
		noColorBool                 bool
		dispvm                      string
		localcmd                    string
	}
	c.StringVarP(&o.user, "user", "u", "DEFAULT", "run the command as this user")
	c.BoolVarP(&o.passio, "pass-io", "p", false, "pass standard input, output and error to and from the command")
	c.BoolVar(&o.passio, "passio", false, "same as --pass-io")
	c.Lookup("passio").Hidden = true
	c.BoolVar(&o.noShell, "no-shell", false, "run the command without a shell (its arguments as given)")
	c.BoolVar(&o.service, "service", false, "COMMAND is a qrexec service name (SERVICE[+ARG])")
	c.BoolVarP(&o.autostart, "autostart", "a", false, "start the qube if it is halted (the default)")
	c.BoolVar(&o.autostart, "auto", false, "same as --autostart")
	c.BoolVarP(&o.noAutostart, "no-autostart", "n", false, "fail if the qube is not running")
	c.BoolVar(&o.noAutostart, "no-auto", false, "same as --no-autostart")
	c.BoolVar(&o.gui, "gui", false, "ignored (qvm has no GUI agent)")
	c.BoolVar(&o.noGUI, "no-gui", false, "do not use the GUI (qvm never does)")
	c.BoolVar(&o.noGUI, "nogui", false, "same as --no-gui")
	c.BoolVar(&o.filter, "filter-escape-chars", false, "replace control characters the command wrote (default when the output is a terminal)")
	c.BoolVar(&o.noFilter, "no-filter-escape-chars", false, "pass the command's output as it is, control characters too")
	c.StringVar(&o.colorOut, "color-output", "", "ignored: qvm does not colour the output")
	c.StringVar(&o.colorErr, "color-stderr", "", "ignored: qvm does not colour the output")
	c.BoolVar(&o.noColorBool, "no-color-output", false, "do not colour the output (qvm never does)")
	c.BoolVar(&o.noColorBool, "no-colour-output", false, "same as --no-color-output")
	c.BoolVar(&o.noColorBool, "no-color-stderr", false, "same as --no-color-output, for standard error")
	c.StringVar(&o.dispvm, "dispvm", "", "run in a new disposable VM (not supported by qvm)")
	c.Lookup("dispvm").NoOptDefVal = "default"
	c.StringVar(&o.localcmd, "localcmd", "", "with --pass-io, connect the command's input and output to this dom0 shell command instead")
	c.exclude("autostart", "no-autostart")
	c.exclude("filter-escape-chars", "no-filter-escape-chars")
	c.exclude("no-shell", "service")
	c.SetInterspersed(false)
	if err := c.parse(args); err != nil {
		return err
	}
	if c.Changed("dispvm") {
		return fmt.Errorf("--dispvm: qvm cannot start disposable VMs yet; create a VM and run the command there")
	}
	if o.localcmd != "" && !o.passio {
		return usagef("--localcmd have no effect without --pass-io")
	}
	rest := c.Args()
	var names, cmdArgs []string
	_, sys, err := c.session().load()
	if err != nil {
		return err
	}
	if sel.all {
		if names, err = sel.resolve(sys, nil, true, false); err != nil {
			return err
		}
		cmdArgs = rest
	} else {
		if len(rest) == 0 {
			return usagef("give a VM name and a command (see %s --help)", a.prog)
		}
		if names, err = sel.resolve(sys, rest[:1], true, false); err != nil {
			return err
		}
		cmdArgs = rest[1:]
	}
	if len(cmdArgs) > 0 && cmdArgs[0] == "--" {
		cmdArgs = cmdArgs[1:]
	}
	if len(cmdArgs) == 0 {
		return usagef("give the command to run (see %s --help)", a.prog)
	}
	if o.passio && o.localcmd == "" && len(names) > 1 {
		return usagef("--passio cannot be used when more than 1 qube is chosen and no --localcmd is used")
	}
	cmd := qrexec.Command{User: o.user, NoGUI: true, Source: "dom0"}
	var input string
	switch {
	case o.service:
		if len(cmdArgs) > 1 {
			return usagef("--service takes one SERVICE[+ARG], not %d words", len(cmdArgs))
		}
		cmd.Service, cmd.Arg, _ = strings.Cut(cmdArgs[0], "+")
	case o.noShell || len(cmdArgs) > 1:
		// COMMAND with ARGS runs as given, without a shell (as Qubes).
		cmd.Service, cmd.Arg = "qubes.VMExec", qrexec.EncodeVMExec(cmdArgs)
	default:
		cmd.Service, input = "qubes.VMShell", strings.Join(cmdArgs, " ")+"; exit\n"
	}
	cmdline := cmd.String()
	if _, err := qrexec.ParseCommand(cmdline); err != nil {
		return usagef("cannot run that: %v", err)
	}
	for _, n := range names {
		if n == vm.Dom0Name {
			return usagef("qvm-run cannot run commands in dom0; run them directly")
		}
	}
	m, err := c.session().manager()
	if err != nil {
		return err
	}
	stdout, stderr := a.stdout, a.stderr
	if o.filter || (!o.noFilter && a.stdoutIsTerminal()) {
		fo, fe := termtext.NewWriter(a.stdout), termtext.NewWriter(a.stderr)
		defer fo.Flush()
		defer fe.Flush()
		stdout, stderr = fo, fe
	}
	worst := 0
	for _, n := range names {
		var in io.Reader
		if input != "" {
			in = strings.NewReader(input)
		}
		if o.passio && o.localcmd == "" {
			in = joinInput(in, a.stdin)
		}
		out, errOut := io.Discard, io.Discard
		verbose := c.verbosity()
		if o.passio {
			out, errOut = stdout, stderr
			verbose--
		}
		if verbose > 0 {
			fmt.Fprintf(a.stderr, "Running '%s' on %s\n", termtext.Line(strings.Join(cmdArgs, " ")), n)
		}
		var code int
		if o.localcmd != "" {
			code = runWithLocal(ctx, a, o.localcmd, func(in2 io.Reader, out2 io.Writer) int {
				return runIn(ctx, a, m, sys, n, cmdline, !o.noAutostart, joinInput(in, in2), out2, errOut)
			})
		} else {
			code = runIn(ctx, a, m, sys, n, cmdline, !o.noAutostart, in, out, errOut)
		}
		worst = max(worst, code)
	}
	if worst != 0 {
		return exitWith(worst, "")
	}
	return nil
}

// runWithLocal runs the dom0 shell command local (--localcmd) beside
// run, which gets the local command's output as the remote command's
// input and writes the remote command's output to the local command's
// input. The remote exit code is returned; a local command that cannot
// start is qrexec's failure.
func runWithLocal(ctx context.Context, a *app, local string, run func(in io.Reader, out io.Writer) int) int {
	lc := exec.CommandContext(ctx, "/bin/sh", "-c", local)
	toRemote, err := lc.StdoutPipe()
	if err != nil {
		a.printError(fmt.Sprintf("--localcmd: %v", err))
		return qrexec.ExitFailed
	}
	fromRemote, w := io.Pipe()
	lc.Stdin, lc.Stderr = fromRemote, a.stderr
	if err := lc.Start(); err != nil {
		a.printError(fmt.Sprintf("--localcmd %q: %v", local, err))
		return qrexec.ExitFailed
	}
	code := run(toRemote, w)
	w.Close()
	if err := lc.Wait(); err != nil {
		a.printError(fmt.Sprintf("--localcmd %q: %v", local, err))
	}
	return code
}

// joinInput is first, then rest (either may be nil).
func joinInput(first, rest io.Reader) io.Reader {
	switch {
	case first == nil:
		return rest
	case rest == nil:
		return first
	}
	return io.MultiReader(first, rest)
}

// runIn runs cmdline in VM name and returns the exit code to report.
func runIn(ctx context.Context, a *app, m *lifecycle.Manager, sys *vm.System, name, cmdline string, autostart bool, in io.Reader, out, errOut io.Writer) int {
	fail := func(code int, format string, args ...any) int {
		a.printError(fmt.Sprintf(format, args...))
		return code
	}
	v, err := sys.View(name)
	if err != nil {
		return fail(qrexec.ExitFailed, "%s: %v", name, err)
	}
	if !sys.IsRunning(name) {
		if !autostart {
			return fail(qrexec.ExitFailed, "Qube %s not running (without --no-autostart, qvm-run starts it)", name)
		}
		if _, err := m.Start(ctx, name, lifecycle.StartOptions{}); err != nil && !errors.Is(err, lifecycle.ErrAlreadyRunning) {
			return fail(qrexec.ExitFailed, "Starting qube failed: %s: %v", name, err)
		}
	}
	wait := time.Duration(v.Int("qrexec_timeout")) * time.Second
	if wait <= 0 {
		wait = 60 * time.Second
	}
	code, err := m.Exec(ctx, name, cmdline, wait, in, out, errOut)
	if err != nil {
		if errors.Is(err, lifecycle.ErrRefused) {
			return fail(qrexec.ExitRefused, "%s: %v", name, err)
		}
		return fail(qrexec.ExitFailed, "qrexec failed: %v", err)
	}
	return code
}
