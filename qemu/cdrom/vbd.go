package cdrom

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"syscall"
	"time"

	"github.com/qvm-project/qvm/blkback"
	"github.com/qvm-project/qvm/loopdev"
	"github.com/qvm-project/qvm/xenstore"
)

// XenstoreDisks attaches an image to a stubdomain as a read-only disk
// served by dom0's block backend (blkback) from an autoclear loop device,
// by writing the backend and frontend entries in xenstore as libxl does
// for a "phy" disk.
//
// libxl's own libxl_device_disk_add cannot do this in Xen 4.17: it updates
// the domain's stored configuration, which libxl keeps for guests but not
// for their stubdomains, and fails ("unable to add device"). The entries
// are also recorded under /libxl/<domid>/device, where libxl finds the
// devices to remove when it destroys the stubdomain, so a disc still in
// the drive when the guest goes is cleaned up with it.
type XenstoreDisks struct {
	XS *xenstore.Client
}

// Xenbus states (xen/include/public/io/xenbus.h).
const (
	stateInitialising = "1"
	stateConnected    = "4"
	stateClosing      = "5"
	stateClosed       = "6"
)

// paths of a vbd of domain domid with device number devid.
func vbdPaths(domid uint32, devid int) (fe, be, lp string) {
	p := blkback.VbdPaths(domid, devid)
	return p.Frontend, p.Backend, p.Record
}

// Attach serves image read-only to domain domid as block device vdev and
// waits until the domain's frontend has connected.
func (x XenstoreDisks) Attach(ctx context.Context, domid uint32, vdev, image string) error {
	devid := blkback.VdevNumber(vdev)
	if devid < 0 {
		return fmt.Errorf("block device name %q: want xvd and one letter", vdev)
	}
	dev, err := loopdev.Attach(ctx, image, true)
	if err != nil {
		return err
	}
	// The backend opens the loop device itself; once it has, this
	// process's hold goes and the device lives as long as the backend
	// uses it.
	defer dev.Close()
	fe, be, lp := vbdPaths(domid, devid)
	feWrites := map[string]string{
		"backend": be, "backend-id": "0", "state": stateInitialising,
		"virtual-device": strconv.Itoa(devid), "device-type": "disk", "trusted": "1",
	}
	err = x.XS.Transaction(ctx, func(tx *xenstore.Transaction) error {
		for _, p := range []string{fe, lp} {
			if _, err := tx.Read(ctx, p); err == nil {
				return fmt.Errorf("domain %d already has a block device %s (%s)", domid, vdev, p)
			}
		}
		if err := tx.Mkdir(ctx, fe); err != nil {
			return err
		}
		if err := tx.SetPerms(ctx, fe, xenstore.Perms{{Domid: domid, Access: xenstore.AccessNone}, {Domid: 0, Access: xenstore.AccessRead}}); err != nil {
			return err
		}
		for k, v := range feWrites {
			if err := tx.WriteString(ctx, fe+"/"+k, v); err != nil {
				return err
			}
		}
		return blkback.WriteReadOnly(ctx, tx, domid, vdev, devid, dev.Path)
	})
	if err != nil {
		return fmt.Errorf("add block device %s to domain %d: %w", vdev, domid, err)
	}
	if err := waitState(ctx, x.XS, fe+"/state", stateConnected, 30*time.Second); err != nil {
		x.remove(ctx, fe, be, lp)
		return fmt.Errorf("block device %s of domain %d did not connect: %w", vdev, domid, err)
	}
	return nil
}

// Detach asks the backend to close domain domid's block device vdev, waits
// for it (bounded), and removes its entries.
func (x XenstoreDisks) Detach(ctx context.Context, domid uint32, vdev string) error {
	devid := blkback.VdevNumber(vdev)
	if devid < 0 {
		return fmt.Errorf("block device name %q: want xvd and one letter", vdev)
	}
	fe, be, lp := vbdPaths(domid, devid)
	if _, err := x.XS.Read(ctx, be); errors.Is(err, syscall.ENOENT) {
		return nil
	}
	b := x.XS.Batch()
	b.WriteString(be+"/online", "0")
	b.WriteString(be+"/state", stateClosing)
	if err := b.Run(ctx); err != nil {
		return fmt.Errorf("close block device %s of domain %d: %w", vdev, domid, err)
	}
	werr := waitState(ctx, x.XS, be+"/state", stateClosed, 20*time.Second)
	x.remove(ctx, fe, be, lp)
	if werr != nil {
		return fmt.Errorf("block device %s of domain %d did not close (removed anyway): %w", vdev, domid, werr)
	}
	return nil
}

func (x XenstoreDisks) remove(ctx context.Context, paths ...string) {
	ctx = context.WithoutCancel(ctx)
	b := x.XS.Batch()
	for _, p := range paths {
		b.RmIfExists(p)
	}
	_ = b.Run(ctx)
}

// waitState waits until the node at p reads want.
func waitState(ctx context.Context, xs *xenstore.Client, p, want string, limit time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	for {
		s, err := xs.ReadString(ctx, p)
		if err == nil && s == want {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s is %q, not %s after %s", p, s, want, limit)
		case <-time.After(100 * time.Millisecond):
		}
	}
}
