// Command qvm is a Xen toolstack for dom0 that manages VMs the Qubes OS way.
//
// It is a multi-call binary: invoked as qvm-VERB (a symlink) it runs VERB,
// so `qvm-create ARGS` is `qvm create ARGS`. `qvm --list-verbs` prints the
// verbs, one per line (the Makefile makes the links from it).
package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"sort"
	"strings"
	"syscall"

	"github.com/qvm-project/qvm/lifecycle"
	"github.com/qvm-project/qvm/termtext"
)

// verb is one qvm sub-command.
type verb struct {
	name    string
	summary string
	run     func(ctx context.Context, a *app, args []string) error
	// link is the verb's symlink, a command name installed beside qvm;
	// "" means qvm-NAME. (libxl's hotplug scripts are another, small
	// binary: cmd/qvm-hotplug.)
	link string
	// hidden verbs are run by qvm itself or by libxl, not typed.
	hidden bool
}

// linkName is the symlink that runs the verb.
func (v verb) linkName() string {
	if v.link != "" {
		return v.link
	}
	return "qvm-" + v.name
}

// verbs is the table of every sub-command.
func verbs() []verb {
	return []verb{
		{name: "create", summary: "create a new VM", run: runCreate},
		{name: "prefs", summary: "list, get, set or reset a VM's properties", run: runPrefs},
		{name: "ls", summary: "list VMs (-n: network settings; --format json)", run: runLs},
		{name: "clone", summary: "copy a VM under a new name", run: runClone},
		{name: "remove", summary: "remove VMs and their images", run: runRemove},
		{name: "volume", summary: "list, info, resize (grow only) and import VM volumes", run: runVolume},
		{name: "features", summary: "list, get, set or unset a VM's features", run: runFeatures},
		{name: "start", summary: "start VMs (--cdrom for an installer; --dry-run prints the libxl config)", run: runStart},
		{name: "shutdown", summary: "shut VMs down (--wait to wait until they are gone)", run: runShutdown},
		{name: "kill", summary: "destroy VMs at once", run: runKill},
		{name: "pci", summary: "list the host's PCI devices; assign (attach --persistent) and unassign them", run: runPCI},
		{name: "block", summary: "attach, detach and list discs in running HVMs' CD-ROM drives", run: runBlock},
		{name: lifecycle.DHCPDVerb, summary: "serve a VM its address by DHCP on one interface", run: runDHCPD},
		{name: "qubesdb", summary: "show the keys a VM gets in xenstore at start (dry run)", run: runQubesDB},
		{name: "run", summary: "run a command in VMs through their qrexec agent (--pass-io for its input and output)", run: runRun},
		{name: "console", summary: "attach to a VM's text console (Ctrl-] leaves; --log: what it printed)", run: runConsole},
		{name: "sendkey", summary: "press keys on a running HVM's keyboard (ctrl-alt-del, ...)", run: runSendKey},
		{name: "pause", summary: "pause running VMs", run: runPause},
		{name: "unpause", summary: "unpause paused VMs", run: runUnpause},
		{name: "check", summary: "check whether VMs exist, run, are paused, templates or networked (exit 0, 1 or 3)", run: runCheck},
		{name: "tags", summary: "list, add or remove a VM's tags", run: runTags},
		{name: "service", summary: "list, get, enable, disable or unset a VM's services", run: runService},
		{name: lifecycle.MonitorVerb, summary: "watch a started domain until it is gone (run by qvm-start)", run: runMonitor, hidden: true},
		{name: "qubes-prefs", summary: "list, get or set the global settings", run: runGlobalPrefs, link: "qubes-prefs"},
	}
}

// app carries what every verb needs: where output goes, the environment,
// the log, and the command's session on the host.
type app struct {
	prog  string // name shown in messages, e.g. "qvm-create"
	stdin io.Reader
	// stdinLines reads the answers to questions (see ask).
	stdinLines *bufio.Reader
	stdout     io.Writer
	stderr     io.Writer
	// getenv reads the command's environment (os.Getenv, or a test's).
	getenv func(string) string
	log    *slog.Logger
	// sess is what the command opened on the host (see cmdline.session);
	// run closes it after the verb.
	sess *session
	// describing, when set, makes the verb stop at its flag parsing and
	// leave its command line there (see describe): for completion and
	// the man pages.
	describing *description
}

// exitStatus ends a command with a code and, unless empty, a message
// printed as it is (Qubes' tools say some things without "error:").
type exitStatus struct {
	code int
	msg  string
}

