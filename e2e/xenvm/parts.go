package xenvm

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// Parts are the files the test bed boots; `make dom0-image guest-image`
// builds them under build/dom0/.
type Parts struct {
	// Xen is the hypervisor as a multiboot ELF (Debian's, gunzipped).
	Xen string
	// Kernel is the Debian kernel: dom0's, and the guests'.
	Kernel string
	// Dom0Image is the dom0 initramfs (cmd/dom0init as /init).
	Dom0Image string
	// GuestImage is the tiny guest initramfs (cmd/guestinit as /init).
	GuestImage string
}

// Where GuestFiles puts the guest kernel and image in dom0.
const (
	GuestKernel = ShareMount + "/vmlinuz"
	GuestImage  = ShareMount + "/guest.cpio.gz"
)

// GuestFiles is a Config.Files map that shares the guest kernel (the Debian
// kernel) and the tiny guest image with dom0, at GuestKernel and GuestImage.
func (p Parts) GuestFiles() map[string]string {
	return map[string]string{"vmlinuz": p.Kernel, "guest.cpio.gz": p.GuestImage}
}

// PartsDirEnv names a directory holding the parts (xen, vmlinuz,
// dom0.cpio.gz, guest.cpio.gz) to use instead of the repository's
// build/dom0.
const PartsDirEnv = "QVM_DOM0_DIR"

// DefaultParts finds the parts in $QVM_DOM0_DIR, or in build/dom0 of the
// repository holding the current directory.
func DefaultParts() (Parts, error) {
	dir := os.Getenv(PartsDirEnv)
	if dir == "" {
		root, err := repoRoot()
		if err != nil {
			return Parts{}, err
		}
		dir = filepath.Join(root, "build", "dom0")
	}
	return PartsIn(dir), nil
}

// PartsIn names the parts in dir as the Makefile lays them out.
func PartsIn(dir string) Parts {
	return Parts{
		Xen:        filepath.Join(dir, "xen"),
		Kernel:     filepath.Join(dir, "vmlinuz"),
		Dom0Image:  filepath.Join(dir, "dom0.cpio.gz"),
		GuestImage: filepath.Join(dir, "guest.cpio.gz"),
	}
}

// Missing lists the parts that do not exist (the guest image counts only
// if named).
func (p Parts) Missing() []string {
	var out []string
	for _, f := range []string{p.Xen, p.Kernel, p.Dom0Image, p.GuestImage} {
		if f == "" {
			continue
		}
		if _, err := os.Stat(f); err != nil {
			out = append(out, f)
		}
	}
	return out
}

func (p Parts) check() error {
	if p.Xen == "" || p.Kernel == "" || p.Dom0Image == "" {
		return errors.New("xenvm: Parts needs Xen, Kernel and Dom0Image")
	}
	for _, f := range []string{p.Xen, p.Kernel, p.Dom0Image} {
		if _, err := os.Stat(f); err != nil {
			return fmt.Errorf("xenvm: test bed part missing (run `make dom0-image guest-image`): %w", err)
		}
	}
	return nil
}

// repoRoot walks up from the current directory to the directory holding
// go.mod.
func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("xenvm: no go.mod above the current directory; set " + PartsDirEnv)
		}
		dir = parent
	}
}
