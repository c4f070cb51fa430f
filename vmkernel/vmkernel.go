// Package vmkernel unpacks a VM kernel (a Linux bzImage) into the ELF image
// it carries, once, and keeps it next to the kernel, so that starting a VM
// loads the ELF as it is instead of decompressing the kernel every time.
//
// Xen's domain builder does that decompression on every start of a PV or
// PVH guest: for Debian's xz-compressed kernel it is most of what a start
// costs (about 4 of 5 seconds under emulation, see make bench-start).
// The unpacked image is the very ELF the builder would have found inside
// the bzImage, so the guest boots the same kernel.
package vmkernel

import (
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/klauspost/compress/zstd"
	"github.com/therootcompany/xz"
)

// UnpackedName is the file Ensure writes next to a kernel.
const UnpackedName = "vmlinux"

// maxUnpacked bounds the size of an unpacked kernel (a Linux vmlinux is
// tens of MiB; this stops a hostile image from filling the disk).
const maxUnpacked = 512 << 20

// ErrNotBzImage says that a file is not a Linux bzImage with a payload
// this package can unpack (boot protocol 2.08 or later, gzip, xz or zstd).
var ErrNotBzImage = errors.New("not a bzImage with a gzip, xz or zstd payload")

// Payload is where a bzImage's compressed kernel lies.
type Payload struct {
	// Offset and Length locate the compressed data in the file.
	Offset, Length int64
	// Format is "gzip", "xz" or "zstd".
	Format string
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

// Unpack returns the ELF image inside the bzImage data.
func Unpack(data []byte) ([]byte, error) {
	p, err := ParseHeader(data, int64(len(data)))
	if err != nil {
		return nil, err
	}
	payload := data[p.Offset : p.Offset+p.Length]
	p.Format = format(payload)
	// Linux's build appends the unpacked size (32-bit little endian) to
	// every payload; gzip's own trailer ends with the same number.
	want := int64(binary.LittleEndian.Uint32(payload[len(payload)-4:]))
	var r io.Reader
	switch p.Format {
	case "gzip":
		zr, err := gzip.NewReader(bytes.NewReader(payload))
		if err != nil {
			return nil, fmt.Errorf("gzip payload: %w", err)
		}
		zr.Multistream(false)
		r = zr
	case "xz":
		zr, err := xz.NewReader(bytes.NewReader(payload[:len(payload)-4]), 0)
		if err != nil {
			return nil, fmt.Errorf("xz payload: %w", err)
		}
		r = zr
	case "zstd":
		zr, err := zstd.NewReader(bytes.NewReader(payload[:len(payload)-4]), zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxMemory(maxUnpacked))
		if err != nil {
			return nil, fmt.Errorf("zstd payload: %w", err)
		}
		defer zr.Close()
		r = zr
	default:
		return nil, fmt.Errorf("%w: payload starts with % x", ErrNotBzImage, payload[:4])
	}
	out, err := io.ReadAll(io.LimitReader(r, maxUnpacked+1))
	if err != nil {
		return nil, fmt.Errorf("%s payload: %w", p.Format, err)
	}
	if len(out) > maxUnpacked {
		return nil, fmt.Errorf("%s payload unpacks to more than %d MiB", p.Format, maxUnpacked>>20)
	}
	if int64(len(out)) != want {
		return nil, fmt.Errorf("%s payload unpacked to %d bytes, the image says %d", p.Format, len(out), want)
	}
	if !bytes.HasPrefix(out, []byte("\x7fELF")) {
		return nil, fmt.Errorf("%s payload is not an ELF image", p.Format)
	}
	return out, nil
}

// Fresh returns the unpacked image of kernel (a vmlinuz file) if one was
// made from the kernel as it is now (same modification time), else "".
func Fresh(kernel string) string {
	k, err := os.Stat(kernel)
	if err != nil {
		return ""
	}
	u := filepath.Join(filepath.Dir(kernel), UnpackedName)
	if fi, err := os.Stat(u); err == nil && fi.Mode().IsRegular() && fi.ModTime().Equal(k.ModTime()) {
		return u
	}
	return ""
}

// Ensure makes the unpacked image of kernel next to it unless a fresh one
// is there, and returns its path. The file appears whole or not at all
// (written aside, then renamed), and carries the kernel's modification
// time, which is how Fresh knows it matches.
func Ensure(kernel string) (string, error) {
	if u := Fresh(kernel); u != "" {
		return u, nil
	}
	data, err := os.ReadFile(kernel)
	if err != nil {
		return "", err
	}
	k, err := os.Stat(kernel)
	if err != nil {
		return "", err
	}
	elf, err := Unpack(data)
	if err != nil {
		return "", fmt.Errorf("kernel %s: %w", kernel, err)
	}
	dir := filepath.Dir(kernel)
	tmp, err := os.CreateTemp(dir, ".vmlinux-*")
	if err != nil {
		return "", err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(elf); err != nil {
		tmp.Close()
		return "", fmt.Errorf("write %s: %w", tmp.Name(), err)
	}
	if err := tmp.Chmod(0o644); err != nil {
		tmp.Close()
		return "", err
	}
	if err := tmp.Close(); err != nil {
		return "", err
	}
	if err := os.Chtimes(tmp.Name(), k.ModTime(), k.ModTime()); err != nil {
		return "", err
	}
	u := filepath.Join(dir, UnpackedName)
	if err := os.Rename(tmp.Name(), u); err != nil {
		return "", err
	}
	return u, nil
}