func (e exitStatus) Error() string { return fmt.Sprintf("exit status %d: %s", e.code, e.msg) }

func exitWith(code int, msg string) error { return exitStatus{code, msg} }

// usageError is a command-line mistake: exit code 2, like argparse.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error { return usageError{fmt.Sprintf(format, args...)} }

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args, stdio{os.Stdin, os.Stdout, os.Stderr, os.Getenv})
	stop()
	os.Exit(code)
}

// stdio is what a command runs with besides its arguments.
type stdio struct {
	stdin          io.Reader
	stdout, stderr io.Writer
	getenv         func(string) string
}

// run dispatches argv to a verb and returns the exit code.
func run(ctx context.Context, argv []string, io stdio) int {
	stdout, stderr := io.stdout, io.stderr
	base := filepath.Base(argv[0])
	args := argv[1:]
	name := ""
	for _, v := range verbs() {
		if v.link != "" && filepath.Base(v.link) == base {
			name = v.name
		}
	}
	if v, ok := strings.CutPrefix(base, "qvm-"); ok && name == "" {
		name = v
	} else if name == "" {
		if len(args) == 0 {
			printVerbs(stderr)
			return 2
		}
		switch args[0] {
		case "--list-verbs":
			for _, v := range verbs() {
				fmt.Fprintln(stdout, v.name)
			}
			return 0
		case "--list-links":
			for _, v := range verbs() {
				if !v.hidden {
					fmt.Fprintln(stdout, v.linkName())
				}
			}
			return 0
		case "-h", "--help", "help":
			printVerbs(stdout)
			return 0
		case "--completion":
			if len(args) != 2 || args[1] != "bash" {
				fmt.Fprintln(stderr, "qvm: usage: qvm --completion bash")
				return 2
			}
			bashCompletion(stdout)
			return 0
		case "--complete":
			// qvm --complete bash BREAKS LINE, from the completion script.
			if len(args) != 4 || args[1] != "bash" {
				return 2
			}
			runComplete(ctx, stdout, io.getenv, args[2], args[3])
			return 0
		case "--man":
			if len(args) != 2 {
				fmt.Fprintln(stderr, "qvm: usage: qvm --man qvm|VERB|qvm-VERB")
				return 2
			}
			if err := writeMan(ctx, stdout, args[1]); err != nil {
				fmt.Fprintf(stderr, "qvm: %v\n", err)
				return 2
			}
			return 0
		}
		name, args = args[0], args[1:]
	}
	var found *verb
	for _, v := range verbs() {
		if v.name == name {
			found = &v
			break
		}
	}
	if found == nil {
		fmt.Fprintf(stderr, "qvm: unknown command %q (run `qvm --help` for the list)\n", name)
		return 2
	}
	a := &app{
		prog:   filepath.Base(found.linkName()),
		stdin:  io.stdin,
		stdout: stdout,
		stderr: stderr,
		getenv: io.getenv,
		log:    slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: logLevel(io.getenv)})),
	}
	err := found.run(ctx, a, args)
	if a.sess != nil {
		a.sess.close()
	}
	if err != nil {
		if errors.Is(err, errHelpShown) {
			return 0
		}
		var st exitStatus
		if errors.As(err, &st) {
			if st.msg != "" {
				fmt.Fprintln(stderr, termtext.Lines(st.msg))
			}
			return st.code
		}
		// An error can quote what a VM, its stubdomain or its QEMU chose
		// (packages that read such things make it safe themselves; this
		// is the last line).
		fmt.Fprintf(stderr, "%s: error: %s\n", a.prog, termtext.Lines(err.Error()))
		var ue usageError
		if errors.As(err, &ue) {
			return 2
		}
		return 1
	}
	return 0
}

func logLevel(getenv func(string) string) slog.Level {
	if getenv("QVM_DEBUG") != "" {
		return slog.LevelDebug
	}
	return slog.LevelWarn
}

func printVerbs(w io.Writer) {
	fmt.Fprintln(w, "usage: qvm VERB [ARGS...]   (or qvm-VERB ARGS...)")
	fmt.Fprintln(w, "verbs:")
	vs := verbs()
	sort.Slice(vs, func(i, j int) bool { return vs[i].name < vs[j].name })
	for _, v := range vs {
		if v.hidden {
			continue
		}
		fmt.Fprintf(w, "  %-12s %s\n", v.name, v.summary)
	}
}
