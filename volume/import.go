package volume

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// ValidateImage checks a disk image a user hands to qvm (--root-copy-from,
// --root-move-from) and returns its size. It must be an existing, readable,
// non-empty regular file (symlinks are followed) whose size is a whole number
// of 512-byte sectors. Block devices are refused: qvm takes image files. The
// error says what is wrong and how to fix it.
func ValidateImage(path string) (int64, error) {
	st, err := os.Stat(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return 0, fmt.Errorf("image %s does not exist: check the path (it must name a raw disk image file): %w", path, err)
		}
		return 0, fmt.Errorf("image %s: %w", path, err)
	}
	switch m := st.Mode(); {
	case m.IsDir():
		return 0, fmt.Errorf("image %s is a directory, not a disk image: give the path of the image file inside it", path)
	case m&os.ModeDevice != 0 && m&os.ModeCharDevice == 0:
		return 0, fmt.Errorf("image %s is a block device; qvm takes image files only: copy the device into a file "+
			"first (dd if=%s of=FILE.img bs=1M conv=sparse) and give FILE.img", path, path)
	case !m.IsRegular():
		return 0, fmt.Errorf("image %s is not a regular file (%s): give a raw disk image file", path, m.Type())
	}
	size := st.Size()
	if size == 0 {
		return 0, fmt.Errorf("image %s is empty (0 bytes): a disk image holds at least one 512-byte sector; "+
			"check that it was written completely", path)
	}
	if size%SectorSize != 0 {
		return 0, fmt.Errorf("image %s is %d bytes, not a whole number of 512-byte sectors, so it is not a raw disk image "+
			"(or it is truncated); if it is raw, pad it with: truncate -s %d %s", path, size, (size/SectorSize+1)*SectorSize, path)
	}
	f, err := os.Open(path)
	if err != nil {
		if errors.Is(err, os.ErrPermission) {
			return 0, fmt.Errorf("image %s is not readable: give the user running qvm read permission (e.g. chmod u+r, or run as root): %w", path, err)
		}
		return 0, fmt.Errorf("image %s: %w", path, err)
	}
	defer f.Close()
	head := make([]byte, 8)
	n, err := io.ReadFull(f, head)
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) {
		return 0, fmt.Errorf("image %s cannot be read: %w", path, err)
	}
	if format := containerFormat(head[:n]); format != "" {
		return 0, fmt.Errorf("image %s is a %s image, not a raw one; convert it first: qemu-img convert -O raw %s FILE.img", path, format, path)
	}
	return size, nil
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

// CopyFrom copies a user's disk image to dst (--root-copy-from) after
// ValidateImage has accepted it; the source is left as it was.
func CopyFrom(ctx context.Context, src, dst string, opts ...Option) (Result, error) {
	if _, err := ValidateImage(src); err != nil {
		return Result{}, err
	}
	return Copy(ctx, src, dst, opts...)
}

// MoveFrom moves a user's disk image to dst (--root-move-from) after
// ValidateImage has accepted it. On one filesystem it is a rename (no data
// moves); across filesystems it copies (reflink or sparse, like Copy), makes
// the copy durable, then removes the source. Either the image ends up at dst
// and src is gone, or (on error) src is untouched and dst does not exist.
// A symlink src is read through and the link itself removed, as Qubes does.
func MoveFrom(ctx context.Context, src, dst string, opts ...Option) (Result, error) {
	if _, err := ValidateImage(src); err != nil {
		return Result{}, err
	}
	res, err := moveImage(ctx, src, dst, newOptions(opts))
	if err != nil {
		return res, fmt.Errorf("move image %s to %s: %w", src, dst, err)
	}
	return res, nil
}

func moveImage(ctx context.Context, src, dst string, o *options) (Result, error) {
	lst, err := os.Lstat(src)
	if err != nil {
		return Result{}, err
	}
	srcDir := filepath.Dir(src)
	// Removing src needs write access to its directory: find out now,
	// before any data moves (EROFS and EACCES show here).
	if err := unix.Access(srcDir, unix.W_OK); err != nil {
		return Result{}, fmt.Errorf("cannot remove the source afterwards: directory %s is not writable (%w); "+
			"use --root-copy-from to copy it instead", srcDir, err)
	}
	if err := mustNotExist(dst); err != nil {
		return Result{}, err
	}
	if err := ctx.Err(); err != nil {
		return Result{}, err
	}
	if lst.Mode()&os.ModeSymlink == 0 {
		oldMode := lst.Mode().Perm()
		if err := os.Chmod(src, imageMode); err != nil {
			return Result{}, err
		}
		err := renameNoReplace(src, dst)
		if err == nil {
			res := Result{Method: Rename, Size: lst.Size()}
			if err := syncDir(filepath.Dir(dst)); err != nil {
				return res, err
			}
			if srcDir != filepath.Dir(dst) {
				return res, syncDir(srcDir)
			}
			return res, nil
		}
		if cerr := os.Chmod(src, oldMode); cerr != nil {
			err = errors.Join(err, cerr)
		}
		if !errors.Is(err, unix.EXDEV) {
			return Result{}, err
		}
	}
	// Another filesystem (or a symlink): copy, then drop the source name.
	res, err := copyImage(ctx, src, dst, o)
	if err != nil {
		return res, err
	}
	if err := os.Remove(src); err != nil {
		return res, errors.Join(fmt.Errorf("remove source after copying: %w", err), removeAndSync(dst))
	}
	return res, syncDir(srcDir)
}
