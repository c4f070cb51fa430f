package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"sort"
	"strconv"
	"strings"

	"github.com/qvm-project/qvm/store"
	"github.com/qvm-project/qvm/vm"
	"github.com/qvm-project/qvm/volume"
)

// runVolume is qvm-volume: the volumes of VMs, with Qubes' actions.
//
//	qvm-volume [list] [-p POOL] [--full] [VM...]
//	qvm-volume info VM:VOLUME [PROPERTY]
//	qvm-volume config VM:VOLUME PROPERTY VALUE
//	qvm-volume resize VM:VOLUME SIZE
//	qvm-volume import [--size N | --no-resize] VM:VOLUME PATH|-
//	qvm-volume revert VM:VOLUME [REVISION]
//	qvm-volume clone SRC_VM:VOLUME DST_VM:VOLUME
//	qvm-volume clear VM:VOLUME
func runVolume(ctx context.Context, a *app, args []string) error {
	return dispatch(ctx, a, args, "list", []subcommand{
		{names: []string{"info", "i"}, summary: "info about volume", run: volumeInfo},
		{names: []string{"config", "c", "set", "s"}, summary: "set config option for a volume", run: volumeConfig},
		{names: []string{"resize", "extend"}, summary: "resize volume for domain (grow only)", run: volumeResize},
		{names: []string{"list", "ls", "l"}, summary: "list storage volumes", run: volumeList},
		{names: []string{"revert", "rv", "r"}, summary: "revert volume to previous revision", run: volumeRevert},
		{names: []string{"import"}, summary: "import volume data", run: volumeImport},
		{names: []string{"clone"}, summary: "clone volume data", run: volumeClone},
		{names: []string{"clear"}, summary: "clear volume data", run: volumeClear},
	})
}

// volumeVM describes a VM for the volume package, with its template chain.
func volumeVM(st *store.Store, v *vm.View) volume.VM {
	out := volume.VM{Name: v.Name(), Class: string(v.Class()), Dir: st.VMDir(v.Name(), v.Class()),
		Kernel: v.Str("kernel"), KernelsDir: st.KernelsDir()}
	if t := v.Template(); t != nil {
		tv := volumeVM(st, t)
		out.Template = &tv
	}
	return out
}

// volumeArg reads VM:VOLUME as Qubes does: a usage error unless it is
// exactly that; then the VM and the volume must exist (runtime errors).
func volumeArg(sys *vm.System, st *store.Store, arg string) (*vm.View, volume.Info, error) {
	parts := strings.Split(arg, ":")
	if len(parts) != 2 {
		return nil, volume.Info{}, usagef("expected a vm & volume combination like foo:bar")
	}
	v, err := sys.View(parts[0])
	if err != nil {
		return nil, volume.Info{}, fmt.Errorf("no vm %s", pyRepr(parts[0]))
	}
	infos, err := volume.DescribeAll(volumeVM(st, v))
	if err != nil {
		return nil, volume.Info{}, err
	}
	for _, in := range infos {
		if in.Name == parts[1] {
			return v, in, nil
		}
	}
	return nil, volume.Info{}, fmt.Errorf("vm %s has no volume %s", pyRepr(parts[0]), pyRepr(parts[1]))
}

func volumeInfo(ctx context.Context, a *app, args []string) error {
	c := a.newCmdline(ctx, "[options] VM:VOLUME [PROPERTY]")
	if err := c.parse(args); err != nil {
		return err
	}
	if c.NArg() < 1 || c.NArg() > 2 {
		return usagef("info takes VM:VOLUME [PROPERTY] (use 'revisions' to list the available revisions)")
	}
	st, sys, err := c.session().load()
	if err != nil {
		return err
	}
	_, in, err := volumeArg(sys, st, c.Arg(0))
	if err != nil {
		return err
	}
	if c.NArg() == 2 {
		val, err := in.Property(c.Arg(1))
		if err != nil {
			return qubesErrorf("No such property: %s", c.Arg(1))
		}
		if val != "" || c.Arg(1) != "revisions" {
			fmt.Fprintln(a.stdout, val)
		}
		return nil
	}
	rows := make([][]string, 0, 11)
	for _, f := range in.Fields() {
		rows = append(rows, []string{f[0], f[1]})
	}
	writeTable(a.stdout, rows)
	if len(in.Revisions) == 0 {
		fmt.Fprintln(a.stdout, "List of available revisions (for revert): none")
		return nil
	}
	fmt.Fprintln(a.stdout, "List of available revisions (for revert):")
	for _, r := range in.Revisions {
		fmt.Fprintf(a.stdout, "  %s\n", r)
	}
	return nil
}

