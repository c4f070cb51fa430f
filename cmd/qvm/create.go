package main

import (
	"context"
	"fmt"
	"strings"

	"github.com/google/uuid"

	"github.com/qvm-project/qvm/store"
	"github.com/qvm-project/qvm/vm"
	"github.com/qvm-project/qvm/volume"
)

// createOptions are qvm-create's options. It takes both the R4 syntax
// (--class, --property) and the R3 one (--hvm, --mem, --standalone) of
// the Qubes docs.
type createOptions struct {
	class, template, label, onePool    string
	props, pools                       []string
	rootCopy, rootMove                 string
	standalone, disp, hvm, helpClasses bool
	mem, vcpus                         string
}

// runCreate is qvm-create: define a new VM and make its images.
func runCreate(ctx context.Context, a *app, args []string) error {
	c := a.newCmdline(ctx, "[options] --label LABEL VMNAME")
	var o createOptions
	c.StringVarP(&o.class, "class", "C", "", "class of the new VM: AppVM (default), StandaloneVM, TemplateVM, DispVM")
	c.Var((*appendList)(&o.props), "property", "set a property, NAME=VALUE (repeatable)")
	c.Var((*appendList)(&o.props), "prop", "same as --property")
	c.StringVarP(&o.template, "template", "t", "", "template of the new VM (for a StandaloneVM or TemplateVM: the TemplateVM to copy)")
	c.StringVarP(&o.label, "label", "l", "", "colour label: red, orange, yellow, green, gray, blue, purple, black (required)")
	c.StringArrayVarP(&o.pools, "pool", "p", nil, "VOLUME_NAME=POOL_NAME: pool of one volume (only the file pool exists; repeatable)")
	c.StringVarP(&o.onePool, "P", "P", "", "POOL: pool of every volume (only the file pool exists)")
	c.StringVarP(&o.rootCopy, "root-copy-from", "r", "", "use a copy of this image file as the root volume")
	c.StringVarP(&o.rootMove, "root-move-from", "R", "", "move this image file in as the root volume")
	c.BoolVar(&o.standalone, "standalone", false, "same as --class StandaloneVM")
	c.BoolVar(&o.disp, "disp", false, "alias for --class DispVM --label red")
	c.Bool("no-root", false, "ignored")
	c.Lookup("no-root").Hidden = true
	c.BoolVar(&o.hvm, "hvm", false, "R3: an HVM booting from its own disk (virt_mode=hvm, kernel=''); a StandaloneVM unless --class or --template says otherwise")
	c.StringVarP(&o.mem, "mem", "m", "", "R3: initial memory in MiB (same as --property memory=N)")
	c.StringVar(&o.mem, "memory", "", "same as --mem")
	c.StringVarP(&o.vcpus, "vcpus", "c", "", "R3: number of virtual CPUs")
	c.BoolVar(&o.helpClasses, "help-classes", false, "list the classes and exit")
	c.metavar("pool", "VOLUME_NAME=POOL_NAME")
	c.metavar("P", "POOL_NAME")
	c.metavar("root-copy-from", "FILENAME")
	c.metavar("root-move-from", "FILENAME")
	c.metavar("mem", "MIB")
	c.metavar("memory", "MIB")
	c.metavar("vcpus", "N")
	if err := c.parse(args); err != nil {
		return err
	}
	if o.helpClasses {
		fmt.Fprintln(a.stdout, vm.AdminVM)
		for _, cl := range vm.CreatableClasses() {
			fmt.Fprintln(a.stdout, cl)
		}
		return nil
	}
	if c.NArg() > 1 {
		return usagef("unrecognized arguments: %s (give exactly one VMNAME)", strings.Join(c.Args()[1:], " "))
	}
	if c.NArg() == 0 {
		if o.label == "" && !o.disp {
			return usagef("--label option is mandatory (one of red, orange, yellow, green, gray, blue, purple, black)")
		}
		return usagef("VMNAME is mandatory")
	}
	spec, root, err := o.spec(c.Arg(0))
	if err != nil {
		return err
	}
	spec.UUID = uuid.NewString()
	s := c.session()
	var im *volume.Import
	if root != nil {
		st, err := s.store()
		if err != nil {
			return err
		}
		if im, err = st.OpenRootImport(root.option, root.path, root.move); err != nil {
			return err
		}
		defer im.Close()
	}
	return s.update(func(tx *store.Tx) error {
		_, err := tx.CreateVM(ctx, spec, im, volume.WithProgress(a.stderr))
		return err
	})
}

