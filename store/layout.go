package store

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/qvm-project/qvm/vm"
	"github.com/qvm-project/qvm/volume"
)

// Directories inside the state directory, as Qubes lays them out.
const (
	appVMsDir    = "appvms"
	templatesDir = "vm-templates"
	kernelsDir   = "vm-kernels"
	logDir       = "log"
)

// VMDir is the directory holding a VM's images.
func (s *Store) VMDir(name string, class vm.Class) string {
	if class == vm.TemplateVM {
		return filepath.Join(s.dir, templatesDir, name)
	}
	return filepath.Join(s.dir, appVMsDir, name)
}

// LogDir holds the VMs' logs (their monitors' output), NAME.log each.
func (s *Store) LogDir() string { return filepath.Join(s.dir, logDir) }

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

// Prefixes of VM directories in passing: one being made (see NewVMDir)
// and one being removed (see DropVMDir). The next writer removes both.
const (
	newDirPrefix  = ".qvm-new-"
	goneDirPrefix = ".qvm-gone-"
)

// NewVMDir makes a fresh directory for a VM created in this change. It
// disappears if the change does not commit.
func (tx *Tx) NewVMDir(name string, class vm.Class) (string, error) {
	dir := tx.store.VMDir(name, class)
	// A directory left by an unfinished change was settled by the sweep
	// before this change began; one that is still there belongs to no
	// change of qvm's: it may hold a user's images, so it is never wiped.
	if _, err := os.Lstat(dir); err == nil {
		return "", fmt.Errorf("directory %s already exists and belongs to no VM: move it away (or remove it if it holds nothing you need), then create %s again", dir, name)
	} else if !errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("create VM directory %s: %w", dir, err)
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
	if err == nil {
		// The new name must be durable before the store can name the VM.
		err = syncDir(parent)
	}
	if err != nil {
		os.RemoveAll(tmp)
		removeVMDir(dir)
		return "", fmt.Errorf("create VM directory %s: %w", dir, err)
	}
	tx.OnAbort(func() { removeVMDir(dir) })
	tx.AfterCommit(func() { settle(dir) })
	return dir, nil
}

// marker is what a pending marker records beyond its existence: an
// imported image whose move is finished once the VM exists.
type marker struct {
	// Image is the VM's image file (in the directory) the import made.
	Image string `json:"image,omitempty"`
	// MovedFrom is the user's name of a moved image, dropped then.
	MovedFrom volume.MovedFrom `json:"moved_from,omitzero"`
}

// maxMarker bounds a marker's size (qvm writes a few hundred bytes).
const maxMarker = 64 << 10

func writeMarker(dir string, m marker) error {
	b, err := json.Marshal(m)
	if err != nil {
		return err
	}
	p := filepath.Join(dir, pendingMarker)
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return fmt.Errorf("pending marker %s: %w", p, err)
	}
	_, err = f.Write(b)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("pending marker %s: %w", p, err)
	}
	return nil
}

// settle finishes a committed VM's directory: what its marker records is
// done (a moved image's user name dropped), then the marker goes. If that
// fails, the marker stays for the next writer's sweep to try again.
func settle(dir string) {
	p := filepath.Join(dir, pendingMarker)
	f, err := os.Open(p)
	if err != nil {
		return
	}
	b, err := io.ReadAll(io.LimitReader(f, maxMarker))
	f.Close()
	if err != nil {
		return
	}
	var m marker
	if len(b) > 0 && json.Unmarshal(b, &m) == nil && m.Image != "" && !strings.ContainsRune(m.Image, '/') {
		if err := volume.FinishMove(m.MovedFrom, filepath.Join(dir, m.Image)); err != nil {
			return
		}
	}
	os.Remove(p)
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
	tx.AfterCommit(func() { removeVMDir(dir) })
	return nil
}

// removeVMDir removes a VM directory: out of the way in one rename, then
// deleted. RemoveAll alone deletes entries in readdir order, the pending
// marker possibly first: a crash halfway would leave an unmarked half
// directory under the VM's name, which the sweep keeps. A writer killed
// after the rename leaves a directory the next sweep removes.
func removeVMDir(dir string) {
	gone, err := os.MkdirTemp(filepath.Dir(dir), goneDirPrefix)
	if err == nil {
		err = os.Rename(dir, filepath.Join(gone, "vm"))
	}
	if err != nil {
		os.RemoveAll(gone)
		os.RemoveAll(dir)
		return
	}
	os.RemoveAll(gone)
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
			if strings.HasPrefix(e.Name(), newDirPrefix) || strings.HasPrefix(e.Name(), goneDirPrefix) {
				os.RemoveAll(dir) // no VM's name: a partial removal is harmless
				continue
			}
			marker := filepath.Join(dir, pendingMarker)
			if _, err := os.Lstat(marker); err != nil {
				continue
			}
			if d, ok := sys.Lookup(e.Name()); ok && s.VMDir(d.Name, d.Class) == dir {
				settle(dir)
			} else {
				removeVMDir(dir)
			}
		}
	}
}
