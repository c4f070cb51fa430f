// Package vmkernel unpacks a VM kernel (a Linux bzImage) into the ELF image
// it carries, once, and keeps it next to the kernel, so that starting a VM
// loads the ELF as it is instead of decompressing the kernel every time.
//
// Xen's domain builder does that decompression on every start of a PV or
// PVH guest: for Debian's xz-compressed kernel it is most of what a start
// costs (about 4 of 5 seconds under emulation, see make bench-start).
// The unpacked image is the very ELF the builder would have found inside
// the bzImage, so the guest boots the same kernel.
//
// A kernel is untrusted input (a user installs it): its header's payload
// bounds and the unpacked size it declares are checked before anything is
// decompressed, and decompression streams to disk, stopping at the
// declared size, so a compression bomb costs neither memory nor disk.
//
// The unpacked image is keyed by the content of the kernel it came from:
// its SHA-256 is recorded beside it (SourceName), together with the
// kernel's identity (device, inode, size, modification and change time) as
// a cache, so that Fresh does not hash the kernel at every start. The
// change time cannot be set from user space (every write, rename, chmod or
// utimes sets it to the current time), so a kernel replaced by another,
// even with the same size and modification time, no longer matches the
// cache and is hashed; only a kernel that changed within the timestamp tick
// in which the record was written is hashed every time ("racy", as git
// calls it) until the next Ensure records it anew.
//
// Both files are written whole or not at all (a temporary file, fsynced,
// renamed, the directory fsynced), so a power cut leaves either the old
// pair, no record (the kernel is unpacked again) or the new pair.
package vmkernel

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/klauspost/compress/zstd"
	"github.com/therootcompany/xz"
	"golang.org/x/sys/unix"
)

// UnpackedName is the file Ensure writes next to a kernel.
const UnpackedName = "vmlinux"

// SourceName is the record, next to the unpacked image, of the kernel it
// was made from.
const SourceName = UnpackedName + ".source"

// MaxUnpacked bounds the size of an unpacked kernel: a Linux vmlinux is
// tens of MiB; a kernel declaring more is refused before decompression.
const MaxUnpacked = 256 << 20

// minUnpacked is the smallest image that can hold an ELF64 header.
const minUnpacked = 64

// maxKernel bounds the size of a bzImage (they are a few MiB; the kernel
// is hashed whole).
const maxKernel = 256 << 20

// Decompressor memory bounds. gzip needs 32 KiB; Linux's build compresses
// with xz --lzma2=dict=32MiB and zstd -22 --ultra (a 128 MiB window).
const (
	maxXzDict     = 64 << 20
	maxZstdWindow = 128 << 20
)

// ErrNotBzImage says that a file is not a Linux bzImage with a payload
// this package can unpack (boot protocol 2.08 or later, gzip, xz or zstd).
var ErrNotBzImage = errors.New("not a bzImage with a gzip, xz or zstd payload")

// Payload is where a bzImage's compressed kernel lies.
type Payload struct {
	// Offset and Length locate the compressed data in the file.
	Offset, Length int64
	// Format is "gzip", "xz" or "zstd".
	Format string
	// Unpacked is the size of the ELF image the payload declares (Linux's
	// build appends it to every payload; gzip's own trailer ends with it).
	Unpacked int64
}

// ParseHeader reads the boot-protocol header at the start of a bzImage and
// returns where its payload is. hdr must hold at least the first 0x250
// bytes; size is the file's size.
func ParseHeader(hdr []byte, size int64) (Payload, error) {
	if len(hdr) < 0x250 || string(hdr[0x202:0x206]) != "HdrS" {
		return Payload{}, fmt.Errorf("%w: no boot-protocol header", ErrNotBzImage)
	}
	if v := binary.LittleEndian.Uint16(hdr[0x206:]); v < 0x208 {
		return Payload{}, fmt.Errorf("%w: boot protocol %d.%02d has no payload fields", ErrNotBzImage, v>>8, v&0xff)
	}
	setup := int64(hdr[0x1f1])
	if setup == 0 {
		setup = 4
	}
	p := Payload{
		Offset: (setup+1)*512 + int64(binary.LittleEndian.Uint32(hdr[0x248:])),
		Length: int64(binary.LittleEndian.Uint32(hdr[0x24c:])),
	}
	if p.Length < 8 || p.Offset < 0x250 || p.Offset > size || p.Length > size-p.Offset {
		return Payload{}, fmt.Errorf("%w: payload at %d+%d outside the %d-byte file", ErrNotBzImage, p.Offset, p.Length, size)
	}
	return p, nil
}

