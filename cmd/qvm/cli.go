package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"runtime/debug"
	"sort"
	"strings"

	"github.com/spf13/pflag"

	"github.com/qvm-project/qvm/store"
	"github.com/qvm-project/qvm/vm"
)

// cmdline is a verb's flag set plus the options every verb shares.
type cmdline struct {
	*pflag.FlagSet
	a       *app
	ctx     context.Context
	dir     string
	verbose int
	quiet   int
	usage   string
	// greedy flags take every following argument that is not an option,
	// like argparse's nargs='+' (qvm-ls --class AppVM TemplateVM).
	greedy map[string]bool
	// exclusive are groups of flags at most one of which may be given.
	exclusive [][]string
}

// newCmdline starts a verb's flags: --dir, --verbose, --quiet, --help,
// --version (and --force-root, accepted and ignored, as in Qubes).
// usage is the synopsis after the program name, e.g. "[options] VMNAME";
// completion and the man pages read its words (see positionalKind).
func (a *app) newCmdline(ctx context.Context, usage string) *cmdline {
	c := &cmdline{FlagSet: pflag.NewFlagSet(a.prog, pflag.ContinueOnError), a: a, ctx: ctx, usage: usage, greedy: map[string]bool{}}
	c.SortFlags = false
	c.SetOutput(discard{})
	c.StringVar(&c.dir, "dir", "", "state directory (default $"+store.EnvDir+" or "+store.DefaultDir+")")
	c.CountVarP(&c.verbose, "verbose", "v", "increase verbosity")
	c.CountVarP(&c.quiet, "quiet", "q", "decrease verbosity")
	c.Bool("force-root", false, "ignored (qvm runs as root)")
	c.Lookup("force-root").Hidden = true
	return c
}

// verbosity is Qubes' verbosity level: 1 by default, up with each -v,
// down with each -q.
func (c *cmdline) verbosity() int { return 1 + c.verbose - c.quiet }

// multi is a flag that takes one or more values, each as its own argument
// (--label red green) or repeated; argparse's nargs='+'.
func (c *cmdline) multi(p *[]string, name, short, usage string) {
	c.StringArrayVarP(p, name, short, nil, usage)
	c.greedy[name] = true
}

// exclude declares flags that exclude each other (argparse's mutually
// exclusive groups).
func (c *cmdline) exclude(names ...string) { c.exclusive = append(c.exclusive, names) }

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }

// errHelpShown means --help printed the usage: exit 0.
var errHelpShown = errors.New("help shown")

// errDescribed ends a verb run for its description (see app.describing).
var errDescribed = errors.New("described")

// parse parses args; on --help it prints the usage and returns errHelpShown.
func (c *cmdline) parse(args []string) error {
	c.BoolP("help", "h", false, "show this help message and exit")
	c.Bool("version", false, "show the program's version and exit")
	if c.a.describing != nil {
		c.a.describing.cmd = c
		return errDescribed
	}
	args, err := c.prepare(args)
	if err != nil {
		return err
	}
	if err := c.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			c.printUsage()
			return errHelpShown
		}
		return usagef("%v (see %s --help)", err, c.a.prog)
	}
	if h, _ := c.GetBool("help"); h {
		c.printUsage()
		return errHelpShown
	}
	if v, _ := c.GetBool("version"); v {
		fmt.Fprintf(c.a.stdout, "%s (qvm) %s\n", c.a.prog, qvmVersion())
		return errHelpShown
	}
	for _, group := range c.exclusive {
		var given []string
		for _, n := range group {
			if c.Changed(n) {
				given = append(given, "--"+n)
			}
		}
		if len(given) > 1 {
			return usagef("argument %s: not allowed with argument %s", given[1], given[0])
		}
	}
	return nil
}

// qvmVersion is the module version or VCS revision qvm was built from.
func qvmVersion() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "(unknown)"
	}
	for _, s := range bi.Settings {
		if s.Key == "vcs.revision" && len(s.Value) >= 12 {
			return s.Value[:12]
		}
	}
	return bi.Main.Version
}

// negativeMark prefixes a positional argument that looks like a negative
// number, so that pflag does not take it for a short option; Arg and Args
// strip it. argparse treats such arguments as values too.
const negativeMark = "\x00"

