package main

import (
	"context"
	"fmt"
	"os"

	"golang.org/x/sys/unix"

	"github.com/qvm-project/qvm/xenstore"
)

// runBlockHook is the hotplug script libxl runs in dom0 for a VM disk that
// dom0's block backend serves from a block device (qvm puts file images
// on loop devices first): installed as /etc/xen/scripts/block-qvm, a link
// to qvm. `block-qvm add|remove`, with the backend's xenstore directory in
// $XENBUS_PATH. On add it tells blkback which device to open, as Xen's own
// block script does for "phy:" disks; on remove there is nothing to undo
// (the loop device detaches itself once blkback lets go).
func runBlockHook(ctx context.Context, a *app, args []string) error {
	if len(args) < 1 {
		return usagef("usage: block-qvm add|remove (run by libxl, with $XENBUS_PATH set)")
	}
	backend := os.Getenv("XENBUS_PATH")
	if backend == "" {
		return usagef("$XENBUS_PATH must be set (this is libxl's hotplug script)")
	}
	switch args[0] {
	case "remove", "offline":
		return nil
	case "add", "online":
	default:
		return usagef("unknown action %q: want add or remove", args[0])
	}
	xs, err := xenstore.Dial(ctx)
	if err != nil {
		return fmt.Errorf("connect to xenstored: %w", err)
	}
	defer xs.Close()
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