// checkPayload completes p from the payload's first bytes (head, at least
// 6) and its last 4 (tail): its format and declared unpacked size, which
// must be between 64 bytes and MaxUnpacked.
func checkPayload(p *Payload, head, tail []byte) error {
	if len(head) < 6 || len(tail) != 4 {
		return fmt.Errorf("%w: payload of %d bytes is too short", ErrNotBzImage, p.Length)
	}
	p.Format = format(head)
	if p.Format == "" {
		return fmt.Errorf("%w: payload starts with % x", ErrNotBzImage, head[:4])
	}
	p.Unpacked = int64(binary.LittleEndian.Uint32(tail))
	if p.Unpacked > MaxUnpacked {
		return fmt.Errorf("%s payload declares %d MiB unpacked, more than the %d MiB a kernel may have", p.Format, p.Unpacked>>20, MaxUnpacked>>20)
	}
	if p.Unpacked < minUnpacked {
		return fmt.Errorf("%s payload declares %d bytes unpacked, too few for an ELF image", p.Format, p.Unpacked)
	}
	return nil
}

// format names a payload's compression from its first bytes.
func format(b []byte) string {
	switch {
	case bytes.HasPrefix(b, []byte{0x1f, 0x8b}):
		return "gzip"
	case bytes.HasPrefix(b, []byte{0xfd, '7', 'z', 'X', 'Z', 0}):
		return "xz"
	case bytes.HasPrefix(b, []byte{0x28, 0xb5, 0x2f, 0xfd}):
		return "zstd"
	}
	return ""
}

// Inspect reads and checks the header and the payload bounds of the
// bzImage r (size bytes) without decompressing anything.
func Inspect(r io.ReaderAt, size int64) (Payload, error) {
	hdr := make([]byte, 0x250)
	if n, err := r.ReadAt(hdr, 0); n < len(hdr) {
		if err == nil || errors.Is(err, io.EOF) {
			return Payload{}, fmt.Errorf("%w: %d bytes, too short for a boot-protocol header", ErrNotBzImage, size)
		}
		return Payload{}, err
	}
	p, err := ParseHeader(hdr, size)
	if err != nil {
		return Payload{}, err
	}
	head, tail := make([]byte, 6), make([]byte, 4)
	if _, err := r.ReadAt(head, p.Offset); err != nil {
		return Payload{}, fmt.Errorf("read payload: %w", err)
	}
	if _, err := r.ReadAt(tail, p.Offset+p.Length-4); err != nil {
		return Payload{}, fmt.Errorf("read payload: %w", err)
	}
	return p, checkPayload(&p, head, tail)
}

// Unpack writes the ELF image inside the bzImage r (size bytes) to w,
// streaming: it holds no more than the decompressor's window in memory,
// and stops with an error as soon as the output is not an ELF image or
// grows past the size the payload declares. It returns the bytes written.
func Unpack(ctx context.Context, w io.Writer, r io.ReaderAt, size int64) (int64, error) {
	p, err := Inspect(r, size)
	if err != nil {
		return 0, err
	}
	var dec io.Reader
	switch p.Format {
	case "gzip":
		zr, err := gzip.NewReader(io.NewSectionReader(r, p.Offset, p.Length))
		if err != nil {
			return 0, fmt.Errorf("gzip payload: %w", err)
		}
		zr.Multistream(false)
		dec = zr
	case "xz":
		zr, err := xz.NewReader(io.NewSectionReader(r, p.Offset, p.Length-4), maxXzDict)
		if err != nil {
			return 0, fmt.Errorf("xz payload: %w", err)
		}
		dec = zr
	case "zstd":
		zr, err := zstd.NewReader(io.NewSectionReader(r, p.Offset, p.Length-4),
			zstd.WithDecoderConcurrency(1), zstd.WithDecoderLowmem(true),
			zstd.WithDecoderMaxWindow(maxZstdWindow), zstd.WithDecoderMaxMemory(MaxUnpacked))
		if err != nil {
			return 0, fmt.Errorf("zstd payload: %w", err)
		}
		defer zr.Close()
		dec = zr
	}
	out := &elfWriter{ctx: ctx, w: w, limit: p.Unpacked}
	// One byte past the declared size is read to see the stream end there
	// (and the decompressor verify its checksum).
	n, err := io.CopyBuffer(out, io.LimitReader(dec, p.Unpacked+1), make([]byte, 64<<10))
	switch {
	case errors.Is(err, errTooLong):
		return n, fmt.Errorf("%s payload unpacks to more than the %d bytes it declares", p.Format, p.Unpacked)
	case errors.Is(err, errNotELF):
		return n, fmt.Errorf("%s payload is not an ELF image", p.Format)
	case err != nil && ctx.Err() != nil:
		return n, fmt.Errorf("unpack %s payload: %w", p.Format, ctx.Err())
	case err != nil:
		return n, fmt.Errorf("%s payload: %w", p.Format, err)
	case n != p.Unpacked:
		return n, fmt.Errorf("%s payload unpacked to %d bytes, the image says %d", p.Format, n, p.Unpacked)
	}
	return n, nil
}