func volumeConfig(ctx context.Context, a *app, args []string) error {
	c := a.newCmdline(ctx, "[options] VM:VOLUME PROPERTY VALUE")
	if err := c.parse(args); err != nil {
		return err
	}
	if c.NArg() != 3 {
		return usagef("config takes VM:VOLUME PROPERTY VALUE")
	}
	st, sys, err := c.session().load()
	if err != nil {
		return err
	}
	_, in, err := volumeArg(sys, st, c.Arg(0))
	if err != nil {
		return err
	}
	prop, value := c.Arg(1), c.Arg(2)
	var cur string
	switch prop {
	case "rw":
		cur = pyBoolText(in.RW)
	case "ephemeral":
		cur = pyBoolText(in.Ephemeral)
	case "revisions_to_keep":
		cur = strconv.Itoa(in.RevisionsToKeep)
	default:
		return qubesErrorf("Invalid property: %s", prop)
	}
	if prop != "revisions_to_keep" {
		if b, err := vm.ParseBool(value); err == nil {
			value = pyBoolText(b)
		}
	}
	if value != cur {
		return fmt.Errorf("%s of %s is %s and cannot be changed: qvm's file pool keeps no revisions and fixes rw and ephemeral by volume", prop, c.Arg(0), cur)
	}
	return nil
}

func pyBoolText(b bool) string {
	if b {
		return "True"
	}
	return "False"
}

