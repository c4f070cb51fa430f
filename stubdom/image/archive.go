package image

import (
	"compress/gzip"
	"fmt"
	"io"
	"os"
	"path"
	"strings"

	"github.com/u-root/u-root/pkg/cpio"

	"github.com/qvm-project/qvm/stubdom"
)

// WriteDom0Archive writes a gzip-compressed cpio archive that holds kernel
// and ramdisk as stubdom.Dir/KernelName and stubdom.Dir/RamdiskName. Their
// contents are compressed already, so it is stored with the fastest level;
// it is compressed at all because the kernel reads an uncompressed archive
// that follows a compressed one only at a 4-byte aligned offset.
func WriteDom0Archive(out, kernel, ramdisk string) error {
	f, err := os.Create(out)
	if err != nil {
		return err
	}
	defer f.Close()
	// The directories are written with the modes dom0 has for them: the
	// kernel applies an archive's mode to a directory that exists.
	var recs []cpio.Record
	d := ""
	for _, el := range strings.Split(stubdom.Dir[1:], "/") {
		d = path.Join(d, el)
		recs = append(recs, cpio.Directory(d, 0o755))
	}
	for _, e := range []struct{ src, name string }{{kernel, stubdom.KernelName}, {ramdisk, stubdom.RamdiskName}} {
		b, err := os.ReadFile(e.src)
		if err != nil {
			return err
		}
		recs = append(recs, cpio.StaticRecord(b, cpio.Info{Name: path.Join(stubdom.Dir[1:], e.name), Mode: cpio.S_IFREG | 0o644}))
	}
	if err := WriteGzipCPIO(f, recs); err != nil {
		return fmt.Errorf("write %s: %w", out, err)
	}
	return f.Close()
}

// WriteGzipCPIO writes recs to w as a newc cpio archive with its trailer,
// compressed with gzip's fastest level (what an initramfs, or an archive
// appended to one, needs).
func WriteGzipCPIO(w io.Writer, recs []cpio.Record) error {
	zw, err := gzip.NewWriterLevel(w, gzip.BestSpeed)
	if err != nil {
		return err
	}
	cw := cpio.Newc.Writer(zw)
	if err := cpio.WriteRecords(cw, recs); err != nil {
		return err
	}
	if err := cpio.WriteTrailer(cw); err != nil {
		return err
	}
	return zw.Close()
}
