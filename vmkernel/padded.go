package vmkernel

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// SectorSize is what a block device's size is a multiple of: a file
// served as a disk (through a loop device) is read up to the last whole
// sector only.
const SectorSize = 512

// PaddedPrefix starts the name of a file's padded copy (see Padded).
const PaddedPrefix = "disc-"

// Padded returns a copy of file (a VM kernel or initramfs), next to it,
// padded with zeros to a whole number of sectors: what an HVM's
// stubdomain reads as a read-only disk, QEMU booting the guest's kernel
// from it (a kernel and a gzip'd initramfs ignore trailing zeros). The
// copy is made once per version of file (it carries file's modification
// time and is checked by it and by its size), written aside, fsynced and
// renamed into place; copies in one directory take turns.
func Padded(ctx context.Context, file string) (string, error) {
	dir, base := filepath.Dir(file), filepath.Base(file)
	out := filepath.Join(dir, PaddedPrefix+base)
	if paddedFresh(file, out) {
		return out, nil
	}
	unlock, err := lockDir(ctx, dir)
	if err != nil {
		return "", err
	}
	defer unlock()
	if paddedFresh(file, out) {
		return out, nil
	}
	src, err := os.Open(file)
	if err != nil {
		return "", fmt.Errorf("disc copy of %s: %w", file, err)
	}
	defer src.Close()
	st, err := src.Stat()
	if err != nil {
		return "", fmt.Errorf("disc copy of %s: %w", file, err)
	}
	tmp, err := os.CreateTemp(dir, "."+PaddedPrefix+base+"-*")
	if err != nil {
		return "", fmt.Errorf("disc copy of %s: %w", file, err)
	}
	defer os.Remove(tmp.Name()) // after the rename, a no-op
	defer tmp.Close()
	if _, err := io.Copy(tmp, src); err != nil {
		return "", fmt.Errorf("disc copy of %s: %w", file, err)
	}
	if err := tmp.Truncate(paddedSize(st.Size())); err != nil {
		return "", fmt.Errorf("disc copy of %s: %w", file, err)
	}
	if err := tmp.Sync(); err != nil {
		return "", fmt.Errorf("disc copy of %s: %w", file, err)
	}
	if err := os.Chtimes(tmp.Name(), st.ModTime(), st.ModTime()); err != nil {
		return "", fmt.Errorf("disc copy of %s: %w", file, err)
	}
	if err := os.Chmod(tmp.Name(), 0o644); err != nil {
		return "", fmt.Errorf("disc copy of %s: %w", file, err)
	}
	if err := os.Rename(tmp.Name(), out); err != nil {
		return "", fmt.Errorf("disc copy of %s: %w", file, err)
	}
	return out, syncDir(dir)
}

// paddedSize rounds n up to whole sectors (at least one).
func paddedSize(n int64) int64 {
	return max(SectorSize, (n+SectorSize-1)/SectorSize*SectorSize)
}

// paddedFresh reports whether out is the padded copy of file as it is now.
func paddedFresh(file, out string) bool {
	s, err := os.Stat(file)
	if err != nil {
		return false
	}
	o, err := os.Stat(out)
	return err == nil && o.Mode().IsRegular() && o.Size() == paddedSize(s.Size()) && o.ModTime().Equal(s.ModTime())
}
