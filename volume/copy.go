package volume

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// Method says how an image got to its destination.
type Method int

// The ways Copy and Import.Place place an image.
const (
	// Reflink shares the source's blocks (FICLONE): O(1) in the data size,
	// no extra space until either copy is written.
	Reflink Method = iota + 1
	// CopyFileRange copies the data extents inside the kernel
	// (copy_file_range); holes stay holes.
	CopyFileRange
	// ReadWrite copies the data extents through a user-space buffer, where
	// copy_file_range is not available (e.g. across some filesystems).
	ReadWrite
	// Link gave the file a second name within one filesystem (a moved
	// import, see Import.Place).
	Link
)

func (m Method) String() string {
	switch m {
	case Reflink:
		return "reflink"
	case CopyFileRange:
		return "copy_file_range"
	case ReadWrite:
		return "read/write"
	case Link:
		return "link"
	}
	return fmt.Sprintf("Method(%d)", int(m))
}

// Result tells what a copy or move did.
type Result struct {
	Method Method
	// Size is the image's apparent size in bytes.
	Size int64
	// Copied is the number of data bytes copied (0 for Reflink and Link).
	Copied int64
}

// copyChunk bounds one copy_file_range or read/write step: cancellation
// and progress are checked this often, and each chunk goes to writeback
// as soon as it is copied.
const copyChunk = 8 * MiB

// Copy copies the image src to dst, which must not exist yet. It clones with
// reflink where the filesystem can (same filesystem, XFS with reflink,
// btrfs, ...), and otherwise copies only the data extents so that holes stay
// holes. The copy is crash-safe and all-or-nothing: dst appears, complete and
// fsynced, only when Copy succeeds; on error or when ctx is cancelled (it is
// checked between extents) nothing is left in dst's directory.
func Copy(ctx context.Context, src, dst string, opts ...Option) (Result, error) {
	o := newOptions(opts)
	res, err := copyImage(ctx, src, dst, o)
	if err != nil {
		return res, fmt.Errorf("copy image %s to %s: %w", src, dst, err)
	}
	return res, nil
}

func copyImage(ctx context.Context, src, dst string, o *options) (Result, error) {
	if err := ctx.Err(); err != nil {
		return Result{}, err
	}
	in, err := os.Open(src)
	if err != nil {
		return Result{}, err
	}
	defer in.Close()
	return copyOpen(ctx, in, dst, o)
}

