package main

import (
	"context"
	"errors"
	"io"
	"strings"

	"github.com/spf13/pflag"
)

// description is a verb's command line as its own code defines it: the
// flags and synopsis it parses with, and for a verb with actions those of
// each action. Completion and the man pages are made from it, so they
// cannot drift from what the verb accepts.
type description struct {
	cmd     *cmdline
	actions []actionDescription
	// defaultAction runs when none is given ("" means one is required).
	defaultAction string
}

// actionDescription is one action of a verb with actions.
type actionDescription struct {
	names   []string
	summary string
	desc    *description
}

// describe runs a verb up to its flag parsing (which stops there when
// app.describing is set). Nothing can be opened, read or changed meanwhile:
// the session refuses to open anything and the context is cancelled, so
// a verb that does not stop (one parsing its flags otherwise) fails at
// once; it has no description (nil).
func describe(ctx context.Context, v verb) *description {
	ctx, cancel := context.WithCancel(ctx)
	cancel()
	d := &description{}
	a := &app{prog: v.linkName(), stdin: strings.NewReader(""), stdout: io.Discard, stderr: io.Discard,
		getenv: func(string) string { return "" }, describing: d}
	if i := strings.LastIndexByte(a.prog, '/'); i >= 0 {
		a.prog = a.prog[i+1:]
	}
	err := v.run(ctx, a, nil)
	if !errors.Is(err, errDescribed) {
		return nil
	}
	return d
}

// describeActions is dispatch's part of describe: each action, described.
func describeActions(ctx context.Context, a *app, def string, subs []subcommand) error {
	a.describing.defaultAction = def
	for _, sc := range subs {
		sa := *a
		sa.prog = a.prog + " " + sc.names[0]
		sa.describing = &description{}
		if err := sc.run(ctx, &sa, nil); errors.Is(err, errDescribed) {
			a.describing.actions = append(a.describing.actions, actionDescription{names: sc.names, summary: sc.summary, desc: sa.describing})
		}
	}
	return errDescribed
}

// flags lists the visible flags of a command line, in definition order.
func (d *description) flags() []*pflag.Flag {
	if d == nil || d.cmd == nil {
		return nil
	}
	var out []*pflag.Flag
	d.cmd.VisitAll(func(f *pflag.Flag) {
		if !f.Hidden {
			out = append(out, f)
		}
	})
	return out
}

// action finds an action by any of its names.
func (d *description) action(name string) *actionDescription {
	for i := range d.actions {
		for _, n := range d.actions[i].names {
			if n == name {
				return &d.actions[i]
			}
		}
	}
	return nil
}