// prepare rewrites args for pflag the way argparse reads them: a unique
// prefix of a long option stands for it (--hide for --hide-default), a
// greedy option takes each following non-option argument, and an
// argument that looks like a negative number is a value.
func (c *cmdline) prepare(args []string) ([]string, error) {
	out := make([]string, 0, len(args))
	takesValue := false
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			out = append(out, args[i:]...)
			break
		}
		if takesValue {
			out = append(out, a)
			takesValue = false
			continue
		}
		if strings.HasPrefix(a, "--") && len(a) > 2 {
			name, val, hasVal := strings.Cut(a[2:], "=")
			full, err := c.longName(name)
			if err != nil {
				return nil, err
			}
			if full != name {
				a = "--" + full
				if hasVal {
					a += "=" + val
				}
			}
			if c.greedy[full] && !hasVal {
				n := 0
				for i+1 < len(args) && !looksLikeOption(args[i+1]) {
					i++
					n++
					out = append(out, "--"+full+"="+args[i])
				}
				if n == 0 {
					return nil, usagef("argument --%s: expected at least one argument", full)
				}
				continue
			}
			out = append(out, a)
			takesValue = !hasVal && c.needsValue("--"+full)
			continue
		}
		if len(a) > 1 && a[0] == '-' && (a[1] >= '0' && a[1] <= '9') {
			out = append(out, negativeMark+a)
			continue
		}
		out = append(out, a)
		takesValue = c.needsValue(a)
	}
	return out, nil
}

func looksLikeOption(a string) bool {
	return len(a) > 1 && a[0] == '-' && !(a[1] >= '0' && a[1] <= '9')
}

// longName resolves a long option's name or its unique prefix.
func (c *cmdline) longName(name string) (string, error) {
	if c.Lookup(name) != nil {
		return name, nil
	}
	var matches []string
	c.VisitAll(func(f *pflag.Flag) {
		if strings.HasPrefix(f.Name, name) && !f.Hidden {
			matches = append(matches, f.Name)
		}
	})
	switch len(matches) {
	case 0:
		return name, nil // pflag reports it
	case 1:
		return matches[0], nil
	}
	sort.Strings(matches)
	return "", usagef("ambiguous option: --%s could match --%s", name, strings.Join(matches, ", --"))
}

// needsValue reports whether a is a flag whose value is the next argument.
func (c *cmdline) needsValue(a string) bool {
	var f *pflag.Flag
	switch {
	case strings.HasPrefix(a, "--") && !strings.Contains(a, "="):
		f = c.Lookup(a[2:])
	case len(a) == 2 && a[0] == '-' && a[1] != '-':
		f = c.ShorthandLookup(a[1:])
	}
	return f != nil && f.NoOptDefVal == ""
}

// Arg is the i-th positional argument.
func (c *cmdline) Arg(i int) string { return strings.TrimPrefix(c.FlagSet.Arg(i), negativeMark) }

// Args are the positional arguments.
func (c *cmdline) Args() []string {
	args := c.FlagSet.Args()
	out := make([]string, len(args))
	for i, a := range args {
		out[i] = strings.TrimPrefix(a, negativeMark)
	}
	return out
}

// metavar names a flag's value in --help and the man page (the default is
// the flag's name in capitals).
func (c *cmdline) metavar(name, m string) {
	c.SetAnnotation(name, metavarKey, []string{m})
}

const metavarKey = "metavar"

// printUsage is --help: the synopsis and each option (what the man page
// says, in short).
func (c *cmdline) printUsage() {
	w := bufio.NewWriter(c.a.stdout)
	fmt.Fprintf(w, "usage: %s %s\n\noptions:\n", c.a.prog, c.usage)
	var rows [][]string
	c.VisitAll(func(f *pflag.Flag) {
		if !f.Hidden {
			rows = append(rows, []string{"  " + flagNames(f), f.Usage})
		}
	})
	writeTable(w, rows)
	w.Flush()
}

// stateDir resolves the state directory: --dir, then $QVM_DIR, then the default.
func (c *cmdline) stateDir() string {
	if c.dir != "" {
		return c.dir
	}
	if d := c.a.getenv(store.EnvDir); d != "" {
		return d
	}
	return store.DefaultDir
}

// splitProp splits NAME=VALUE.
func splitProp(s string) (vm.Prop, error) {
	k, v, ok := strings.Cut(s, "=")
	if !ok || k == "" {
		return vm.Prop{}, usagef("property %q must be NAME=VALUE, e.g. --property virt_mode=hvm", s)
	}
	return vm.Prop{Name: strings.ReplaceAll(k, "-", "_"), Value: v}, nil
}

// appendList is a repeatable string flag that keeps every value in order;
// several flag names can share one (--property and --prop).
type appendList []string

func (l *appendList) String() string     { return strings.Join(*l, ",") }
func (l *appendList) Set(v string) error { *l = append(*l, v); return nil }
func (l *appendList) Type() string       { return "NAME=VALUE" }
