// Package loopfs makes a scratch filesystem for tests and benchmarks: an
// image file formatted with a real mkfs, attached to a loop device and mounted
// in a directory the caller owns. Close undoes every step (unmount, detach the
// loop device, delete the image), also after a failure half-way through Make.
//
// It needs root, util-linux's losetup and the mkfs of the chosen type
// (xfsprogs, btrfs-progs, e2fsprogs). The tmpfs type needs neither a loop
// device nor mkfs.
package loopfs

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Type names a kind of scratch filesystem.
type Type string

// The filesystem types Make knows.
const (
	XFS          Type = "xfs"           // XFS with reflink (mkfs.xfs -m reflink=1)
	XFSNoReflink Type = "xfs-noreflink" // XFS without reflink (mkfs.xfs -m reflink=0)
	Btrfs        Type = "btrfs"         // btrfs (reflink always on)
	Ext4         Type = "ext4"          // ext4 (no reflink)
	Tmpfs        Type = "tmpfs"         // tmpfs (no reflink, no loop device)
)

// Types lists every Type, for error messages and flag help.
func Types() []Type { return []Type{XFS, XFSNoReflink, Btrfs, Ext4, Tmpfs} }

// Commands returns the programs Make runs for t, so callers can check that
// they are installed before calling it.
func (t Type) Commands() []string {
	switch t {
	case XFS, XFSNoReflink:
		return []string{"mkfs.xfs", "losetup"}
	case Btrfs:
		return []string{"mkfs.btrfs", "losetup"}
	case Ext4:
		return []string{"mkfs.ext4", "losetup"}
	}
	return nil
}

// FS is a mounted scratch filesystem.
type FS struct {
	// Dir is the mount point; files made under it live on the filesystem.
	Dir string
	// Device is the loop device ("" for tmpfs).
	Device string
	// Type is the filesystem type.
	Type Type

	image string // backing image file ("" for tmpfs)
}

// Make creates a filesystem of type t and size bytes under workDir (which
// must exist; the image file and the mount point are made inside it) and
// mounts it. On error nothing is left behind.
func Make(ctx context.Context, workDir string, t Type, size int64) (fs *FS, err error) {
	var mkfs []string
	switch t {
	case XFS:
		mkfs = []string{"mkfs.xfs", "-q", "-f", "-m", "reflink=1"}
	case XFSNoReflink:
		mkfs = []string{"mkfs.xfs", "-q", "-f", "-m", "reflink=0"}
	case Btrfs:
		mkfs = []string{"mkfs.btrfs", "-q", "-f"}
	case Ext4:
		mkfs = []string{"mkfs.ext4", "-q", "-F", "-E", "nodiscard"}
	case Tmpfs:
	default:
		return nil, fmt.Errorf("loopfs: unknown filesystem type %q: use one of %v", t, Types())
	}
	mnt, err := os.MkdirTemp(workDir, "mnt-"+string(t)+"-")
	if err != nil {
		return nil, fmt.Errorf("loopfs: mount point: %w", err)
	}
	fs = &FS{Dir: mnt, Type: t}
	defer func() {
		if err != nil {
			if cerr := fs.Close(); cerr != nil {
				err = errors.Join(err, cerr)
			}
			fs = nil
		}
	}()
	if t == Tmpfs {
		opts := fmt.Sprintf("size=%d,mode=0755", size)
		if err := unix.Mount("tmpfs", mnt, "tmpfs", 0, opts); err != nil {
			return fs, fmt.Errorf("loopfs: mount tmpfs on %s: %w", mnt, err)
		}
		return fs, nil
	}

	img, err := os.CreateTemp(workDir, "fs-"+string(t)+"-*.img")
	if err != nil {
		return fs, fmt.Errorf("loopfs: image file: %w", err)
	}
	fs.image = img.Name()
	if err := img.Truncate(size); err != nil {
		img.Close()
		return fs, fmt.Errorf("loopfs: size image %s: %w", fs.image, err)
	}
	if err := img.Close(); err != nil {
		return fs, fmt.Errorf("loopfs: image %s: %w", fs.image, err)
	}
	if err := run(ctx, append(mkfs, fs.image)...); err != nil {
		return fs, err
	}
	out, err := output(ctx, "losetup", "-f", "--show", fs.image)
	if err != nil {
		return fs, err
	}
	fs.Device = strings.TrimSpace(out)
	fstype := string(t)
	if t == XFSNoReflink {
		fstype = "xfs"
	}
	if err := unix.Mount(fs.Device, mnt, fstype, 0, ""); err != nil {
		return fs, fmt.Errorf("loopfs: mount %s (%s) on %s: %w", fs.Device, fstype, mnt, err)
	}
	return fs, nil
}

// Close unmounts the filesystem, detaches its loop device and removes the
// image file and mount point. It is safe to call on a partly made FS and
// more than once.
func (fs *FS) Close() error {
	if fs == nil {
		return nil
	}
	var errs []error
	if fs.Dir != "" {
		if err := unmount(fs.Dir); err != nil {
			errs = append(errs, err)
		} else if err := os.Remove(fs.Dir); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, fmt.Errorf("loopfs: remove mount point: %w", err))
		} else {
			fs.Dir = ""
		}
	}
	if fs.Device != "" && len(errs) == 0 {
		if err := run(context.Background(), "losetup", "-d", fs.Device); err != nil {
			errs = append(errs, err)
		} else {
			fs.Device = ""
		}
	}
	if fs.image != "" && len(errs) == 0 {
		if err := os.Remove(fs.image); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, fmt.Errorf("loopfs: remove image: %w", err))
		} else {
			fs.image = ""
		}
	}
	return errors.Join(errs...)
}

// unmount unmounts dir if something is mounted there, retrying briefly while
// the filesystem is busy (a just-closed file may still be held for a moment).
func unmount(dir string) error {
	for i := 0; ; i++ {
		err := unix.Unmount(dir, 0)
		switch {
		case err == nil, errors.Is(err, unix.EINVAL), errors.Is(err, unix.ENOENT):
			// EINVAL: not a mount point (Make failed before mounting).
			return nil
		case errors.Is(err, unix.EBUSY) && i < 50:
			time.Sleep(100 * time.Millisecond)
		default:
			return fmt.Errorf("loopfs: unmount %s: %w", dir, err)
		}
	}
}

func run(ctx context.Context, argv ...string) error {
	_, err := output(ctx, argv...)
	return err
}

func output(ctx context.Context, argv ...string) (string, error) {
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("loopfs: %s: %w: %s", strings.Join(argv, " "), err, strings.TrimSpace(stderr.String()))
	}
	return string(out), nil
}

// Path joins elem to the mount point.
func (fs *FS) Path(elem ...string) string {
	return filepath.Join(append([]string{fs.Dir}, elem...)...)
}
