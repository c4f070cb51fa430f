package store

import (
	"context"
	"fmt"
	"os"

	"github.com/qvm-project/qvm/vm"
	"github.com/qvm-project/qvm/volume"
)

// OpenRootImport opens and checks a user's image for a new VM's root
// volume (see volume.OpenImport); an image inside the state directory (a
// VM's) is refused. opt names the option in errors. The caller closes it
// after the change.
func (s *Store) OpenRootImport(opt, path string, move bool) (*volume.Import, error) {
	im, err := volume.OpenImport(path, move, s.dir)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", opt, err)
	}
	return im, nil
}

// CreateVM adds a VM to the change and makes its directory and images: a
// copy of its template's saved volumes for a StandaloneVM or TemplateVM
// made from a template, the root import when given, empty sparse images
// otherwise. If the change does not commit, every file made goes and the
// user's image is as it was; a moved image loses its user's name only once
// the VM exists (then, or at the next writer's sweep after a crash). The
// imported root keeps its size. opts apply to the copies (progress).
func (tx *Tx) CreateVM(ctx context.Context, spec vm.CreateSpec, root *volume.Import, opts ...volume.Option) (*vm.Definition, error) {
	if root != nil && !spec.Class.HasOwnRoot() {
		return nil, fmt.Errorf("a root image needs a VM with its own root volume (StandaloneVM or TemplateVM), not a %s: add --class StandaloneVM", spec.Class)
	}
	d, err := tx.Sys.Create(spec)
	if err != nil {
		return nil, err
	}
	var src *vm.View
	if spec.Template != "" && !spec.Class.NeedsTemplate() {
		if tx.Sys.IsRunning(spec.Template) {
			return nil, fmt.Errorf("template %s is running: its images may change while copied; shut it down first", spec.Template)
		}
		src, _ = tx.Sys.View(spec.Template)
	}
	return d, tx.makeImages(ctx, d, src, root, opts)
}

// CloneVM adds a copy of VM src named dst to the change (see
// vm.System.Clone) and copies src's saved images.
func (tx *Tx) CloneVM(ctx context.Context, src, dst, uuid string, opts ...volume.Option) (*vm.Definition, error) {
	sv, err := tx.Sys.View(src)
	if err != nil {
		return nil, err
	}
	if sv.Class() == vm.AdminVM {
		return nil, fmt.Errorf("dom0 cannot be cloned")
	}
	if tx.Sys.IsRunning(src) {
		return nil, fmt.Errorf("%s is running: its images may change while copied; shut it down first (qvm-shutdown --wait %s)", src, src)
	}
	d, err := tx.Sys.Clone(src, dst, uuid)
	if err != nil {
		return nil, err
	}
	return d, tx.makeImages(ctx, d, sv, nil, opts)
}

// RemoveVM removes a VM from the change; its directory goes once the
// change is durable.
func (tx *Tx) RemoveVM(name string) error {
	d, err := tx.Sys.Remove(name)
	if err != nil {
		return err
	}
	return tx.DropVMDir(d.Name, d.Class)
}

// makeImages creates a new VM's directory and images inside the change.
func (tx *Tx) makeImages(ctx context.Context, d *vm.Definition, src *vm.View, root *volume.Import, opts []volume.Option) error {
	dir, err := tx.NewVMDir(d.Name, d.Class)
	if err != nil {
		return err
	}
	sources := map[string]volume.Source{}
	if src != nil {
		if sources, err = volume.CloneSources(string(src.Class()), tx.store.VMDir(src.Name(), src.Class())); err != nil {
			return err
		}
		for vol, s := range sources {
			if _, err := os.Stat(s.Path); err != nil {
				return fmt.Errorf("%s's %s image: %w", src.Name(), vol, err)
			}
		}
	}
	if root != nil {
		sources[volume.Root] = volume.Source{Kind: volume.Imported, Import: root}
	}
	if err := volume.Provision(ctx, dir, string(d.Class), sources, opts...); err != nil {
		return err
	}
	if root != nil {
		// What to finish once the VM exists goes into the directory's
		// pending marker, so that a writer killed after the commit has
		// it finished by the next one.
		return writeMarker(dir, marker{Image: volume.ImageName(volume.Root), MovedFrom: root.MovedFrom()})
	}
	return nil
}