// rootImport is the root image the command line names.
type rootImport struct {
	option, path string
	move         bool
}

// spec turns the options into what to create: the VM and, when one was
// given, the root image to import (not yet checked on disk). Every
// command-line mistake is found here, before anything is touched.
func (o createOptions) spec(name string) (vm.CreateSpec, *rootImport, error) {
	spec := vm.CreateSpec{Name: name, Label: o.label, Template: o.template}

	// The class: --class, or one of the shortcuts, never two that disagree.
	chosen := map[vm.Class]string{}
	if o.class != "" {
		cl, err := vm.ParseClass(o.class)
		if err != nil {
			return spec, nil, usagef("--class: %v", err)
		}
		chosen[cl] = "--class " + o.class
	}
	if o.standalone {
		chosen[vm.StandaloneVM] = "--standalone"
	}
	if o.disp {
		chosen[vm.DispVM] = "--disp"
		if spec.Label == "" {
			spec.Label = "red"
		}
	}
	if len(chosen) > 1 {
		var opts []string
		for _, opt := range chosen {
			opts = append(opts, opt)
		}
		return spec, nil, usagef("conflicting classes: %s", strings.Join(opts, " and "))
	}
	spec.Class = vm.AppVM
	for cl := range chosen {
		spec.Class = cl
	}
	if o.hvm {
		if len(chosen) == 0 && o.template == "" {
			spec.Class = vm.StandaloneVM
		}
		spec.Props = append(spec.Props, vm.Prop{Name: "virt_mode", Value: string(vm.HVM)}, vm.Prop{Name: "kernel", Value: ""})
	}
	if o.mem != "" {
		spec.Props = append(spec.Props, vm.Prop{Name: "memory", Value: o.mem})
	}
	if o.vcpus != "" {
		spec.Props = append(spec.Props, vm.Prop{Name: "vcpus", Value: o.vcpus})
	}
	for _, p := range o.props {
		kv, err := splitProp(p)
		if err != nil {
			return spec, nil, err
		}
		switch kv.Name {
		case "name", "label", "template", "klass", "class":
			return spec, nil, usagef("--property %s: give it with its own option (VMNAME, --label, --template, --class)", kv.Name)
		}
		spec.Props = append(spec.Props, kv)
	}
	for _, p := range o.pools {
		if err := checkPools(p, ""); err != nil {
			return spec, nil, err
		}
	}
	if err := checkPools("", o.onePool); err != nil {
		return spec, nil, err
	}
	if spec.Label == "" {
		return spec, nil, usagef("--label option is mandatory (one of red, orange, yellow, green, gray, blue, purple, black)")
	}
	if o.rootCopy != "" && o.rootMove != "" {
		return spec, nil, usagef("--root-copy-from and --root-move-from exclude each other: give one")
	}
	src := o.rootCopy + o.rootMove
	if src == "" {
		return spec, nil, nil
	}
	if !spec.Class.HasOwnRoot() {
		return spec, nil, usagef("--root-copy-from/--root-move-from need a VM with its own root volume (StandaloneVM or TemplateVM), not a %s: add --class StandaloneVM", spec.Class)
	}
	if o.template != "" {
		return spec, nil, usagef("--template and --root-copy-from/--root-move-from both give the root image: use one")
	}
	if o.rootMove != "" {
		return spec, &rootImport{option: "--root-move-from", path: src, move: true}, nil
	}
	return spec, &rootImport{option: "--root-copy-from", path: src}, nil
}

// checkPools accepts only the file pool, which is all qvm has.
func checkPools(pool, onePool string) error {
	if onePool != "" && onePool != "default" && onePool != "file" && onePool != "varlibqubes" {
		return usagef("-P %s: unknown pool; qvm has one pool, \"file\" (the default)", onePool)
	}
	if pool != "" {
		vol, p, ok := strings.Cut(pool, "=")
		if !ok || strings.Contains(p, "=") {
			return usagef("Pool argument must be of form: -p volume_name=pool_name")
		}
		switch vol {
		case "root", "private", "volatile":
		default:
			return usagef("--pool %s: unknown volume %q (root, private, volatile)", pool, vol)
		}
		if p != "default" && p != "file" && p != "varlibqubes" {
			return usagef("--pool %s: unknown pool %q; qvm has one pool, \"file\"", pool, p)
		}
	}
	return nil
}
