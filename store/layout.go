package store

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/qvm-project/qvm/vm"
)

// Directories inside the state directory, as Qubes lays them out.
const (
	appVMsDir    = "appvms"
	templatesDir = "vm-templates"
	kernelsDir   = "vm-kernels"
)

// VMDir is the directory holding a VM's images.
func (s *Store) VMDir(name string, class vm.Class) string {
	if class == vm.TemplateVM {
		return filepath.Join(s.dir, templatesDir, name)
	}
	return filepath.Join(s.dir, appVMsDir, name)
}

// KernelsDir holds the VM kernels, one directory per kernel version with
// vmlinuz, initramfs and optionally default-kernelopts-common.txt.
func (s *Store) KernelsDir() string { return filepath.Join(s.dir, kernelsDir) }

// Kernels lists the installed VM kernels: the directories of KernelsDir
// that hold a vmlinuz.
func (s *Store) Kernels() map[string]vm.KernelInfo {
	entries, err := os.ReadDir(s.KernelsDir())
	if err != nil {
		return nil
	}
	out := map[string]vm.KernelInfo{}
	for _, e := range entries {
		dir := filepath.Join(s.KernelsDir(), e.Name())
		if _, err := os.Stat(filepath.Join(dir, "vmlinuz")); err != nil {
			continue
		}
		info := vm.KernelInfo{}
		if b, err := os.ReadFile(filepath.Join(dir, "default-kernelopts-common.txt")); err == nil {
			info.DefaultOpts = strings.TrimSpace(string(b))
		}
		out[e.Name()] = info
	}
	return out
}

// pendingMarker marks a VM directory whose fate depends on a store change
// not yet committed: made for a VM being created, or given up by a VM
// being removed. A writer killed before finishing leaves it behind; the
// next writer then removes the directory if its VM is not in the store,
// and only the marker if it is.
const pendingMarker = ".qvm-pending"

// newDirPrefix names a VM directory being made (see NewVMDir).
const newDirPrefix = ".qvm-new-"

// NewVMDir makes a fresh directory for a VM created in this change. It
// disappears if the change does not commit.
func (tx *Tx) NewVMDir(name string, class vm.Class) (string, error) {
	dir := tx.store.VMDir(name, class)
	if err := os.RemoveAll(dir); err != nil {
		return "", fmt.Errorf("remove leftover directory %s: %w", dir, err)
	}
	// The directory appears already marked: it is made under a temporary
	// name, marked, then renamed (a killed writer leaves a temporary
	// directory, which the next writer removes).
	parent := filepath.Dir(dir)
	if err := os.MkdirAll(parent, 0o755); err != nil {
		return "", fmt.Errorf("create VM directory %s: %w", dir, err)
	}
	tmp, err := os.MkdirTemp(parent, newDirPrefix)
	if err != nil {
		return "", fmt.Errorf("create VM directory %s: %w", dir, err)
	}
	err = os.Chmod(tmp, 0o755)
	if err == nil {
		err = os.WriteFile(filepath.Join(tmp, pendingMarker), nil, 0o644)
	}
	if err == nil {
		err = os.Rename(tmp, dir)
	}
	if err != nil {
		os.RemoveAll(tmp)
		return "", fmt.Errorf("create VM directory %s: %w", dir, err)
	}
	marker := filepath.Join(dir, pendingMarker)
	tx.OnAbort(func() { os.RemoveAll(dir) })
	tx.AfterCommit(func() { os.Remove(marker) })
	return dir, nil
}

// DropVMDir removes a VM's directory once the change that removes the VM
// is durable.
func (tx *Tx) DropVMDir(name string, class vm.Class) error {
	dir := tx.store.VMDir(name, class)
	marker := filepath.Join(dir, pendingMarker)
	if err := os.WriteFile(marker, nil, 0o644); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("mark %s for removal: %w", dir, err)
	}
	tx.OnAbort(func() { os.Remove(marker) })
	tx.AfterCommit(func() { os.RemoveAll(dir) })
	return nil
}

// sweep settles the directories a killed writer left pending.
func (s *Store) sweep(sys *vm.System) {
	for _, sub := range []string{appVMsDir, templatesDir} {
		entries, err := os.ReadDir(filepath.Join(s.dir, sub))
		if err != nil {
			continue
		}
		for _, e := range entries {
			dir := filepath.Join(s.dir, sub, e.Name())
			if strings.HasPrefix(e.Name(), newDirPrefix) {
				os.RemoveAll(dir)
				continue
			}
			marker := filepath.Join(dir, pendingMarker)
			if _, err := os.Lstat(marker); err != nil {
				continue
			}
			if d, ok := sys.Lookup(e.Name()); ok && s.VMDir(d.Name, d.Class) == dir {
				os.Remove(marker)
			} else {
				os.RemoveAll(dir)
			}
		}
	}
}
