package main

import (
	"context"
	"fmt"
	"strings"
)

// subcommand is one action of a verb with actions (qvm-block attach,
// qvm-pci ls, qvm-volume resize, ...).
type subcommand struct {
	// names are the action's name and its aliases, the name first.
	names   []string
	summary string
	run     func(ctx context.Context, a *app, args []string) error
}

// dispatch runs the action args name: the first argument that is not an
// option (as in Qubes, the action comes before its options and arguments;
// --dir DIR and options without a value may precede it). With no action given, def (an action's
// name) runs, or, when def is "", the command is a usage error. --help
// before any action lists the actions.
func dispatch(ctx context.Context, a *app, args []string, def string, subs []subcommand) error {
	if a.describing != nil {
		return describeActions(ctx, a, def, subs)
	}
	find := func(name string) *subcommand {
		for i := range subs {
			for _, n := range subs[i].names {
				if n == name {
					return &subs[i]
				}
			}
		}
		return nil
	}
	var sc *subcommand
	rest := args
	skip := false
	for i, arg := range args {
		if skip {
			skip = false
			continue
		}
		if arg == "--" {
			break
		}
		if strings.HasPrefix(arg, "-") {
			// --dir, the one option every action has that takes a value.
			skip = arg == "--dir"
			continue
		}
		if sc = find(arg); sc == nil {
			return usagef("unknown action %q: use %s (see %s --help)", arg, actionList(subs), a.prog)
		}
		rest = append(append([]string{}, args[:i]...), args[i+1:]...)
		break
	}
	if sc == nil && (contains(args, "-h") || contains(args, "--help")) {
		fmt.Fprintf(a.stdout, "usage: %s ACTION [options] [ARGS]\n\nactions:\n", a.prog)
		rows := make([][]string, 0, len(subs))
		for _, sc := range subs {
			rows = append(rows, []string{"  " + strings.Join(sc.names, ", "), sc.summary})
		}
		writeTable(a.stdout, rows)
		fmt.Fprintf(a.stdout, "\n%s ACTION --help shows an action's options.\n", a.prog)
		return errHelpShown
	}
	if sc == nil {
		for _, arg := range args {
			if arg == "--version" {
				fmt.Fprintf(a.stdout, "%s (qvm) %s\n", a.prog, qvmVersion())
				return errHelpShown
			}
		}
		if def == "" {
			return usagef("give an action: %s (see %s --help)", actionList(subs), a.prog)
		}
		sc = find(def)
	}
	a.prog += " " + sc.names[0]
	return sc.run(ctx, a, rest)
}

func actionList(subs []subcommand) string {
	names := make([]string, len(subs))
	for i, sc := range subs {
		names[i] = sc.names[0]
	}
	return strings.Join(names, ", ")
}
