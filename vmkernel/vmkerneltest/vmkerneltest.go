// Package vmkerneltest makes small Linux bzImage fixtures for the tests of
// code that handles VM kernels (package vmkernel and its users).
package vmkerneltest

import (
	"bytes"
	"compress/gzip"
	"encoding/binary"

	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"
)

// ELF is a stand-in kernel image: the ELF magic, then text repeated n
// times.
func ELF(text string, n int) []byte {
	return append([]byte("\x7fELF"), bytes.Repeat([]byte(text), n)...)
}

// BzImage wraps a compressed payload in a minimal boot-protocol 2.15
// header with one setup sector, as Linux's build lays a bzImage out.
func BzImage(payload []byte) []byte {
	img := make([]byte, 2*512)
	img[0x1f1] = 1
	copy(img[0x202:], "HdrS")
	binary.LittleEndian.PutUint16(img[0x206:], 0x020f)
	binary.LittleEndian.PutUint32(img[0x248:], 0)
	binary.LittleEndian.PutUint32(img[0x24c:], uint32(len(payload)))
	return append(img, payload...)
}

// WithSize appends the unpacked size n to a payload, as Linux's build does
// after xz and zstd data.
func WithSize(b []byte, n int64) []byte {
	return binary.LittleEndian.AppendUint32(append([]byte(nil), b...), uint32(n))
}

// Gzip is b as a gzip payload (whose trailer ends with the size).
func Gzip(b []byte) []byte {
	var buf bytes.Buffer
	w, _ := gzip.NewWriterLevel(&buf, gzip.BestCompression)
	w.Write(b)
	w.Close()
	return buf.Bytes()
}

// Zstd is b as a zstd payload.
func Zstd(b []byte) []byte {
	w, err := zstd.NewWriter(nil)
	if err != nil {
		panic(err)
	}
	return WithSize(w.EncodeAll(b, nil), int64(len(b)))
}

// Xz is b as an xz payload (CRC32 check, 1 MiB dictionary).
func Xz(b []byte) []byte {
	var buf bytes.Buffer
	w, err := xz.WriterConfig{DictCap: 1 << 20, CheckSum: xz.CRC32}.NewWriter(&buf)
	if err != nil {
		panic(err)
	}
	w.Write(b)
	if err := w.Close(); err != nil {
		panic(err)
	}
	return WithSize(buf.Bytes(), int64(len(b)))
}
