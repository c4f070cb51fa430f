package main

import (
	"context"
	"fmt"
	"os"

	"golang.org/x/sys/unix"

	"github.com/qvm-project/qvm/store"
	"github.com/qvm-project/qvm/vm"
	"github.com/qvm-project/qvm/volume"
)

// imagePath is a VM's image file for a volume.
func imagePath(st *store.Store, d *vm.Definition, vol string) string {
	return volume.ImagePath(st.VMDir(d.Name, d.Class), vol)
}

// makeImages creates a new VM's directory and images inside the store
// change: copies of src's saved volumes when src is given (clone, or a
// standalone from a template), the root import when given, sparse empty
// images otherwise. If the change does not commit, every file made goes
// and a moved-in root image goes back where it was.
func makeImages(ctx context.Context, a *app, tx *store.Tx, d *vm.Definition, src *vm.View, root *rootImport) error {
	dir, err := tx.NewVMDir(d.Name, d.Class)
	if err != nil {
		return err
	}
	sources := map[string]volume.Source{}
	if src != nil {
		if sources, err = volume.CloneSources(string(src.Class()), tx.Store().VMDir(src.Name(), src.Class())); err != nil {
			return err
		}
		for vol, s := range sources {
			if _, err := os.Stat(s.Path); err != nil {
				return fmt.Errorf("%s's %s image: %w", src.Name(), vol, err)
			}
		}
	}
	if root != nil {
		kind := volume.CopyFile
		if root.move && sameFilesystem(root.path, dir) {
			kind = volume.MoveFile
		}
		sources[volume.Root] = volume.Source{Path: root.path, Kind: kind}
	}
	if err := volume.Provision(ctx, dir, string(d.Class), sources, volume.WithProgress(a.stderr)); err != nil {
		return err
	}
	if root == nil {
		return nil
	}
	dst := volume.ImagePath(dir, volume.Root)
	if sources[volume.Root].Kind == volume.MoveFile {
		tx.OnAbort(func() {
			os.Truncate(dst, root.size)
			os.Rename(dst, root.path)
		})
	} else if root.move {
		// Across filesystems the image was copied; the original goes
		// only once the VM exists.
		tx.AfterCommit(func() { os.Remove(root.path) })
	}
	// As Qubes: an imported root smaller than the default is grown to it.
	if root.size < volume.DefaultRootSize {
		if err := volume.Resize(dst, volume.DefaultRootSize); err != nil {
			return err
		}
	}
	return nil
}

func sameFilesystem(a, b string) bool {
	var sa, sb unix.Stat_t
	return unix.Stat(a, &sa) == nil && unix.Stat(b, &sb) == nil && sa.Dev == sb.Dev
}

// diskUsageOf reads the size and allocated bytes of a VM's images.
func diskUsageOf(st *store.Store, v *vm.View) diskUsage {
	du := diskUsage{}
	for _, vol := range volume.FileVolumes() {
		if u, err := volume.Stat(imagePath(st, v.Def(), vol)); err == nil {
			du[vol] = struct{ size, usage int64 }{u.Size, u.Allocated}
		}
	}
	return du
}
