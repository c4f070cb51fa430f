package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
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
}

// newCmdline starts a verb's flags: --dir, --verbose, --quiet, --help.
// usage is the synopsis after the program name, e.g. "[options] VMNAME".
func (a *app) newCmdline(ctx context.Context, usage string) *cmdline {
	c := &cmdline{FlagSet: pflag.NewFlagSet(a.prog, pflag.ContinueOnError), a: a, ctx: ctx, usage: usage}
	c.SortFlags = false
	c.SetOutput(discard{})
	c.StringVar(&c.dir, "dir", "", "state directory (default $"+store.EnvDir+" or "+store.DefaultDir+")")
	c.CountVarP(&c.verbose, "verbose", "v", "more output")
	c.CountVarP(&c.quiet, "quiet", "q", "less output")
	return c
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }

// errHelpShown means --help printed the usage: exit 0.
var errHelpShown = errors.New("help shown")

// parse parses args; on --help it prints the usage and returns errHelpShown.
func (c *cmdline) parse(args []string) error {
	c.BoolP("help", "h", false, "show this help and exit")
	if err := c.Parse(c.protectNegatives(args)); err != nil {
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
	return nil
}

// negativeMark prefixes a positional argument that looks like a negative
// number, so that pflag does not take it for a short option; Arg and Args
// strip it. argparse treats such arguments as values too.
const negativeMark = "\x00"

func (c *cmdline) protectNegatives(args []string) []string {
	out := make([]string, len(args))
	takesValue := false
	for i, a := range args {
		out[i] = a
		if a == "--" {
			copy(out[i:], args[i:])
			break
		}
		if !takesValue && len(a) > 1 && a[0] == '-' && (a[1] >= '0' && a[1] <= '9') {
			out[i] = negativeMark + a
		}
		takesValue = c.needsValue(a)
	}
	return out
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

func (c *cmdline) printUsage() {
	w := bufio.NewWriter(c.a.stdout)
	fmt.Fprintf(w, "usage: %s %s\n\noptions:\n", c.a.prog, c.usage)
	c.SetOutput(w)
	c.PrintDefaults()
	c.SetOutput(discard{})
	w.Flush()
}

// stateDir resolves the state directory: --dir, then $QVM_DIR, then the default.
func (c *cmdline) stateDir() string {
	if c.dir != "" {
		return c.dir
	}
	if d := os.Getenv(store.EnvDir); d != "" {
		return d
	}
	return store.DefaultDir
}

// openStore opens the state directory.
func (c *cmdline) openStore() (*store.Store, error) {
	return store.Open(c.stateDir())
}

// hostInfo describes this machine for the model's defaults.
func (c *cmdline) hostInfo(st *store.Store) vm.Host {
	return vm.Host{MemoryMiB: c.a.hostMemoryMiB(c.ctx), Kernels: st.Kernels()}
}

// meminfoMiB reads this kernel's memory from /proc/meminfo: the machine's
// when not under Xen (in dom0 it would be dom0's share only).
func meminfoMiB() int {
	f, err := os.Open("/proc/meminfo")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var kb int
		if n, _ := fmt.Sscanf(sc.Text(), "MemTotal: %d kB", &kb); n == 1 {
			return kb / 1024
		}
	}
	return 0
}

// update makes one change to the store under its writer lock, with the
// hypervisor's view of which VMs run attached (asked inside the lock, so
// that it cannot go stale while the command waits for the lock).
func (c *cmdline) update(fn func(tx *store.Tx) error) error {
	st, err := c.openStore()
	if err != nil {
		return err
	}
	return st.Update(c.ctx, vm.Host{}, func(tx *store.Tx) error {
		if err := setRuntime(c.ctx, c.a, tx.Sys); err != nil {
			return err
		}
		tx.Sys.Host = c.hostInfo(st)
		return fn(tx)
	})
}

// loadSystem opens the store and reads the current system for display.
func (c *cmdline) loadSystem() (*store.Store, *vm.System, error) {
	st, err := c.openStore()
	if err != nil {
		return nil, nil, err
	}
	sys, err := st.Load()
	if err != nil {
		return nil, nil, err
	}
	// The runtime first: asking the hypervisor also tells the host's memory.
	if sys.Runtime, err = c.a.runtime(c.ctx); err != nil {
		return nil, nil, err
	}
	sys.Host = c.hostInfo(st)
	return st, sys, nil
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
