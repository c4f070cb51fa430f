// Package loopdev attaches image files to loop block devices, so that
// dom0's block backend (blkback) can serve a VM's file images as its
// disks. Devices are attached with autoclear: the kernel detaches one as
// soon as its last user closes it, so a device whose VM is gone never
// outlives it, even if qvm itself is killed.
//
// Attach marks each file for dom0's udev rules first (package guestdisk),
// so that dom0 never probes what a guest wrote.
package loopdev

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"golang.org/x/sys/unix"

	"github.com/qvm-project/qvm/guestdisk"
)

// Device is an attached loop device held open by this process. Close
// releases the hold; the kernel detaches the device once nobody (no
// backend) has it open any more.
type Device struct {
	// Path is the device node, e.g. /dev/loop3.
	Path string
	// Backing is the image file.
	Backing string
	f       *os.File
}

// Attach attaches image to a free loop device, read-only if ro, after
// marking it as a VM disk (guestdisk.Mark).
func Attach(ctx context.Context, image string, ro bool) (*Device, error) {
	mode := os.O_RDWR
	if ro {
		mode = os.O_RDONLY
	}
	backing, err := os.OpenFile(image, mode, 0)
	if err != nil {
		return nil, fmt.Errorf("attach %s to a loop device: %w", image, err)
	}
	defer backing.Close()
	// The mark must be there for the uevent LOOP_CONFIGURE sends.
	if err := guestdisk.Mark(backing); err != nil {
		return nil, fmt.Errorf("attach %s to a loop device: %w", image, err)
	}
	ctl, err := os.OpenFile("/dev/loop-control", os.O_RDWR, 0)
	if err != nil {
		return nil, fmt.Errorf("attach %s to a loop device: %w (is the loop module loaded?)", image, err)
	}
	defer ctl.Close()
	// Another process may take the free device between GET_FREE and
	// CONFIGURE: then ask again.
	for attempt := 0; ; attempt++ {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		n, err := unix.IoctlRetInt(int(ctl.Fd()), unix.LOOP_CTL_GET_FREE)
		if err != nil {
			return nil, fmt.Errorf("attach %s: no free loop device: %w", image, err)
		}
		path := fmt.Sprintf("/dev/loop%d", n)
		dev, err := openNode(path, mode)
		if err != nil {
			return nil, fmt.Errorf("attach %s: %w", image, err)
		}
		cfg := unix.LoopConfig{Fd: uint32(backing.Fd())}
		cfg.Info.Flags = unix.LO_FLAGS_AUTOCLEAR
		if ro {
			cfg.Info.Flags |= unix.LO_FLAGS_READ_ONLY
		}
		copy(cfg.Info.File_name[:], image)
		err = unix.IoctlLoopConfigure(int(dev.Fd()), &cfg)
		if err == nil {
			return &Device{Path: path, Backing: image, f: dev}, nil
		}
		dev.Close()
		if errors.Is(err, unix.EBUSY) && attempt < 20 {
			continue
		}
		return nil, fmt.Errorf("attach %s to %s: %w", image, path, err)
	}
}

// openNode opens a loop device node, waiting briefly for udev-less
// systems where the kernel creates it in devtmpfs a moment later.
func openNode(path string, mode int) (*os.File, error) {
	var err error
	for i := 0; i < 50; i++ {
		var f *os.File
		if f, err = os.OpenFile(path, mode, 0); err == nil {
			return f, nil
		}
		if !errors.Is(err, os.ErrNotExist) {
			return nil, err
		}
		time.Sleep(10 * time.Millisecond)
	}
	return nil, err
}

// Close drops this process's hold on the device.
func (d *Device) Close() error {
	if d == nil || d.f == nil {
		return nil
	}
	err := d.f.Close()
	d.f = nil
	return err
}

// BackingFile reports the file a loop device serves ("" when detached),
// as the kernel keeps its name: at most 63 bytes.
func BackingFile(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	info, err := unix.IoctlLoopGetStatus64(int(f.Fd()))
	if errors.Is(err, unix.ENXIO) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	return unix.ByteSliceToString(info.File_name[:]), nil
}

// Backer is a loop device and the identity of the file it serves.
type Backer struct {
	// Path is the device node, e.g. /dev/loop3.
	Path string
	// Dev and Ino identify the backing file (stat's st_dev and st_ino).
	Dev, Ino uint64
}

// Attached lists the loop devices that serve a file, with the file's
// identity (so that a file can be found whatever name it was attached by).
func Attached() ([]Backer, error) {
	ents, err := os.ReadDir("/sys/block")
	if err != nil {
		return nil, fmt.Errorf("list loop devices: %w", err)
	}
	var out []Backer
	for _, e := range ents {
		name := e.Name()
		if len(name) < 5 || name[:4] != "loop" {
			continue
		}
		path := "/dev/" + name
		f, err := os.Open(path)
		if err != nil {
			continue // gone meanwhile, or no node
		}
		info, err := unix.IoctlLoopGetStatus64(int(f.Fd()))
		f.Close()
		if err != nil {
			continue // ENXIO: not attached
		}
		out = append(out, Backer{Path: path, Dev: info.Device, Ino: info.Inode})
	}
	return out, nil
}
