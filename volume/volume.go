// Package volume is qvm's file pool: the disk images of VMs, kept as raw,
// sparse files in one directory per VM (the store decides where that
// directory is; this package only takes paths).
//
// A VM has up to four volumes, as in Qubes OS: root, private and volatile are
// image files here (root.img, private.img, volatile.img); kernel is not a file
// volume (it names a kernel directory). New images are created sparse at
// Qubes' default sizes (see Layout), so a 10 GiB root costs no disk space
// until the VM writes to it.
//
// Copies (qvm-clone, a StandaloneVM made from a template, --root-copy-from)
// share blocks with reflink (FICLONE) where the filesystem supports it, and
// otherwise copy only the data extents (SEEK_DATA/SEEK_HOLE with
// copy_file_range), so holes survive. Every copy or move is all-or-nothing:
// the data goes to an unnamed (O_TMPFILE) or temporary file in the
// destination directory, is fsynced, and only then gets its name; on error or
// cancellation nothing is left behind.
package volume

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// Byte multiples.
const (
	KiB int64 = 1 << 10
	MiB int64 = 1 << 20
	GiB int64 = 1 << 30
)

// Qubes' default image sizes (qubes.config.defaults: root_img_size,
// private_img_size; a DispVM's volatile is root + private).
const (
	DefaultRootSize           = 10 * GiB
	DefaultPrivateSize        = 2 * GiB
	DefaultVolatileSize       = 10 * GiB
	DispVMVolatileSize        = 12 * GiB
	SectorSize          int64 = 512 // image sizes are whole sectors
)

// Volume names.
const (
	Root     = "root"
	Private  = "private"
	Volatile = "volatile"
	Kernel   = "kernel" // not a file volume: it names a kernel directory
)

// FileVolumes are the volume names that are image files, in disk order
// (xvda, xvdb, xvdc).
var fileVolumes = [...]string{Root, Private, Volatile}

// FileVolumes returns the names of the volumes kept as image files, in disk
// order: root (xvda), private (xvdb), volatile (xvdc).
func FileVolumes() []string { return append([]string(nil), fileVolumes[:]...) }

// ImageName is the file name of a volume's image: "root" -> "root.img".
func ImageName(volume string) string { return volume + ".img" }

// ImagePath is the image of a volume in a VM's directory.
func ImagePath(vmDir, volume string) string { return filepath.Join(vmDir, ImageName(volume)) }

// imageMode is the permission of new images: VM disks hold the VM's data,
// so only their owner (root) reads them. (Qubes uses 0664.)
const imageMode = 0o600

// Create makes a new sparse image of size bytes at path: no blocks are
// allocated until written. It refuses to replace an existing file.
func Create(path string, size int64) error {
	if err := checkSize(size); err != nil {
		return fmt.Errorf("create image %s: %w", path, err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, imageMode)
	if err != nil {
		if errors.Is(err, os.ErrExist) {
			return fmt.Errorf("create image %s: it already exists; remove it first or pick another VM name: %w", path, err)
		}
		return fmt.Errorf("create image %s: %w", path, err)
	}
	err = f.Truncate(size)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(path)
		return fmt.Errorf("create image %s: %w", path, err)
	}
	if err := syncDir(filepath.Dir(path)); err != nil {
		os.Remove(path)
		return fmt.Errorf("create image %s: %w", path, err)
	}
	return nil
}

// checkSize validates the size of a new or resized image.
func checkSize(size int64) error {
	if size <= 0 {
		return fmt.Errorf("size %d bytes: an image needs a positive size", size)
	}
	if size%SectorSize != 0 {
		down, up := size/SectorSize*SectorSize, roundUpSectors(size)
		if up == down {
			// Past the largest whole-sector size: only rounding down fits.
			return fmt.Errorf("size %d bytes is not a whole number of %d-byte sectors: use %d", size, SectorSize, down)
		}
		return fmt.Errorf("size %d bytes is not a whole number of %d-byte sectors: use %d or %d", size, SectorSize, down, up)
	}
	return nil
}

// Resize grows the image at path to newSize bytes, sparsely (the new space
// is a hole). Shrinking is refused: it would cut off the data at the end of
// the disk. Resizing to the current size does nothing.
func Resize(path string, newSize int64) error {
	st, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("resize image %s: %w", path, err)
	}
	if !st.Mode().IsRegular() {
		return fmt.Errorf("resize image %s: not a regular file (%s)", path, st.Mode().Type())
	}
	cur := st.Size()
	if newSize < cur {
		return fmt.Errorf("resize image %s: refusing to shrink it from %d to %d bytes: shrinking would lose the data "+
			"in its last %d bytes; volumes only grow (to start smaller, create a new VM)", path, cur, newSize, cur-newSize)
	}
	if err := checkSize(newSize); err != nil {
		return fmt.Errorf("resize image %s: %w", path, err)
	}
	if newSize == cur {
		return nil
	}
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return fmt.Errorf("resize image %s: %w", path, err)
	}
	err = f.Truncate(newSize)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("resize image %s to %d bytes: %w", path, newSize, err)
	}
	return nil
}

// Usage is the space an image takes: its apparent size and the bytes the
// filesystem has allocated for it (st_blocks * 512; smaller than Size for a
// sparse image, and counting shared reflinked blocks in full).
type Usage struct {
	Size      int64
	Allocated int64
}

// Stat returns the size and allocated bytes of the image at path.
func Stat(path string) (Usage, error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return Usage{}, fmt.Errorf("stat image %s: %w", path, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return Usage{}, fmt.Errorf("stat image %s: not a regular file", path)
	}
	return Usage{Size: st.Size, Allocated: st.Blocks * 512}, nil
}

// syncDir fsyncs a directory so that a name just added to or removed from it
// survives a crash.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("sync directory %s: %w", dir, err)
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("sync directory %s: %w", dir, err)
	}
	return nil
}
