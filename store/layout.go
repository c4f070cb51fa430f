package store

import (
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
