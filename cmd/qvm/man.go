package main

import (
	"context"
	"fmt"
	"io"
	"sort"
	"strings"

	"github.com/spf13/pflag"
)

// Manual pages, made from the verbs' own flag definitions (see describe):
// `qvm --man VERB` writes the page of qvm-VERB in roff (man(7)), and
// `qvm --man qvm` the page of qvm itself; make install puts them in
// man1/.

// verbNotes are what a verb's page says besides its options: exit codes
// that are not 0/1/2, and where qvm differs from Qubes.
var verbNotes = map[string]struct{ exit, notes string }{
	"check": {exit: "0 when every VM asked about exists and matches the checks; 3 when only some match; 1 when none does or a VM does not exist; 2 for a command-line mistake."},
	"shutdown": {exit: "The number of VMs that failed to shut down (0 when all did); 2 for a command-line mistake.",
		notes: "VMs that are not running are not errors. --force is accepted; qvm never refuses to stop a netvm in use."},
	"kill":   {exit: "The number of VMs that could not be killed (0 when all were); 2 for a command-line mistake."},
	"remove": {notes: "Without -f, qvm-remove lists the VMs and asks \"Are you sure? [y/N]\" on its terminal; only y removes them. With no terminal to ask on, it refuses unless -f is given. All the VMs named are removed, or none."},
	"pause":  {notes: "The state is libxl's: without Xen the command fails, saying this machine is not the dom0 of a running Xen."},
	"ls":     {notes: "qvm-ls --format json prints every property of each VM, typed, for scripts (qvm's own format)."},
	"pci":    {notes: "qvm assigns PCI devices for the VM's next start (attach --persistent, assign --required); detach removes the assignment."},
	"block":  {notes: "qvm-block changes the medium in a running HVM's CD-ROM drive only."},
}

// writeMan writes the page of a verb (VERB, qvm-VERB or a link name such
// as qubes-prefs), or of qvm.
func writeMan(ctx context.Context, w io.Writer, name string) error {
	if name == "qvm" {
		writeQvmMan(w)
		return nil
	}
	for _, v := range verbs() {
		if v.hidden || (v.name != name && v.linkName() != name) {
			continue
		}
		writeVerbMan(w, v, describe(ctx, v))
		return nil
	}
	return fmt.Errorf("no verb %q (qvm --list-verbs lists them)", name)
}