var (
	errTooLong = errors.New("output longer than declared")
	errNotELF  = errors.New("output is not an ELF image")
)

// elfWriter passes at most limit bytes on to w, refuses output that does
// not start with the ELF magic, and stops when ctx ends.
type elfWriter struct {
	ctx   context.Context
	w     io.Writer
	n     int64
	limit int64
}

func (e *elfWriter) Write(b []byte) (int, error) {
	if err := e.ctx.Err(); err != nil {
		return 0, err
	}
	if e.n+int64(len(b)) > e.limit {
		return 0, errTooLong
	}
	const magic = "\x7fELF"
	if e.n < int64(len(magic)) {
		m := magic[e.n:]
		if len(b) < len(m) {
			m = m[:len(b)]
		}
		if !bytes.HasPrefix(b, []byte(m)) {
			return 0, errNotELF
		}
	}
	n, err := e.w.Write(b)
	e.n += int64(n)
	return n, err
}

// source is the record of the kernel an unpacked image was made from.
type source struct {
	// SHA256 is the hash of the whole kernel file.
	SHA256 string `json:"sha256"`
	// Identity is the kernel's file as it was when hashed.
	Identity identity `json:"identity"`
}

// identity is what the file system says about a kernel file.
type identity struct {
	Dev   uint64 `json:"dev"`
	Ino   uint64 `json:"ino"`
	Size  int64  `json:"size"`
	Mtime int64  `json:"mtime_ns"`
	Ctime int64  `json:"ctime_ns"`
}

func identityOf(fi fs.FileInfo) identity {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return identity{Size: fi.Size(), Mtime: fi.ModTime().UnixNano()}
	}
	return identity{
		Dev: st.Dev, Ino: st.Ino, Size: st.Size,
		Mtime: time.Unix(st.Mtim.Unix()).UnixNano(),
		Ctime: time.Unix(st.Ctim.Unix()).UnixNano(),
	}
}

// readSource reads the record beside the unpacked image in dir and the
// time it was written.
func readSource(dir string) (source, time.Time, error) {
	f, err := os.Open(filepath.Join(dir, SourceName))
	if err != nil {
		return source{}, time.Time{}, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return source{}, time.Time{}, err
	}
	var s source
	if err := json.NewDecoder(io.LimitReader(f, 4096)).Decode(&s); err != nil {
		return source{}, time.Time{}, fmt.Errorf("%s: %w", f.Name(), err)
	}
	return s, fi.ModTime(), nil
}

