package volume

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// Import is a user's disk image becoming a new VM's root volume
// (qvm-create --root-copy-from / --root-move-from). It is opened once,
// without following a symlink and without blocking on a FIFO, and every
// check is made on the open file, so nothing can be swapped in between
// the check and the use. A move never touches the user's file until the
// VM exists: the image is given a second name in the VM's directory
// (Place), and the user's name is dropped only after the store commits
// (Finish); a crash before that leaves the user's file as it was.
type Import struct {
	// Path is the image as the user gave it.
	Path string
	// Size is its size in bytes.
	Size int64
	// Move says the user's name goes once the VM exists.
	Move bool

	f  *os.File
	st unix.Stat_t
	// linked is set by Place when the VM's image is a second name of the
	// user's file (a move within one filesystem).
	linked bool
}

// configfsMagic is configfs' f_type (linux/magic.h; x/sys/unix lacks it).
const configfsMagic = 0x62656570

// pseudoFS are filesystems whose files are no disk images (procfs, sysfs
// and their kin): importing /proc/kcore would copy dom0's memory.
var pseudoFS = map[int64]string{
	unix.PROC_SUPER_MAGIC: "procfs", unix.SYSFS_MAGIC: "sysfs", unix.DEBUGFS_MAGIC: "debugfs",
	unix.TRACEFS_MAGIC: "tracefs", unix.SECURITYFS_MAGIC: "securityfs", unix.CGROUP_SUPER_MAGIC: "cgroupfs",
	unix.CGROUP2_SUPER_MAGIC: "cgroup2fs", configfsMagic: "configfs", unix.EFIVARFS_MAGIC: "efivarfs",
	unix.BPF_FS_MAGIC: "bpffs", unix.DEVPTS_SUPER_MAGIC: "devpts",
}

// OpenImport opens and checks a user's disk image: an existing, readable,
// non-empty regular file whose size is a whole number of 512-byte sectors,
// not a qcow2/VMDK/VHDX container, not a symlink, not on a pseudo
// filesystem, and not inside any of the directories refuse (the state
// directory: another VM's image is no user's file). A move of a file that
// has other hard links becomes a copy (its other names keep their data,
// and the VM's image does not share it); the user's name still goes at
// Finish. The error says what is wrong and how to fix it.
func OpenImport(path string, move bool, refuse ...string) (*Import, error) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, openError(path, err)
	}
	im := &Import{Path: path, Move: move, f: os.NewFile(uintptr(fd), path)}
	if err := im.check(refuse); err != nil {
		im.f.Close()
		return nil, err
	}
	if move {
		// The user's name is dropped at Finish: its directory must be
		// writable, which is checked now, before anything happens.
		if err := unix.Access(filepath.Dir(path), unix.W_OK); err != nil {
			im.f.Close()
			return nil, fmt.Errorf("image %s cannot be moved: its directory %s is not writable (%w); "+
				"use --root-copy-from to copy it instead", path, filepath.Dir(path), err)
		}
	}
	return im, nil
}

func openError(path string, err error) error {
	switch {
	case errors.Is(err, unix.ENOENT):
		return fmt.Errorf("image %s does not exist: check the path (it must name a raw disk image file): %w", path, err)
	case errors.Is(err, unix.ELOOP):
		return fmt.Errorf("image %s is a symbolic link, which qvm does not follow: give the path of the image itself (realpath %s)", path, path)
	case errors.Is(err, unix.EACCES), errors.Is(err, unix.EPERM):
		return fmt.Errorf("image %s is not readable: give the user running qvm read permission (e.g. chmod u+r, or run as root): %w", path, err)
	case errors.Is(err, unix.EISDIR):
		return fmt.Errorf("image %s is a directory, not a regular file: give the path of the disk image file inside it", path)
	}
	return fmt.Errorf("image %s: %w", path, err)
}

// check examines the open file.
func (im *Import) check(refuse []string) error {
	path := im.Path
	if err := unix.Fstat(int(im.f.Fd()), &im.st); err != nil {
		return fmt.Errorf("image %s: %w", path, err)
	}
	switch im.st.Mode & unix.S_IFMT {
	case unix.S_IFREG:
	case unix.S_IFDIR:
		return fmt.Errorf("image %s is a directory, not a regular file: give the path of the disk image file inside it", path)
	case unix.S_IFBLK:
		return fmt.Errorf("image %s is a block device; qvm takes image files only: copy the device into a file "+
			"first (dd if=%s of=FILE.img bs=1M conv=sparse) and give FILE.img", path, path)
	default:
		return fmt.Errorf("image %s is not a regular file: give a raw disk image file", path)
	}
	var sfs unix.Statfs_t
	if err := unix.Fstatfs(int(im.f.Fd()), &sfs); err != nil {
		return fmt.Errorf("image %s: %w", path, err)
	}
	if name, ok := pseudoFS[int64(sfs.Type)]; ok {
		return fmt.Errorf("image %s is on %s, which holds no disk images: give a raw disk image file", path, name)
	}
	real, err := os.Readlink(fmt.Sprintf("/proc/self/fd/%d", im.f.Fd()))
	if err != nil {
		// No /proc: resolve the directory instead.
		dir, derr := filepath.EvalSymlinks(filepath.Dir(path))
		if derr != nil {
			return fmt.Errorf("image %s: %w", path, derr)
		}
		real = filepath.Join(dir, filepath.Base(path))
	}
	for _, r := range refuse {
		if r == "" {
			continue
		}
		rr, err := filepath.EvalSymlinks(r)
		if err != nil {
			rr = filepath.Clean(r)
		}
		if real == rr || strings.HasPrefix(real, rr+string(filepath.Separator)) {
			return fmt.Errorf("image %s is inside qvm's state directory %s (it is a VM's image, not a user's file): "+
				"use qvm-clone to copy a VM, or copy the image out of %s first", path, rr, rr)
		}
	}
	im.Size = im.st.Size
	if im.Size == 0 {
		return fmt.Errorf("image %s is empty (0 bytes): a disk image holds at least one 512-byte sector; "+
			"check that it was written completely", path)
	}
	if im.Size%SectorSize != 0 {
		return fmt.Errorf("image %s is %d bytes, not a whole number of 512-byte sectors, so it is not a raw disk image "+
			"(or it is truncated); if it is raw, pad it with: truncate -s %d %s", path, im.Size, roundUpSectors(im.Size), path)
	}
	head := make([]byte, 8)
	n, err := im.f.ReadAt(head, 0)
	if err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("image %s cannot be read: %w", path, err)
	}
	if format := containerFormat(head[:n]); format != "" {
		return fmt.Errorf("image %s is a %s image, not a raw one; convert it first: qemu-img convert -O raw %s FILE.img", path, format, path)
	}
	return nil
}