// copyOpen copies the open file in to dst (see Copy).
func copyOpen(ctx context.Context, in *os.File, dst string, o *options) (Result, error) {
	if err := ctx.Err(); err != nil {
		return Result{}, err
	}
	var st unix.Stat_t
	if err := unix.Fstat(int(in.Fd()), &st); err != nil {
		return Result{}, fmt.Errorf("stat source: %w", err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return Result{}, fmt.Errorf("source is not a regular file: give an image file")
	}
	if err := mustNotExist(dst); err != nil {
		return Result{}, err
	}
	tmp, err := newTempFile(filepath.Dir(dst), filepath.Base(dst), o.namedTemp)
	if err != nil {
		return Result{}, err
	}
	res := Result{Size: st.Size}
	if err := fillCopy(ctx, in, tmp.f, st.Size, o, dst, &res); err != nil {
		return res, errors.Join(err, tmp.discard())
	}
	if err := tmp.commit(dst); err != nil {
		return res, err
	}
	return res, nil
}

// fillCopy puts the data of in (size bytes) into the empty file out.
func fillCopy(ctx context.Context, in, out *os.File, size int64, o *options, dst string, res *Result) error {
	ifd, ofd := int(in.Fd()), int(out.Fd())
	if !o.noReflink {
		err := unix.IoctlFileClone(ofd, ifd)
		if err == nil {
			res.Method = Reflink
			if o.wantsProgress() {
				total, terr := dataBytes(ifd, size)
				if terr != nil {
					return terr
				}
				p := o.startProgress(total, dst)
				p.add(total)
				p.finish()
			}
			return nil
		}
		if !reflinkUnsupported(err) {
			return fmt.Errorf("reflink: %w", err)
		}
	}
	if err := out.Truncate(size); err != nil {
		return fmt.Errorf("size destination: %w", err)
	}
	var total int64 = -1
	if o.wantsProgress() {
		t, err := dataBytes(ifd, size)
		if err != nil {
			return err
		}
		total = t
	}
	p := o.startProgress(total, dst)
	method, copied, err := copyExtents(ctx, in, out, size, o.readWrite, p)
	res.Method, res.Copied = method, copied
	if err != nil {
		p.abort()
		return err
	}
	p.finish()
	return nil
}

// reflinkUnsupported reports whether a FICLONE error means "this pair of
// files cannot share blocks" (so a plain copy is the answer), as opposed to a
// real failure such as ENOSPC or EIO.
func reflinkUnsupported(err error) bool {
	for _, e := range []error{unix.EOPNOTSUPP, unix.EXDEV, unix.EINVAL, unix.ENOTTY, unix.ENOSYS, unix.EBADF, unix.EPERM} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// copyRangeUnsupported reports whether a copy_file_range error means the
// kernel or filesystem cannot do it for these files, so read/write must.
func copyRangeUnsupported(err error) bool {
	for _, e := range []error{unix.EOPNOTSUPP, unix.EXDEV, unix.EINVAL, unix.ENOSYS, unix.EBADF, unix.EPERM} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// dataExtents calls fn for each data extent [start, end) of the file in
// order, clipped to size. Holes are skipped: SEEK_DATA/SEEK_HOLE find them.
func dataExtents(fd int, size int64, fn func(start, end int64) error) error {
	for off := int64(0); off < size; {
		start, err := unix.Seek(fd, off, unix.SEEK_DATA)
		if errors.Is(err, unix.ENXIO) {
			return nil // only a hole from off to the end
		}
		if err != nil {
			return fmt.Errorf("find data (SEEK_DATA at %d): %w", off, err)
		}
		if start >= size {
			return nil
		}
		end, err := unix.Seek(fd, start, unix.SEEK_HOLE)
		if err != nil {
			return fmt.Errorf("find hole (SEEK_HOLE at %d): %w", start, err)
		}
		end = min(end, size)
		if err := fn(start, end); err != nil {
			return err
		}
		off = end
	}
	return nil
}

// dataBytes sums the data extents of the file (the bytes a sparse copy moves).
func dataBytes(fd int, size int64) (int64, error) {
	var n int64
	err := dataExtents(fd, size, func(s, e int64) error { n += e - s; return nil })
	return n, err
}

// copyExtents copies every data extent of in to the same offsets of out
// (already truncated to size), leaving the holes alone.
func copyExtents(ctx context.Context, in, out *os.File, size int64, readWrite bool, p *progress) (Method, int64, error) {
	method := CopyFileRange
	if readWrite {
		method = ReadWrite
	}
	ifd, ofd := int(in.Fd()), int(out.Fd())
	// The source is read sequentially (a larger readahead window), and each
	// chunk copied is handed to writeback at once (sync_file_range WRITE
	// starts it without waiting), so the device writes while the copy goes
	// on and the final fsync has little left to do. Both are hints: their
	// errors are ignored; the fsync in commit makes the copy durable.
	// (Explicit FADV_WILLNEED of the next chunk measured slower.)
	unix.Fadvise(ifd, 0, 0, unix.FADV_SEQUENTIAL)
	var buf []byte
	var copied int64
	err := dataExtents(ifd, size, func(start, end int64) error {
		for pos := start; pos < end; {
			if err := ctx.Err(); err != nil {
				return err
			}
			n := min(copyChunk, end-pos)
			var w int64
			var err error
			if method == CopyFileRange {
				w, err = copyRange(ifd, ofd, pos, n)
				if err != nil && w == 0 && copyRangeUnsupported(err) {
					method = ReadWrite
					continue
				}
			} else {
				if buf == nil {
					buf = make([]byte, 1*MiB)
				}
				w, err = readWriteRange(in, out, pos, n, buf)
			}
			if w > 0 {
				unix.SyncFileRange(ofd, pos, w, unix.SYNC_FILE_RANGE_WRITE)
			}
			pos += w
			copied += w
			p.add(w)
			if err != nil {
				return fmt.Errorf("copy bytes %d-%d (%s): %w", pos, pos+n-w, method, err)
			}
		}
		return nil
	})
	return method, copied, err
}

// copyRange copies n bytes at off with copy_file_range.
func copyRange(ifd, ofd int, off, n int64) (int64, error) {
	roff, woff := off, off
	var done int64
	for done < n {
		c, err := unix.CopyFileRange(ifd, &roff, ofd, &woff, int(n-done), 0)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return done, err
		}
		if c == 0 {
			return done, fmt.Errorf("source ended early (was it truncated while copying?): %w", io.ErrUnexpectedEOF)
		}
		done += int64(c)
	}
	return done, nil
}

// readWriteRange copies n bytes at off through buf.
func readWriteRange(in, out *os.File, off, n int64, buf []byte) (int64, error) {
	var done int64
	for done < n {
		b := buf[:min(int64(len(buf)), n-done)]
		r, err := in.ReadAt(b, off+done)
		if r > 0 {
			if _, werr := out.WriteAt(b[:r], off+done); werr != nil {
				return done, werr
			}
			done += int64(r)
		}
		if err != nil {
			if errors.Is(err, io.EOF) {
				if done < n {
					return done, fmt.Errorf("source ended early (was it truncated while copying?): %w", io.ErrUnexpectedEOF)
				}
				break
			}
			return done, err
		}
	}
	return done, nil
}

// mustNotExist refuses a destination that is already there.
func mustNotExist(dst string) error {
	if _, err := os.Lstat(dst); err == nil {
		return fmt.Errorf("destination already exists; it is never overwritten: remove it first or choose another name: %w", os.ErrExist)
	} else if !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("destination: %w", err)
	}
	return nil
}

// partialMarker is in the name of a temporary file (used only where
// O_TMPFILE is unavailable); CleanPartials removes leftovers of a crash.
const partialMarker = ".partial-"

// tempFile is a file being filled in a destination directory: unnamed
// (O_TMPFILE) where the filesystem can, else a dot-file named with
// partialMarker.
type tempFile struct {
	f    *os.File
	dir  string
	name string // path of the named temp file; "" for O_TMPFILE
}

func newTempFile(dir, base string, named bool) (*tempFile, error) {
	if !named {
		fd, err := unix.Open(dir, unix.O_TMPFILE|unix.O_RDWR|unix.O_CLOEXEC, imageMode)
		if err == nil {
			return &tempFile{f: os.NewFile(uintptr(fd), filepath.Join(dir, "(unnamed)")), dir: dir}, nil
		}
		if !errors.Is(err, unix.EOPNOTSUPP) && !errors.Is(err, unix.EISDIR) && !errors.Is(err, unix.EINVAL) {
			return nil, fmt.Errorf("temporary file in %s: %w", dir, err)
		}
	}
	f, err := os.CreateTemp(dir, "."+base+partialMarker+"*")
	if err != nil {
		return nil, fmt.Errorf("temporary file in %s: %w", dir, err)
	}
	if err := f.Chmod(imageMode); err != nil {
		f.Close()
		os.Remove(f.Name())
		return nil, fmt.Errorf("temporary file %s: %w", f.Name(), err)
	}
	return &tempFile{f: f, dir: dir, name: f.Name()}, nil
}

// commit makes the file durable and gives it the name dst (never replacing
// an existing file), then makes the name durable.
func (t *tempFile) commit(dst string) error {
	if err := t.f.Sync(); err != nil {
		return errors.Join(fmt.Errorf("fsync: %w", err), t.discard())
	}
	var err error
	if t.name == "" {
		err = linkTempFile(int(t.f.Fd()), dst)
	} else {
		err = renameNoReplace(t.name, dst)
	}
	if err != nil {
		if errors.Is(err, unix.EEXIST) {
			err = fmt.Errorf("destination appeared while copying; it is never overwritten: %w", os.ErrExist)
		}
		return errors.Join(err, t.discard())
	}
	t.name = ""
	if err := t.f.Close(); err != nil {
		return errors.Join(fmt.Errorf("close: %w", err), removeAndSync(dst))
	}
	if err := syncDir(t.dir); err != nil {
		return errors.Join(err, removeAndSync(dst))
	}
	return nil
}

// discard drops the file: an unnamed one vanishes on close.
func (t *tempFile) discard() error {
	err := t.f.Close()
	if errors.Is(err, os.ErrClosed) {
		err = nil
	}
	if t.name != "" {
		if rerr := os.Remove(t.name); rerr != nil && !errors.Is(rerr, os.ErrNotExist) {
			err = errors.Join(err, rerr)
		}
		t.name = ""
	}
	return err
}

// linkTempFile names an O_TMPFILE file. Linking through /proc/self/fd needs
// no privilege; AT_EMPTY_PATH (needs CAP_DAC_READ_SEARCH) covers a missing
// /proc.
func linkTempFile(fd int, dst string) error {
	err := unix.Linkat(unix.AT_FDCWD, fmt.Sprintf("/proc/self/fd/%d", fd), unix.AT_FDCWD, dst, unix.AT_SYMLINK_FOLLOW)
	if errors.Is(err, unix.ENOENT) {
		if _, serr := os.Stat("/proc/self/fd"); serr != nil {
			err = unix.Linkat(fd, "", unix.AT_FDCWD, dst, unix.AT_EMPTY_PATH)
		}
	}
	if err != nil {
		return fmt.Errorf("link into place: %w", err)
	}
	return nil
}

// renameNoReplace renames old to new unless new exists (EEXIST then).
func renameNoReplace(old, new string) error {
	err := unix.Renameat2(unix.AT_FDCWD, old, unix.AT_FDCWD, new, unix.RENAME_NOREPLACE)
	if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOSYS) {
		// The filesystem has no RENAME_NOREPLACE: link fails on an
		// existing name just the same, then drop the old name.
		if err = unix.Link(old, new); err == nil {
			err = unix.Unlink(old)
		}
	}
	if err != nil {
		return fmt.Errorf("rename %s to %s: %w", old, new, err)
	}
	return nil
}

// removeAndSync undoes a file that was already given its name.
func removeAndSync(path string) error {
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return syncDir(filepath.Dir(path))
}

// CleanPartials removes what an interrupted copy into dir can leave behind
// (only on filesystems without O_TMPFILE, where the copy uses a named
// temporary file). The store calls it when it opens a VM directory.
func CleanPartials(dir string) error {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("clean partial copies in %s: %w", dir, err)
	}
	removed := false
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), ".") && strings.Contains(e.Name(), partialMarker) && e.Type().IsRegular() {
			if err := os.Remove(filepath.Join(dir, e.Name())); err != nil && !errors.Is(err, os.ErrNotExist) {
				return fmt.Errorf("clean partial copies in %s: %w", dir, err)
			}
			removed = true
		}
	}
	if removed {
		return syncDir(dir)
	}
	return nil
}