func volumeList(ctx context.Context, a *app, args []string) error {
	c := a.newCmdline(ctx, "[options] [--all [--exclude EXCLUDE]] [VMNAME...]")
	var pools []string
	var full bool
	sel := c.selection("list volumes from specified domain(s)")
	c.StringArrayVarP(&pools, "pool", "p", nil, "only the volumes of this pool (repeatable)")
	c.BoolVar(&full, "full", false, "print full line for each POOL_NAME:VOLUME_ID & vm combination")
	if err := c.parse(args); err != nil {
		return err
	}
	st, sys, err := c.session().load()
	if err != nil {
		return err
	}
	names, err := sel.resolve(sys, c.Args(), false, true)
	if err != nil {
		return err
	}
	if len(c.Args()) == 0 && !sel.all {
		names = sys.Names()
	}
	sort.Strings(names)
	type use struct{ vm, name string }
	type vol struct {
		pool, vid string
		users     []use
	}
	byID := map[[2]string]*vol{}
	var vols []*vol
	for _, n := range names {
		v, _ := sys.View(n)
		infos, err := volume.DescribeAll(volumeVM(st, v))
		if err != nil {
			return err
		}
		for _, in := range infos {
			if in.VID == "" || (len(pools) > 0 && !contains(pools, in.Pool)) {
				continue
			}
			k := [2]string{in.Pool, in.VID}
			if byID[k] == nil {
				byID[k] = &vol{pool: in.Pool, vid: in.VID}
				vols = append(vols, byID[k])
			}
			byID[k].users = append(byID[k].users, use{n, in.Name})
		}
	}
	sort.Slice(vols, func(i, j int) bool {
		return vols[i].pool < vols[j].pool || vols[i].pool == vols[j].pool && vols[i].vid < vols[j].vid
	})
	// As Qubes: a volume's last user first, then the others; on a
	// terminal (without --full) only the first row names the volume.
	short := !full && a.stdoutIsTerminal()
	rows := [][]string{{"POOL:VOLUME", "VMNAME", "VOLUME_NAME", "REVERT_POSSIBLE"}}
	for _, vl := range vols {
		id := vl.pool + ":" + vl.vid
		last := vl.users[len(vl.users)-1]
		rows = append(rows, []string{id, last.vm, last.name, "No"})
		for _, u := range vl.users[:len(vl.users)-1] {
			first := id
			if short {
				first = ""
			}
			rows = append(rows, []string{first, u.vm, u.name, "No"})
		}
	}
	writeTable(a.stdout, rows)
	return nil
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func volumeResize(ctx context.Context, a *app, args []string) error {
	c := a.newCmdline(ctx, "[options] VM:VOLUME SIZE")
	var force bool
	c.BoolVarP(&force, "force", "f", false, "Force operation, even if new size is smaller than the current one (qvm refuses to shrink all the same)")
	if err := c.parse(args); err != nil {
		return err
	}
	if c.NArg() != 2 {
		return usagef("resize takes VM:VOLUME SIZE, e.g. qvm-volume resize win10:root 40GiB")
	}
	if len(strings.Split(c.Arg(0), ":")) != 2 {
		return usagef("expected a vm & volume combination like foo:bar")
	}
	size, err := volume.ParseSize(c.Arg(1))
	if err != nil {
		return usagef("size %q: %v", c.Arg(1), err)
	}
	// Under the writer lock, so that no clone or removal runs meanwhile.
	return c.session().update(func(tx *store.Tx) error {
		v, in, err := volumeArg(tx.Sys, tx.Store(), c.Arg(0))
		if err != nil {
			return err
		}
		if tx.Sys.IsRunning(v.Name()) {
			return fmt.Errorf("%s is running: shut it down before resizing its %s volume", v.Name(), in.Name)
		}
		if force && size < in.Size {
			return fmt.Errorf("resize %s: qvm never shrinks an image (-f or not): the data past %d bytes would be lost; "+
				"copy what you need into a new VM instead", c.Arg(0), size)
		}
		return volume.ResizeVolume(volumeVM(tx.Store(), v), in.Name, size)
	})
}

func volumeImport(ctx context.Context, a *app, args []string) error {
	c := a.newCmdline(ctx, "[options] VM:VOLUME PATH")
	var sizeText string
	var noResize bool
	c.StringVar(&sizeText, "size", "", "Set volume size to this value in bytes")
	c.BoolVar(&noResize, "no-resize", false, "Do not resize volume before importing data")
	if err := c.parse(args); err != nil {
		return err
	}
	if c.NArg() != 2 {
		return usagef("import takes VM:VOLUME PATH ('-' for standard input)")
	}
	if len(strings.Split(c.Arg(0), ":")) != 2 {
		return usagef("expected a vm & volume combination like foo:bar")
	}
	size := int64(-1)
	if sizeText != "" {
		n, err := strconv.ParseInt(sizeText, 10, 64)
		if err != nil || n <= 0 {
			return usagef("argument --size: invalid int value: %s", pyRepr(sizeText))
		}
		size = n
	}
	s := c.session()
	st, err := s.store()
	if err != nil {
		return err
	}
	var src io.Reader
	if path := c.Arg(1); path == "-" {
		if size < 0 && !noResize {
			return qubesErrorf("Failed to get - file size, specify it explicitly with --size, or use --no-resize option")
		}
		src = a.stdin
	} else {
		im, err := volume.OpenImport(path, false, st.Dir())
		if err != nil {
			return err
		}
		defer im.Close()
		src = im.Reader()
		if size < 0 && !noResize {
			size = im.Size
		}
	}
	return s.update(func(tx *store.Tx) error {
		v, in, err := volumeArg(tx.Sys, tx.Store(), c.Arg(0))
		if err != nil {
			return err
		}
		if tx.Sys.IsRunning(v.Name()) {
			return fmt.Errorf("%s is running: shut it down before importing into its %s volume", v.Name(), in.Name)
		}
		n := size
		if noResize {
			n = in.Size
		}
		return volume.ImportData(ctx, volumeVM(tx.Store(), v), in.Name, src, n)
	})
}

// errNoRevisions: qvm's file pool keeps none (revisions_to_keep is 0).
var errNoRevisions = qubesErrorf("No snapshots available")

func volumeRevert(ctx context.Context, a *app, args []string) error {
	c := a.newCmdline(ctx, "[options] VM:VOLUME [REVISION]")
	if err := c.parse(args); err != nil {
		return err
	}
	if c.NArg() < 1 || c.NArg() > 2 {
		return usagef("revert takes VM:VOLUME [REVISION]")
	}
	st, sys, err := c.session().load()
	if err != nil {
		return err
	}
	if _, _, err := volumeArg(sys, st, c.Arg(0)); err != nil {
		return err
	}
	if c.NArg() == 2 {
		return fmt.Errorf("no revision %s of %s: qvm's file pool keeps no revisions", pyRepr(c.Arg(1)), c.Arg(0))
	}
	return fmt.Errorf("%w: qvm's file pool keeps no revisions of %s", errNoRevisions, c.Arg(0))
}

func volumeClone(ctx context.Context, a *app, args []string) error {
	c := a.newCmdline(ctx, "[options] SOURCE_VM:SOURCE_VOLUME DESTINATION_VM:DESTINATION_VOLUME")
	var force bool
	c.BoolVarP(&force, "force", "f", false, "Do not prompt for confirmation")
	if err := c.parse(args); err != nil {
		return err
	}
	if c.NArg() != 2 {
		return usagef("clone takes SOURCE_VM:SOURCE_VOLUME DESTINATION_VM:DESTINATION_VOLUME")
	}
	st, sys, err := c.session().load()
	if err != nil {
		return err
	}
	_, srcIn, err := volumeArg(sys, st, c.Arg(0))
	if err != nil {
		return err
	}
	_, dstIn, err := volumeArg(sys, st, c.Arg(1))
	if err != nil {
		return err
	}
	if !srcIn.SaveOnStop || !dstIn.SaveOnStop {
		return qubesErrorf("Volumes must be save_on_stop for cloning")
	}
	if !force {
		fmt.Fprintf(a.stdout, "This will clone the data from %s into %s!\n(Data in %s may be preserved in a revision.)\n", c.Arg(0), c.Arg(1), c.Arg(1))
		answer, err := a.ask("Are you sure? [y/N] ")
		if err != nil {
			return fmt.Errorf("clone cancelled: %w; add -f (--force) to clone without asking", err)
		}
		if strings.ToLower(answer) != "y" {
			fmt.Fprintln(a.stdout, "Clone cancelled.")
			return nil
		}
	}
	return c.session().update(func(tx *store.Tx) error {
		sv, sin, err := volumeArg(tx.Sys, tx.Store(), c.Arg(0))
		if err != nil {
			return err
		}
		dv, din, err := volumeArg(tx.Sys, tx.Store(), c.Arg(1))
		if err != nil {
			return err
		}
		for _, v := range []*vm.View{sv, dv} {
			if tx.Sys.IsRunning(v.Name()) {
				return fmt.Errorf("%s is running: shut it down before cloning volumes", v.Name())
			}
		}
		f, err := os.Open(sin.Path)
		if err != nil {
			return err
		}
		defer f.Close()
		return volume.ImportData(ctx, volumeVM(tx.Store(), dv), din.Name, f, sin.Size)
	})
}

func volumeClear(ctx context.Context, a *app, args []string) error {
	c := a.newCmdline(ctx, "[options] VM:VOLUME")
	var force bool
	c.BoolVarP(&force, "force", "f", false, "Do not prompt for confirmation")
	if err := c.parse(args); err != nil {
		return err
	}
	if c.NArg() != 1 {
		return usagef("clear takes VM:VOLUME")
	}
	st, sys, err := c.session().load()
	if err != nil {
		return err
	}
	if _, _, err := volumeArg(sys, st, c.Arg(0)); err != nil {
		return err
	}
	if !force {
		fmt.Fprintln(a.stdout, "This will empty the volume!\n(Data may be preserved in a revision.)")
		answer, err := a.ask("Are you sure? [y/N] ")
		if err != nil {
			return fmt.Errorf("clear cancelled: %w; add -f (--force) to clear without asking", err)
		}
		if strings.ToLower(answer) != "y" {
			fmt.Fprintln(a.stdout, "Clear cancelled.")
			return nil
		}
	}
	return c.session().update(func(tx *store.Tx) error {
		v, in, err := volumeArg(tx.Sys, tx.Store(), c.Arg(0))
		if err != nil {
			return err
		}
		if tx.Sys.IsRunning(v.Name()) {
			return fmt.Errorf("%s is running: shut it down before clearing its %s volume", v.Name(), in.Name)
		}
		return volume.ImportData(ctx, volumeVM(tx.Store(), v), in.Name, strings.NewReader(""), in.Size)
	})
}

// volumeInfos names a VM's volumes (for completion).
func volumeInfos(st *store.Store, v *vm.View) ([]string, error) {
	infos, err := volume.DescribeAll(volumeVM(st, v))
	if err != nil {
		return nil, err
	}
	out := make([]string, len(infos))
	for i, in := range infos {
		out[i] = in.Name
	}
	return out, nil
}
