package cdrom

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/qvm-project/qvm/loopdev"
)

// ErrNotDom0 is returned (wrapped) for a disc that lives in a VM rather
// than in dom0 (VM:/path).
var ErrNotDom0 = errors.New("disc is not a dom0 file")

// ErrRelativePath is returned (wrapped) for a disc not given by an
// absolute path: a command-line mistake.
var ErrRelativePath = errors.New("relative path")

// VMDisc splits a disc that lives in a VM, VM:/path, into the VM's name
// and the path in it; ok is false for a dom0 disc (dom0:/path or /path),
// which ParseDisc checks. The path must be absolute and printable: it is
// what the VM is asked to put on a loop device, on one command line. The
// VM's existence and state are the start's to check.
func VMDisc(what, spec string) (vm, path string, ok bool, err error) {
	vm, path, ok = strings.Cut(spec, ":")
	if !ok || strings.HasPrefix(spec, "/") || vm == "dom0" {
		return "", "", false, nil
	}
	if vm == "" {
		return "", "", false, fmt.Errorf("%s %s: %w: no VM before the colon: give VM:/path or dom0:/path", what, spec, ErrRelativePath)
	}
	if !strings.HasPrefix(path, "/") {
		return "", "", false, fmt.Errorf("%s %s: %w: give an absolute path in %s, e.g. %s:/home/user/installcd.iso", what, spec, ErrRelativePath, vm, vm)
	}
	for _, r := range path {
		if r < 0x20 || r == 0x7f {
			return "", "", false, fmt.Errorf("%s %q: the path has a control character: give a path of printable characters", what, spec)
		}
	}
	return vm, path, true, nil
}

// ParseDisc checks a disc for a CD-ROM drive before anything starts: the
// R4 form dom0:/path, or the R3 form /path. A file must be an ISO 9660 or
// UDF image; a block device is taken as it is. what names the argument in
// errors (--cdrom, or the disc of qvm-block). It returns the dom0 path;
// a disc in a VM (VMDisc) is refused with ErrNotDom0.
func ParseDisc(what, spec string) (string, error) {
	path := spec
	if dom, p, ok := strings.Cut(spec, ":"); ok && !strings.HasPrefix(spec, "/") {
		if dom != "dom0" {
			return "", fmt.Errorf("%s %s: %w: a disc in VM %s is served only for a start (qvm-start --cdrom=%s): give a dom0 disc here", what, spec, ErrNotDom0, dom, spec)
		}
		path = p
	}
	if !filepath.IsAbs(path) {
		return "", fmt.Errorf("%s %s: %w: give an absolute path, e.g. dom0:/usr/local/iso/installer.iso", what, spec, ErrRelativePath)
	}
	fi, err := os.Stat(path)
	if err != nil {
		return "", fmt.Errorf("%s: %w", what, err)
	}
	if fi.Mode()&os.ModeDevice != 0 && fi.Mode()&os.ModeCharDevice == 0 {
		if err := notInUse(path); err != nil {
			return "", fmt.Errorf("%s %s: %w", what, path, err)
		}
		return path, nil
	}
	if !fi.Mode().IsRegular() {
		return "", fmt.Errorf("%s %s: not an image file or a block device", what, path)
	}
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("%s: cannot read it: %w", what, err)
	}
	defer f.Close()
	if !IsOpticalImage(f) {
		return "", fmt.Errorf("%s %s: not an ISO 9660 or UDF image (no CD001/BEA01/NSR0 descriptor at sector 16): give an installer .iso", what, path)
	}
	if err := fileNotInUse(fi); err != nil {
		return "", fmt.Errorf("%s %s: %w", what, path, err)
	}
	return path, nil
}

// ErrInUse is returned (wrapped) for a disc that dom0 itself uses: a
// block device mounted (itself or a partition of it), held by
// device-mapper, md or swap, or a file behind such a loop device. A guest
// must not read (or, through its QEMU, touch) dom0's own disks.
var ErrInUse = errors.New("dom0 uses this disk")

// notInUse asks the kernel whether anyone holds the block device: an
// exclusive open fails with EBUSY when it, or a partition of it, is
// mounted, used as swap, or claimed by device-mapper, md or a backend.
func notInUse(path string) error {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_EXCL|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
	if errors.Is(err, unix.EBUSY) {
		return fmt.Errorf("%w: it (or a partition of it) is mounted, used as swap or held by device-mapper, md or a VM: give a disc dom0 does not use", ErrInUse)
	}
	if err != nil {
		return fmt.Errorf("cannot open it: %w", err)
	}
	unix.Close(fd)
	return nil
}

// fileNotInUse refuses an image file that backs a loop device in use.
func fileNotInUse(fi os.FileInfo) error {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return nil
	}
	loops, err := loopdev.Attached()
	if err != nil {
		return nil // no loop devices to look at
	}
	for _, l := range loops {
		if l.Dev == uint64(st.Dev) && l.Ino == st.Ino {
			if err := notInUse(l.Path); err != nil {
				return fmt.Errorf("it backs %s: %w", l.Path, err)
			}
		}
	}
	return nil
}

// IsOpticalImage looks for the volume descriptor of ISO 9660 ("CD001")
// or UDF ("BEA01", "NSR02/03") in the descriptors from byte 32768.
func IsOpticalImage(r io.ReaderAt) bool {
	buf := make([]byte, 6)
	for sector := int64(16); sector < 32; sector++ {
		if _, err := r.ReadAt(buf, sector*2048); err != nil {
			return false
		}
		switch string(buf[1:6]) {
		case "CD001", "BEA01", "NSR02", "NSR03":
			return true
		}
	}
	return false
}
