package main

import (
	"context"
	"fmt"
	"strings"

	"github.com/qvm-project/qvm/store"
	"github.com/qvm-project/qvm/vm"
	"github.com/qvm-project/qvm/volume"
)

// runVolume is qvm-volume: info, list and resize of VM volumes.
//
//	qvm-volume info VM[:VOLUME] [PROPERTY]
//	qvm-volume list [VM...]
//	qvm-volume resize VM:VOLUME SIZE
func runVolume(ctx context.Context, a *app, args []string) error {
	c := a.newCmdline(ctx, "[options] info VM[:VOLUME] [PROPERTY] | list [VM...] | resize VM:VOLUME SIZE")
	if err := c.parse(args); err != nil {
		return err
	}
	if c.NArg() == 0 {
		return usagef("give a command: info, list or resize (see %s --help)", a.prog)
	}
	cmd, rest := c.Arg(0), c.Args()[1:]
	switch cmd {
	case "info", "i":
		if len(rest) < 1 || len(rest) > 2 {
			return usagef("info takes VM[:VOLUME] [PROPERTY]")
		}
		return volumeInfo(c, rest)
	case "list", "ls", "l":
		return volumeList(c, rest)
	case "resize", "extend", "r":
		if len(rest) != 2 {
			return usagef("resize takes VM:VOLUME SIZE, e.g. qvm-volume resize win10:root 40GiB")
		}
		return volumeResize(ctx, c, rest[0], rest[1])
	}
	return usagef("unknown command %q: use info, list or resize", cmd)
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

func splitVolume(s string) (vmName, vol string) {
	vmName, vol, _ = strings.Cut(s, ":")
	return vmName, vol
}

func volumeInfo(c *cmdline, args []string) error {
	st, sys, err := c.loadSystem()
	if err != nil {
		return err
	}
	name, vol := splitVolume(args[0])
	v, err := sys.View(name)
	if err != nil {
		return err
	}
	vvm := volumeVM(st, v)
	var infos []volume.Info
	if vol == "" {
		if infos, err = volume.DescribeAll(vvm); err != nil {
			return err
		}
	} else {
		in, err := volume.Describe(vvm, vol)
		if err != nil {
			return err
		}
		infos = []volume.Info{in}
	}
	w := c.a.stdout
	if len(args) == 2 {
		for _, in := range infos {
			val, err := in.Property(args[1])
			if err != nil {
				return err
			}
			fmt.Fprintln(w, val)
		}
		return nil
	}
	for i, in := range infos {
		if len(infos) > 1 {
			if i > 0 {
				fmt.Fprintln(w)
			}
			fmt.Fprintf(w, "%s:%s\n", name, in.Name)
		}
		rows := in.Fields()
		width := 0
		for _, r := range rows {
			width = max(width, len(r[0]))
		}
		for _, r := range rows {
			fmt.Fprintf(w, "%-*s  %s\n", width, r[0], r[1])
		}
		fmt.Fprintln(w, "List of available revisions (for revert):")
		if len(in.Revisions) == 0 {
			fmt.Fprintln(w, "  none")
		}
		for _, r := range in.Revisions {
			fmt.Fprintf(w, "  %s\n", r)
		}
	}
	return nil
}

func volumeList(c *cmdline, names []string) error {
	st, sys, err := c.loadSystem()
	if err != nil {
		return err
	}
	views, err := selectVMs(sys, names, nil, false, false, false)
	if err != nil {
		return err
	}
	rows := [][]string{{"POOL:VOLUME", "VMNAME", "VOLUME_NAME", "REVERT_AVAILABLE(SINCE)"}}
	for _, v := range views {
		if v.Class() == vm.AdminVM {
			continue
		}
		infos, err := volume.DescribeAll(volumeVM(st, v))
		if err != nil {
			return err
		}
		for _, in := range infos {
			rows = append(rows, []string{in.Pool + ":" + in.VID, v.Name(), in.Name, "No"})
		}
	}
	writeTable(c.a.stdout, rows)
	return nil
}

func volumeResize(ctx context.Context, c *cmdline, target, sizeText string) error {
	name, vol := splitVolume(target)
	if vol == "" {
		return usagef("resize needs VM:VOLUME, e.g. %s:root", name)
	}
	size, err := volume.ParseSize(sizeText)
	if err != nil {
		return usagef("size %q: %v", sizeText, err)
	}
	// Under the writer lock, so that no clone or removal runs meanwhile.
	return c.update(func(tx *store.Tx) error {
		v, err := tx.Sys.View(name)
		if err != nil {
			return err
		}
		if v.Class() == vm.AdminVM {
			return fmt.Errorf("dom0 has no volumes qvm manages")
		}
		if tx.Sys.IsRunning(name) {
			return fmt.Errorf("%s is running: shut it down before resizing its %s volume", name, vol)
		}
		return volume.ResizeVolume(volumeVM(tx.Store(), v), vol, size)
	})
}
