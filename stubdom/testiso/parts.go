package testiso

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// FromDom0Dir returns a Spec for the Debian kernel that `make dom0-parts`
// unpacked in dir (build/dom0: vmlinuz, kernel-version, pkgroot/lib/modules).
func FromDom0Dir(dir string) (Spec, error) {
	b, err := os.ReadFile(filepath.Join(dir, "kernel-version"))
	if err != nil {
		return Spec{}, fmt.Errorf("testiso: kernel parts not unpacked (run `make dom0-parts`): %w", err)
	}
	kver := strings.TrimSpace(string(b))
	s := Spec{
		Kernel:        filepath.Join(dir, "vmlinuz"),
		KernelVersion: kver,
		ModulesDir:    filepath.Join(dir, "pkgroot", "lib", "modules", kver),
	}
	for _, p := range []string{s.Kernel, filepath.Join(s.ModulesDir, "modules.dep")} {
		if _, err := os.Stat(p); err != nil {
			return Spec{}, fmt.Errorf("testiso: kernel parts not unpacked (run `make dom0-parts`): %w", err)
		}
	}
	return s, nil
}
