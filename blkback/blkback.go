// Package blkback is dom0's part of serving a VM disk with the kernel's
// block backend (xen-blkback): the hotplug step libxl runs for each disk,
// which tells blkback which block device to open. qvm puts its file
// images on loop devices first, so blkback always gets a block device.
package blkback

import (
	"context"
	"errors"
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/qvm-project/qvm/xenstore"
)

// ErrUnknownAction is returned (wrapped) for an action Hotplug does not know.
var ErrUnknownAction = errors.New("unknown hotplug action")

// Hotplug runs libxl's hotplug step for the disk whose backend directory
// is backend: on "add" (or "online") it gives blkback the device named in
// the directory's "params" key (which libxl writes from dom0's
// configuration; the guest cannot write there) as physical-device, as
// Xen's own block script does for "phy:" disks, and reports it connected.
// On "remove" (or "offline") there is nothing to undo: a loop device
// detaches itself once blkback lets go.
func Hotplug(ctx context.Context, xs *xenstore.Client, action, backend string) error {
	switch action {
	case "remove", "offline":
		return nil
	case "add", "online":
	default:
		return fmt.Errorf("%w %q: want add or remove", ErrUnknownAction, action)
	}
	dev, err := xs.ReadString(ctx, backend+"/params")
	if err != nil {
		return fmt.Errorf("%s: the disk's device: %w", backend, err)
	}
	var st unix.Stat_t
	if err := unix.Stat(dev, &st); err != nil {
		return fmt.Errorf("%s: device %s: %w", backend, dev, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFBLK {
		return fmt.Errorf("%s: %s is not a block device", backend, dev)
	}
	b := xs.Batch()
	b.Write(backend+"/physical-device", []byte(fmt.Sprintf("%x:%x", unix.Major(st.Rdev), unix.Minor(st.Rdev))))
	b.Write(backend+"/physical-device-path", []byte(dev))
	b.Write(backend+"/hotplug-status", []byte("connected"))
	return b.Run(ctx)
}