// roundUpSectors is n rounded up to whole sectors, saturating instead of
// overflowing.
func roundUpSectors(n int64) int64 {
	if n > (1<<63-1)-SectorSize {
		return (1<<63 - 1) / SectorSize * SectorSize
	}
	return (n + SectorSize - 1) / SectorSize * SectorSize
}

// containerFormat recognises the image formats people mistake for raw disks
// by their magic bytes.
func containerFormat(head []byte) string {
	switch {
	case bytes.HasPrefix(head, []byte("QFI\xfb")):
		return "qcow2"
	case bytes.HasPrefix(head, []byte("KDMV")):
		return "VMDK"
	case bytes.HasPrefix(head, []byte("vhdxfile")):
		return "VHDX"
	}
	return ""
}

// Close releases the open image.
func (im *Import) Close() error { return im.f.Close() }

// Place makes dst (which must not exist) the VM's image: for a move
// within one filesystem of a file with no other name, a second name of
// the same file (no data moves; the user's name stays until Finish);
// otherwise a copy made from the open file (reflink or sparse, like
// Copy). dst is durable when Place returns.
func (im *Import) Place(ctx context.Context, dst string, opts ...Option) (Result, error) {
	if err := ctx.Err(); err != nil {
		return Result{}, err
	}
	if im.Move && im.st.Nlink == 1 && sameDevice(im.st, filepath.Dir(dst)) {
		if err := mustNotExist(dst); err != nil {
			return Result{}, err
		}
		if err := linkOpen(int(im.f.Fd()), dst); err != nil {
			return Result{}, fmt.Errorf("move image %s to %s: %w", im.Path, dst, err)
		}
		if err := syncDir(filepath.Dir(dst)); err != nil {
			return Result{}, errors.Join(err, os.Remove(dst))
		}
		im.linked = true
		return Result{Method: Link, Size: im.Size}, nil
	}
	res, err := copyOpen(ctx, im.f, dst, newOptions(opts))
	if err != nil {
		return res, fmt.Errorf("copy image %s to %s: %w", im.Path, dst, err)
	}
	return res, nil
}

func sameDevice(st unix.Stat_t, dir string) bool {
	var d unix.Stat_t
	return unix.Stat(dir, &d) == nil && d.Dev == st.Dev
}

// linkOpen gives the open file fd the name dst: AT_EMPTY_PATH (root has
// CAP_DAC_READ_SEARCH), else through /proc/self/fd.
func linkOpen(fd int, dst string) error {
	err := unix.Linkat(fd, "", unix.AT_FDCWD, dst, unix.AT_EMPTY_PATH)
	if errors.Is(err, unix.EPERM) || errors.Is(err, unix.ENOENT) {
		err = unix.Linkat(unix.AT_FDCWD, fmt.Sprintf("/proc/self/fd/%d", fd), unix.AT_FDCWD, dst, unix.AT_SYMLINK_FOLLOW)
	}
	if err != nil {
		return fmt.Errorf("link into place: %w", err)
	}
	return nil
}

// MovedFrom names a moved image's user file, for FinishMove: its path
// and identity.
type MovedFrom struct {
	Path string `json:"path"`
	Dev  uint64 `json:"dev"`
	Ino  uint64 `json:"ino"`
}

// MovedFrom is what FinishMove must drop (an empty Path for a copy).
func (im *Import) MovedFrom() MovedFrom {
	if !im.Move {
		return MovedFrom{}
	}
	return MovedFrom{Path: im.Path, Dev: im.st.Dev, Ino: im.st.Ino}
}

// FinishMove completes a moved import once the VM exists: the user's name
// src is dropped if it still names the imported file (same device and
// inode; a file put there since is left alone) and its directory made
// durable; then dst, the VM's image, becomes root's with mode 0600 (a
// linked image kept the user's owner until now). It can be run again
// after a crash: a name already gone is fine.
func FinishMove(src MovedFrom, dst string) error {
	if src.Path != "" {
		var st unix.Stat_t
		err := unix.Lstat(src.Path, &st)
		switch {
		case err == nil && st.Dev == src.Dev && st.Ino == src.Ino:
			if err := unix.Unlink(src.Path); err != nil && !errors.Is(err, unix.ENOENT) {
				return fmt.Errorf("drop the moved image's old name %s: %w", src.Path, err)
			}
			if err := syncDir(filepath.Dir(src.Path)); err != nil {
				return err
			}
		case err != nil && !errors.Is(err, unix.ENOENT):
			return fmt.Errorf("moved image's old name %s: %w", src.Path, err)
		}
	}
	if err := os.Lchown(dst, 0, 0); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("make %s root's: %w", dst, err)
	}
	if err := os.Chmod(dst, imageMode); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("image %s: %w", dst, err)
	}
	return nil
}
