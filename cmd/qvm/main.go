// Command qvm is a Xen toolstack for dom0 that manages VMs the Qubes OS way.
//
// It is a multi-call binary: invoked as qvm-VERB (a symlink) it runs VERB,
// so `qvm-create ARGS` is `qvm create ARGS`. `qvm --list-verbs` prints the
// verbs, one per line (the Makefile makes the links from it).
package main

import (
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
)

// verb is one qvm sub-command.
type verb struct {
	name    string
	summary string
	run     func(ctx context.Context, a *app, args []string) error
	// link is the verb's symlink: a command name installed beside qvm,
	// or an absolute path (a hotplug script where libxl looks for it);
	// "" means qvm-NAME.
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
		{name: "volume", summary: "volume info, list and resize (grow only)", run: runVolume},
		{name: "features", summary: "list, get, set or unset a VM's features", run: runFeatures},
		{name: "start", summary: "start VMs (--cdrom for an installer; --dry-run prints the libxl config)", run: runStart},
		{name: "shutdown", summary: "shut VMs down (--wait to wait until they are gone)", run: runShutdown},
		{name: "kill", summary: "destroy VMs at once", run: runKill},
		{name: "pci", summary: "list, attach (--persistent) and detach PCI devices", run: runPCI},
		{name: "block", summary: "attach, detach and list discs in running HVMs' CD-ROM drives", run: runBlock},
		{name: "dhcpd", summary: "serve a VM its address by DHCP on one interface", run: runDHCPD},
		{name: "qubesdb", summary: "show the keys a VM gets in xenstore at start (dry run)", run: runQubesDB},
		{name: "monitor", summary: "watch a started domain until it is gone (run by qvm-start)", run: runMonitor, hidden: true},
		{name: "vif-route-qvm", summary: "libxl hotplug script for VM interfaces dom0 serves", run: runVifHook, link: "/etc/xen/scripts/vif-route-qvm", hidden: true},
		{name: "block-qvm", summary: "libxl hotplug script for VM disks on loop devices", run: runBlockHook, link: "/etc/xen/scripts/block-qvm", hidden: true},
		{name: "qubes-prefs", summary: "list, get or set the global settings", run: runGlobalPrefs, link: "qubes-prefs"},
	}
}

// app carries what every verb needs: where output goes and the log.
type app struct {
	prog   string // name shown in messages, e.g. "qvm-create"
	stdin  io.Reader
	stdout io.Writer
	stderr io.Writer
	log    *slog.Logger
	// memMiB caches the machine's memory for this command (see hostMemoryMiB).
	memMiB int
}

// usageError is a command-line mistake: exit code 2, like argparse.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error { return usageError{fmt.Sprintf(format, args...)} }

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args, os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run dispatches argv to a verb and returns the exit code.
func run(ctx context.Context, argv []string, stdin io.Reader, stdout, stderr io.Writer) int {
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
				if !v.hidden || v.link != "" {
					fmt.Fprintln(stdout, v.linkName())
				}
			}
			return 0
		case "-h", "--help", "help":
			printVerbs(stdout)
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
		stdin:  stdin,
		stdout: stdout,
		stderr: stderr,
		log:    slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: logLevel()})),
	}
	if err := found.run(ctx, a, args); err != nil {
		if errors.Is(err, errHelpShown) {
			return 0
		}
		fmt.Fprintf(stderr, "%s: error: %v\n", a.prog, err)
		var ue usageError
		if errors.As(err, &ue) {
			return 2
		}
		return 1
	}
	return 0
}

func logLevel() slog.Level {
	if os.Getenv("QVM_DEBUG") != "" {
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
