package volume

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
)

// Reader reads the opened image from its start, for ImportData.
func (im *Import) Reader() io.Reader { return io.NewSectionReader(im.f, 0, im.Size) }

// importBlock is how ImportData reads; a block of zeros is not written,
// so the new image keeps the holes of the data.
const importBlock = 64 * KiB

// ImportData replaces the data of one of vm's saved volumes with what src
// holds (qvm-volume import VM:VOLUME PATH): the new image has size bytes,
// the data at its start and zeros (holes) after it. Only a volume whose
// data is kept (save_on_stop: root of a TemplateVM or StandaloneVM, a
// private that is not a snapshot) takes an import, as in Qubes; data
// larger than size is refused. The old image stays until the new one is
// complete and durable, then the new one replaces it in one rename; on
// error or cancellation (ctx is checked between blocks) the volume is as
// it was. The caller makes sure the VM is not running.
func ImportData(ctx context.Context, vm VM, volume string, src io.Reader, size int64) error {
	spec, err := specOf(vm.Class, volume)
	if err != nil {
		return fmt.Errorf("import into %s:%s: %w", vm.Name, volume, err)
	}
	if !spec.SaveOnStop {
		why := "it is recreated empty at each start"
		if spec.SnapOnStart {
			why = "it is a snapshot of its template's volume, taken at each start"
		}
		if spec.Name == Kernel {
			why = "it is the VM's kernel, not an image"
		}
		return fmt.Errorf("cannot import into save_on_stop=False volume %s:%s: %s", vm.Name, volume, why)
	}
	if err := checkSize(size); err != nil {
		return fmt.Errorf("import into %s:%s: %w", vm.Name, volume, err)
	}
	dst := ImagePath(vm.Dir, volume)
	if _, err := os.Stat(dst); err != nil {
		return fmt.Errorf("import into %s:%s: %w", vm.Name, volume, err)
	}
	// A named temporary file (CleanPartials removes it after a crash), so
	// that it can replace the old image by rename.
	tmp, err := newTempFile(vm.Dir, ImageName(volume), true)
	if err != nil {
		return fmt.Errorf("import into %s:%s: %w", vm.Name, volume, err)
	}
	fail := func(err error) error {
		return errors.Join(fmt.Errorf("import into %s:%s: %w", vm.Name, volume, err), tmp.discard())
	}
	n, err := copyIntoSparse(ctx, tmp.f, src, size)
	if err != nil {
		return fail(err)
	}
	if n > size {
		return fail(fmt.Errorf("the data is larger than the %d bytes of the volume: give a larger --size (or leave out --no-resize)", size))
	}
	if err := tmp.f.Truncate(size); err != nil {
		return fail(err)
	}
	if err := tmp.f.Sync(); err != nil {
		return fail(fmt.Errorf("fsync: %w", err))
	}
	if err := os.Rename(tmp.name, dst); err != nil {
		return fail(err)
	}
	tmp.name = ""
	tmp.f.Close()
	if err := syncDir(vm.Dir); err != nil {
		return fmt.Errorf("import into %s:%s: %w", vm.Name, volume, err)
	}
	return nil
}

// copyIntoSparse copies src into f, seeking over blocks of zeros, and stops
// reading once more than limit bytes came (it returns limit+1 then).
func copyIntoSparse(ctx context.Context, f *os.File, src io.Reader, limit int64) (int64, error) {
	buf := make([]byte, importBlock)
	zero := make([]byte, importBlock)
	var off int64
	for {
		if err := ctx.Err(); err != nil {
			return off, err
		}
		n, err := io.ReadFull(src, buf)
		if n > 0 {
			if off+int64(n) > limit {
				return limit + 1, nil
			}
			if !bytes.Equal(buf[:n], zero[:n]) {
				if _, werr := f.WriteAt(buf[:n], off); werr != nil {
					return off, werr
				}
			}
			off += int64(n)
		}
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return off, nil
		}
		if err != nil {
			return off, fmt.Errorf("read the data: %w", err)
		}
	}
}