// roff escapes text for man(7): backslashes and minus signs, and a line
// that would start with a control character.
func roff(s string) string {
	s = strings.ReplaceAll(s, `\`, `\e`)
	s = strings.ReplaceAll(s, "-", `\-`)
	lines := strings.Split(s, "\n")
	for i, l := range lines {
		if strings.HasPrefix(l, ".") || strings.HasPrefix(l, "'") {
			lines[i] = `\&` + l
		}
	}
	return strings.Join(lines, "\n")
}

// metavar names a flag's value in help and man pages ("" for a flag that
// takes none).
func metavar(f *pflag.Flag) string {
	if m := f.Annotations[metavarKey]; len(m) == 1 {
		return m[0]
	}
	switch f.Value.Type() {
	case "bool", "count":
		return ""
	case "NAME=VALUE":
		return "NAME=VALUE"
	}
	return strings.ToUpper(strings.ReplaceAll(f.Name, "-", "_"))
}

// flagNames is "-C, --class CLASS".
func flagNames(f *pflag.Flag) string {
	s := "--" + f.Name
	if f.Shorthand != "" && f.Shorthand != f.Name {
		s = "-" + f.Shorthand + ", " + s
	}
	if f.Shorthand == f.Name {
		s = "-" + f.Name
	}
	if m := metavar(f); m != "" {
		s += " " + m
	}
	return s
}

func writeVerbMan(w io.Writer, v verb, d *description) {
	prog := v.linkName()
	fmt.Fprintf(w, ".TH %s 1 \"\" \"qvm %s\" \"qvm manual\"\n", roff(strings.ToUpper(prog)), roff(qvmVersion()))
	fmt.Fprintf(w, ".SH NAME\n%s \\- %s\n", roff(prog), roff(v.summary))
	fmt.Fprintf(w, ".SH SYNOPSIS\n")
	if d == nil {
		// A verb with a command line of its own: its --help says it.
		fmt.Fprintf(w, ".B %s\n[options]\n.SH DESCRIPTION\n%s.\n.PP\n%s \\-\\-help lists the options.\n", roff(prog), roff(v.summary), roff(prog))
		fmt.Fprintf(w, ".SH SEE ALSO\n.BR qvm (1)\n")
		return
	}
	if d.cmd != nil {
		fmt.Fprintf(w, ".B %s\n%s\n", roff(prog), roff(d.cmd.usage))
	}
	for _, a := range d.actions {
		fmt.Fprintf(w, ".br\n.B %s %s\n%s\n", roff(prog), roff(a.names[0]), roff(a.desc.cmd.usage))
	}
	fmt.Fprintf(w, ".SH DESCRIPTION\n%s is the qvm command of the Qubes OS tool of the same name, with its options, output and exit codes: %s.\n",
		roff(prog), roff(v.summary))
	if n := verbNotes[v.name].notes; n != "" {
		fmt.Fprintf(w, ".PP\n%s\n", roff(n))
	}
	if d.cmd != nil {
		fmt.Fprintf(w, ".SH OPTIONS\n")
		writeManFlags(w, d)
	}
	if len(d.actions) > 0 {
		fmt.Fprintf(w, ".SH ACTIONS\nThe action comes first")
		if d.defaultAction != "" {
			fmt.Fprintf(w, "; without one, %s runs %s", roff(prog), roff(d.defaultAction))
		}
		fmt.Fprintf(w, ".\n")
		for _, a := range d.actions {
			fmt.Fprintf(w, ".SS \"%s\"\n%s\n.PP\n.B %s %s\n%s\n", roff(strings.Join(a.names, ", ")), roff(a.summary),
				roff(prog), roff(a.names[0]), roff(a.desc.cmd.usage))
			writeManFlags(w, a.desc)
		}
	}
	exit := verbNotes[v.name].exit
	if exit == "" {
		exit = "0 on success; 1 when the operation failed or was refused (nothing was changed); 2 for a command-line mistake."
	}
	fmt.Fprintf(w, ".SH EXIT STATUS\n%s\n", roff(exit))
	fmt.Fprintf(w, ".SH ENVIRONMENT\n.TP\n.B QVM_DIR\nThe state directory when \\-\\-dir is not given (default /var/lib/qvm).\n")
	fmt.Fprintf(w, ".SH SEE ALSO\n.BR qvm (1)\n")
}

func writeManFlags(w io.Writer, d *description) {
	for _, f := range d.flags() {
		fmt.Fprintf(w, ".TP\n.B %s\n%s\n", roff(flagNames(f)), roff(f.Usage))
	}
}

func writeQvmMan(w io.Writer) {
	fmt.Fprintf(w, ".TH QVM 1 \"\" \"qvm %s\" \"qvm manual\"\n", roff(qvmVersion()))
	fmt.Fprintf(w, ".SH NAME\nqvm \\- a Xen toolstack for dom0 that manages VMs the Qubes OS way\n")
	fmt.Fprintf(w, ".SH SYNOPSIS\n.B qvm\nVERB [ARGS...]\n.br\n.B qvm\\-VERB\n[ARGS...]\n.br\n.B qvm\n\\-\\-completion bash | \\-\\-man VERB | \\-\\-list\\-verbs\n")
	fmt.Fprintf(w, ".SH DESCRIPTION\nqvm is one multi\\-call binary: invoked as qvm\\-VERB (a link) it runs VERB. Its state is in /var/lib/qvm, or $QVM_DIR, or \\-\\-dir.\n")
	fmt.Fprintf(w, ".SH COMMANDS\n")
	vs := verbs()
	sort.Slice(vs, func(i, j int) bool { return vs[i].linkName() < vs[j].linkName() })
	for _, v := range vs {
		if !v.hidden {
			fmt.Fprintf(w, ".TP\n.BR %s (1)\n%s\n", roff(v.linkName()), roff(v.summary))
		}
	}
}
