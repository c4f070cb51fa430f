package main

import (
	"context"
	"fmt"
	"os"
	"strings"

	"github.com/google/uuid"

	"github.com/qvm-project/qvm/store"
	"github.com/qvm-project/qvm/vm"
)

// runCreate is qvm-create: define a new VM and make its images.
// It takes both the R4 syntax (--class, --property) and the R3 one
// (--hvm, --mem, --standalone) of the Qubes docs.
func runCreate(ctx context.Context, a *app, args []string) error {
	c := a.newCmdline(ctx, "[options] --label LABEL VMNAME")
	var (
		class, template, label, pool, onePool string
		props                                 []string
		rootCopy, rootMove                    string
		standalone, disp, hvm, helpClasses    bool
		mem, vcpus                            string
	)
	c.StringVarP(&class, "class", "C", "", "class of the new VM: AppVM (default), StandaloneVM, TemplateVM, DispVM")
	c.Var((*appendList)(&props), "property", "set a property, NAME=VALUE (repeatable)")
	c.Var((*appendList)(&props), "prop", "same as --property")
	c.StringVarP(&template, "template", "t", "", "template of the new VM (for a StandaloneVM or TemplateVM: the TemplateVM to copy)")
	c.StringVarP(&label, "label", "l", "", "colour label: red, orange, yellow, green, gray, blue, purple, black (required)")
	c.StringVarP(&pool, "pool", "p", "", "VOLUME=POOL: pool of one volume (only the file pool exists)")
	c.StringVarP(&onePool, "P", "P", "", "POOL: pool of every volume (only the file pool exists)")
	c.StringVarP(&rootCopy, "root-copy-from", "r", "", "use a copy of this image file as the root volume")
	c.StringVarP(&rootMove, "root-move-from", "R", "", "move this image file in as the root volume")
	c.BoolVar(&standalone, "standalone", false, "same as --class StandaloneVM")
	c.BoolVar(&disp, "disp", false, "same as --class DispVM")
	c.BoolVar(&hvm, "hvm", false, "R3: an HVM booting from its own disk (virt_mode=hvm, kernel=''); a StandaloneVM unless --class or --template says otherwise")
	c.StringVarP(&mem, "mem", "m", "", "R3: initial memory in MiB (same as --property memory=N)")
	c.StringVar(&mem, "memory", "", "same as --mem")
	c.StringVarP(&vcpus, "vcpus", "c", "", "R3: number of virtual CPUs")
	c.BoolVar(&helpClasses, "help-classes", false, "list the classes and exit")
	c.Lookup("P").Hidden = false
	if err := c.parse(args); err != nil {
		return err
	}
	if helpClasses {
		for _, cl := range vm.CreatableClasses() {
			fmt.Fprintln(a.stdout, cl)
		}
		return nil
	}
	if c.NArg() != 1 {
		return usagef("give exactly one VMNAME (got %d arguments: %s)", c.NArg(), strings.Join(c.Args(), " "))
	}
	spec := vm.CreateSpec{Name: c.Arg(0), Label: label, Template: template, UUID: uuid.NewString()}

	// The class: --class, or one of the shortcuts, never two that disagree.
	chosen := map[vm.Class]string{}
	if class != "" {
		cl, err := vm.ParseClass(class)
		if err != nil {
			return usagef("--class: %v", err)
		}
		chosen[cl] = "--class " + class
	}
	if standalone {
		chosen[vm.StandaloneVM] = "--standalone"
	}
	if disp {
		chosen[vm.DispVM] = "--disp"
	}
	if len(chosen) > 1 {
		var opts []string
		for _, o := range chosen {
			opts = append(opts, o)
		}
		return usagef("conflicting classes: %s", strings.Join(opts, " and "))
	}
	spec.Class = vm.AppVM
	for cl := range chosen {
		spec.Class = cl
	}
	if hvm {
		if len(chosen) == 0 && template == "" {
			spec.Class = vm.StandaloneVM
		}
		spec.Props = append(spec.Props, vm.Prop{Name: "virt_mode", Value: "hvm"}, vm.Prop{Name: "kernel", Value: ""})
	}
	if mem != "" {
		spec.Props = append(spec.Props, vm.Prop{Name: "memory", Value: mem})
	}
	if vcpus != "" {
		spec.Props = append(spec.Props, vm.Prop{Name: "vcpus", Value: vcpus})
	}
	for _, p := range props {
		kv, err := splitProp(p)
		if err != nil {
			return err
		}
		switch kv.Name {
		case "name", "label", "template", "klass", "class":
			return usagef("--property %s: give it with its own option (VMNAME, --label, --template, --class)", kv.Name)
		}
		spec.Props = append(spec.Props, kv)
	}
	if err := checkPools(pool, onePool); err != nil {
		return err
	}
	if spec.Label == "" {
		return usagef("--label option is mandatory (one of red, orange, yellow, green, gray, blue, purple, black)")
	}

	var root *rootImport
	if rootCopy != "" && rootMove != "" {
		return usagef("--root-copy-from and --root-move-from exclude each other: give one")
	}
	if src := rootCopy + rootMove; src != "" {
		if !spec.Class.HasOwnRoot() {
			return usagef("--root-copy-from/--root-move-from need a VM with its own root volume (StandaloneVM or TemplateVM), not a %s: add --class StandaloneVM", spec.Class)
		}
		if template != "" {
			return usagef("--template and --root-copy-from/--root-move-from both give the root image: use one")
		}
		var err error
		if root, err = checkRootImport(src, rootMove != ""); err != nil {
			return err
		}
	}

	return c.update(func(tx *store.Tx) error {
		d, err := tx.Sys.Create(spec)
		if err != nil {
			return err
		}
		var src *vm.View
		if spec.Template != "" && !spec.Class.NeedsTemplate() {
			if tx.Sys.IsRunning(spec.Template) {
				return fmt.Errorf("template %s is running: its images may change while copied; shut it down first", spec.Template)
			}
			src, _ = tx.Sys.View(spec.Template)
		}
		return makeImages(ctx, a, tx, d, src, root)
	})
}

// checkPools accepts only the file pool, which is all qvm has.
func checkPools(pool, onePool string) error {
	if onePool != "" && onePool != "default" && onePool != "file" && onePool != "varlibqubes" {
		return usagef("-P %s: unknown pool; qvm has one pool, \"file\" (the default)", onePool)
	}
	if pool != "" {
		vol, p, ok := strings.Cut(pool, "=")
		if !ok {
			return usagef("--pool must be VOLUME=POOL, e.g. --pool root=file")
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

// rootImport is a root image given with --root-copy-from/--root-move-from.
type rootImport struct {
	path string
	move bool
	size int64
}

func checkRootImport(path string, move bool) (*rootImport, error) {
	opt := "--root-copy-from"
	if move {
		opt = "--root-move-from"
	}
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w: give the path of a raw disk image", opt, path, err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%s %s: not a regular file: give a raw disk image file", opt, path)
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("%s %s: cannot read it: %w", opt, path, err)
	}
	f.Close()
	if fi.Size() == 0 || fi.Size()%512 != 0 {
		return nil, fmt.Errorf("%s %s: size %d is not a whole number of 512-byte sectors: is it a raw disk image? (convert with qemu-img convert -O raw)", opt, path, fi.Size())
	}
	return &rootImport{path: path, move: move, size: fi.Size()}, nil
}