// hashFile returns the SHA-256 of the first size bytes of f.
func hashFile(f io.ReaderAt, size int64) (string, error) {
	h := sha256.New()
	if _, err := io.Copy(h, io.NewSectionReader(f, 0, size)); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// Fresh returns the unpacked image of kernel (a vmlinuz file) if one was
// made from the kernel as it is now, else "".
func Fresh(kernel string) string {
	u, _, _ := fresh(kernel)
	return u
}

// fresh is Fresh, also saying whether the record's identity cache still
// holds (else the kernel was hashed) and returning the kernel's identity.
func fresh(kernel string) (unpacked string, cached bool, id identity) {
	dir := filepath.Dir(kernel)
	u := filepath.Join(dir, UnpackedName)
	if fi, err := os.Lstat(u); err != nil || !fi.Mode().IsRegular() {
		return "", false, id
	}
	rec, written, err := readSource(dir)
	if err != nil {
		return "", false, id
	}
	f, err := os.Open(kernel)
	if err != nil {
		return "", false, id
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil || !fi.Mode().IsRegular() || fi.Size() > maxKernel {
		return "", false, id
	}
	id = identityOf(fi)
	// A kernel changed after the record was written has a later change
	// time than the record's; one changed in the same tick is hashed.
	if id == rec.Identity && id.Ctime < written.UnixNano() {
		return u, true, id
	}
	if sum, err := hashFile(f, fi.Size()); err == nil && sum == rec.SHA256 {
		return u, false, id
	}
	return "", false, id
}

// Ensure makes the unpacked image of kernel next to it unless a fresh one
// is there, and returns its path. The image and its record are each
// written aside, fsynced and renamed into place, and the directory
// fsynced; unpacks of kernels in the same directory take turns.
func Ensure(ctx context.Context, kernel string) (string, error) {
	if u, cached, _ := fresh(kernel); u != "" && cached {
		return u, nil
	}
	dir := filepath.Dir(kernel)
	unlock, err := lockDir(ctx, dir)
	if err != nil {
		return "", err
	}
	defer unlock()
	// Temporary files of an unpack that was killed.
	for _, glob := range []string{".vmlinux-*", "." + SourceName + "-*"} {
		stale, _ := filepath.Glob(filepath.Join(dir, glob))
		for _, f := range stale {
			os.Remove(f)
		}
	}
	u, cached, id := fresh(kernel)
	if u != "" && cached {
		return u, nil
	}
	if u != "" {
		// Same content, new file (a reinstall, a racy record): record the
		// kernel's identity so the next start need not hash it.
		rec, _, err := readSource(dir)
		if err == nil {
			rec.Identity = id
			err = writeSource(dir, rec)
		}
		return u, err
	}
	f, err := os.Open(kernel)
	if err != nil {
		return "", err
	}
	defer f.Close()
	before, err := f.Stat()
	if err != nil {
		return "", err
	}
	if !before.Mode().IsRegular() || before.Size() > maxKernel {
		return "", fmt.Errorf("kernel %s: %w: not a regular file of at most %d MiB", kernel, ErrNotBzImage, maxKernel>>20)
	}
	sum, err := hashFile(f, before.Size())
	if err != nil {
		return "", fmt.Errorf("read kernel %s: %w", kernel, err)
	}
	tmp, err := os.CreateTemp(dir, ".vmlinux-*")
	if err != nil {
		return "", fmt.Errorf("unpack kernel %s: %w", kernel, err)
	}
	defer os.Remove(tmp.Name())
	defer tmp.Close()
	if _, err := Unpack(ctx, tmp, f, before.Size()); err != nil {
		return "", fmt.Errorf("kernel %s: %w", kernel, err)
	}
	if err := tmp.Chmod(0o644); err != nil {
		return "", fmt.Errorf("unpack kernel %s: %w", kernel, err)
	}
	if err := tmp.Sync(); err != nil {
		return "", fmt.Errorf("unpack kernel %s: sync %s: %w", kernel, tmp.Name(), err)
	}
	if err := tmp.Close(); err != nil {
		return "", fmt.Errorf("unpack kernel %s: %w", kernel, err)
	}
	after, err := f.Stat()
	if err != nil {
		return "", err
	}
	if identityOf(after) != identityOf(before) {
		return "", fmt.Errorf("kernel %s changed while it was unpacked; start the VM again", kernel)
	}
	// The old record goes (durably) before the new image comes, so no
	// crash can pair an old record with a new image.
	if err := os.Remove(filepath.Join(dir, SourceName)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("unpack kernel %s: %w", kernel, err)
	}
	if err := syncDir(dir); err != nil {
		return "", err
	}
	u = filepath.Join(dir, UnpackedName)
	if err := os.Rename(tmp.Name(), u); err != nil {
		return "", fmt.Errorf("unpack kernel %s: %w", kernel, err)
	}
	if err := writeSource(dir, source{SHA256: sum, Identity: identityOf(before)}); err != nil {
		return "", err
	}
	return u, nil
}

// writeSource replaces the record in dir durably (and with it the rename
// of the image before it).
func writeSource(dir string, rec source) error {
	data, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(dir, "."+SourceName+"-*")
	if err != nil {
		return fmt.Errorf("record unpacked kernel: %w", err)
	}
	defer os.Remove(tmp.Name())
	defer tmp.Close()
	if _, err := tmp.Write(append(data, '\n')); err != nil {
		return fmt.Errorf("record unpacked kernel %s: %w", tmp.Name(), err)
	}
	if err := tmp.Chmod(0o644); err != nil {
		return fmt.Errorf("record unpacked kernel %s: %w", tmp.Name(), err)
	}
	if err := tmp.Sync(); err != nil {
		return fmt.Errorf("record unpacked kernel: sync %s: %w", tmp.Name(), err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("record unpacked kernel %s: %w", tmp.Name(), err)
	}
	if err := os.Rename(tmp.Name(), filepath.Join(dir, SourceName)); err != nil {
		return fmt.Errorf("record unpacked kernel: %w", err)
	}
	return syncDir(dir)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("sync directory %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync directory %s: %w", dir, err)
	}
	return nil
}

// lockDir takes an exclusive flock on dir, waiting until ctx ends.
func lockDir(ctx context.Context, dir string) (unlock func(), err error) {
	d, err := os.Open(dir)
	if err != nil {
		return nil, fmt.Errorf("lock kernel directory: %w", err)
	}
	for {
		err := unix.Flock(int(d.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			return func() { d.Close() }, nil
		}
		if !errors.Is(err, unix.EWOULDBLOCK) {
			d.Close()
			return nil, fmt.Errorf("lock kernel directory %s: %w", dir, err)
		}
		select {
		case <-ctx.Done():
			d.Close()
			return nil, fmt.Errorf("waiting for another unpack in %s: %w", dir, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}
