package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"

	"github.com/qvm-project/qvm/store"
	"github.com/qvm-project/qvm/vm"
)

const gib = int64(1) << 30

// volumeSizes are Qubes' default image sizes per class.
func volumeSizes(c vm.Class) map[string]int64 {
	switch c {
	case vm.TemplateVM, vm.StandaloneVM:
		return map[string]int64{"root": 10 * gib, "private": 2 * gib, "volatile": 10 * gib}
	case vm.AppVM:
		return map[string]int64{"private": 2 * gib, "volatile": 10 * gib}
	case vm.DispVM:
		return map[string]int64{"volatile": 12 * gib}
	}
	return nil
}

// imagePath is a VM's image file for a volume.
func imagePath(st *store.Store, d *vm.Definition, volume string) string {
	return filepath.Join(st.VMDir(d.Name, d.Class), volume+".img")
}

// makeImages creates a new VM's directory and images inside the store
// change: copies of src's root and private when src is given, the root
// import when given, sparse empty images otherwise. Every file is
// removed if the change does not commit.
func makeImages(ctx context.Context, a *app, tx *store.Tx, d *vm.Definition, src *vm.View, root *rootImport) error {
	st := tx.Store()
	if _, err := tx.NewVMDir(d.Name, d.Class); err != nil {
		return err
	}
	for vol, size := range volumeSizes(d.Class) {
		path := imagePath(st, d, vol)
		switch {
		case vol == "root" && root != nil:
			if err := importRoot(tx, root, path, size); err != nil {
				return err
			}
		case src != nil && (vol == "root" || vol == "private"):
			from := imagePath(st, src.Def(), vol)
			if err := copyImage(ctx, from, path); err != nil {
				return fmt.Errorf("copy %s's %s image: %w", src.Name(), vol, err)
			}
		default:
			if err := createSparse(path, size); err != nil {
				return err
			}
		}
	}
	return nil
}

func createSparse(path string, size int64) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return fmt.Errorf("create image %s: %w", path, err)
	}
	if err := f.Truncate(size); err != nil {
		f.Close()
		return fmt.Errorf("create image %s: %w", path, err)
	}
	return f.Close()
}

// importRoot moves or copies a root image in, grown to at least size.
func importRoot(tx *store.Tx, r *rootImport, dst string, size int64) error {
	if r.move {
		if err := os.Rename(r.path, dst); err == nil {
			tx.OnAbort(func() {
				os.Truncate(dst, r.size)
				os.Rename(dst, r.path)
			})
		} else {
			if err := copyImage(context.Background(), r.path, dst); err != nil {
				return fmt.Errorf("--root-move-from %s: %w", r.path, err)
			}
			tx.AfterCommit(func() { os.Remove(r.path) })
		}
	} else if err := copyImage(context.Background(), r.path, dst); err != nil {
		return fmt.Errorf("--root-copy-from %s: %w", r.path, err)
	}
	if r.size < size {
		if err := os.Truncate(dst, size); err != nil {
			return fmt.Errorf("grow root image %s: %w", dst, err)
		}
	}
	return nil
}

func copyImage(ctx context.Context, from, to string) error {
	in, err := os.Open(from)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(to, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// diskUsageOf reads the size and allocated bytes of a VM's images.
func diskUsageOf(c *cmdline, v *vm.View) diskUsage {
	st, err := c.openStore()
	if err != nil {
		return nil
	}
	du := diskUsage{}
	for vol := range volumeSizes(v.Class()) {
		var s unix.Stat_t
		if err := unix.Stat(imagePath(st, v.Def(), vol), &s); err == nil {
			du[vol] = struct{ size, usage int64 }{s.Size, s.Blocks * 512}
		}
	}
	return du
}
