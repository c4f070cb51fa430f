package blkback

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/qvm-project/qvm/loopdev"
	"github.com/qvm-project/qvm/xenstore"
)

// A read-only disk that qvm adds to a domain itself, by writing xenstore
// as libxl does for a "phy" disk, where libxl cannot: a disc put in a
// stubdomain's CD-ROM drive at run time (package qemu/cdrom), and the
// stubdomain's start disc, which libxl serves with qdisk (a QEMU in dom0)
// and qvm moves to blkback (MoveQdisk).

// Paths are the xenstore directories of a block device of a domain: its
// frontend (the domain's), its backend in dom0, and libxl's record of the
// device (where libxl finds what to remove when it destroys the domain).
type Paths struct {
	Frontend, Backend, Record string
}

// VbdPaths are the paths of block device devid of domain domid served
// by dom0's blkback.
func VbdPaths(domid uint32, devid int) Paths {
	return Paths{
		Frontend: fmt.Sprintf("/local/domain/%d/device/vbd/%d", domid, devid),
		Backend:  fmt.Sprintf("/local/domain/0/backend/vbd/%d/%d", domid, devid),
		Record:   fmt.Sprintf("/libxl/%d/device/vbd/%d", domid, devid),
	}
}

// Xenbus states (xen/include/public/io/xenbus.h).
const stateInitialising = "1"

// WriteReadOnly writes, in tx, the backend directory of a read-only disk
// of domain domid served from block device dev (as vdev), readable by the
// domain and writable by dom0 only, and libxl's record of it; the
// frontend directory is the caller's. A backend that exists is refused.
func WriteReadOnly(ctx context.Context, tx *xenstore.Transaction, domid uint32, vdev string, devid int, dev string) error {
	var st unix.Stat_t
	if err := unix.Stat(dev, &st); err != nil {
		return fmt.Errorf("%s: %w", dev, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFBLK {
		return fmt.Errorf("%s is not a block device", dev)
	}
	p := VbdPaths(domid, devid)
	if err := writeVbd(ctx, tx, 0, domid, p, vdev, dev, fmt.Sprintf("%x:%x", unix.Major(st.Rdev), unix.Minor(st.Rdev))); err != nil {
		return err
	}
	if err := tx.WriteString(ctx, p.Record+"/frontend", p.Frontend); err != nil {
		return err
	}
	return tx.WriteString(ctx, p.Record+"/backend", p.Backend)
}

// writeVbd writes, in tx, backend directory p.Backend of a read-only
// "phy" disk of domain domid with the keys libxl writes: the device's
// path dev and its number node ("MAJOR:MINOR" in hex, what blkback
// opens). The directory belongs to the backend domain owner and is
// readable by domid. A backend that exists is refused.
func writeVbd(ctx context.Context, tx *xenstore.Transaction, owner, domid uint32, p Paths, vdev, dev, node string) error {
	if _, err := tx.Read(ctx, p.Backend); err == nil {
		return fmt.Errorf("domain %d already has a block device %s (%s)", domid, vdev, p.Backend)
	}
	if err := tx.Mkdir(ctx, p.Backend); err != nil {
		return err
	}
	if err := tx.SetPerms(ctx, p.Backend, xenstore.Perms{{Domid: owner, Access: xenstore.AccessNone}, {Domid: domid, Access: xenstore.AccessRead}}); err != nil {
		return err
	}
	for k, v := range map[string]string{
		"frontend": p.Frontend, "frontend-id": strconv.FormatUint(uint64(domid), 10), "online": "1",
		"removable": "0", "bootable": "1", "state": stateInitialising, "dev": vdev, "type": "phy",
		"mode": "r", "device-type": "disk", "discard-enable": "0", "specification": "xen",
		"params": dev, "physical-device-path": dev, "physical-device": node,
	} {
		if err := tx.WriteString(ctx, p.Backend+"/"+k, v); err != nil {
			return err
		}
	}
	return nil
}

// VdevNumber is the xenstore device number of an xvd* name with one
// letter (xvda is 51712), as libxl numbers them, or -1.
func VdevNumber(vdev string) int {
	if len(vdev) != 4 || !strings.HasPrefix(vdev, "xvd") || vdev[3] < 'a' || vdev[3] > 'z' {
		return -1
	}
	disk := int(vdev[3] - 'a')
	if disk < 16 {
		return 202<<8 | disk<<4
	}
	// Disks past xvdp only have the extended form.
	return 1<<28 | disk<<8
}

// maxQdisks bounds the qdisk devices MoveQdisk looks at.
const maxQdisks = 16

// MoveQdisk serves domain domid's read-only qdisk disks with blkback
// instead: each image goes on a read-only loop device, which gets a vbd
// backend in place of the qdisk one, and the frontend and libxl's record
// are pointed at it. It is for a stubdomain whose start disc libxl gave
// a qdisk backend (libxl 4.17 gives an HVM's CD-ROM drives no other) and
// must run while the domain is paused, before its frontends look at
// their backends. Everything it reads is in dom0's backend directories,
// which the domain cannot write.
//
// The loop devices are returned open: blkback opens a device when it
// sees its physical-device, which may be after this returns, so the
// caller keeps them until the domain is gone (they detach themselves
// once the last user closes them). A writable qdisk disk, or one that
// is not a raw image, is refused.
func MoveQdisk(ctx context.Context, xs *xenstore.Client, domid uint32) ([]*loopdev.Device, error) {
	dir := fmt.Sprintf("/local/domain/0/backend/qdisk/%d", domid)
	names, err := xs.Directory(ctx, dir)
	if errors.Is(err, syscall.ENOENT) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("qdisk disks of domain %d: %w", domid, err)
	}
	if len(names) > maxQdisks {
		return nil, fmt.Errorf("domain %d has %d qdisk disks, more than %d", domid, len(names), maxQdisks)
	}
	var devs []*loopdev.Device
	fail := func(err error) ([]*loopdev.Device, error) {
		for _, d := range devs {
			d.Close()
		}
		return nil, err
	}
	for _, n := range names {
		devid, err := strconv.Atoi(n)
		if err != nil || devid < 0 {
			return fail(fmt.Errorf("qdisk disk %q of domain %d: not a device number", n, domid))
		}
		be := dir + "/" + n
		read := func(k string) (string, error) {
			v, err := xs.ReadString(ctx, be+"/"+k)
			if err != nil {
				return "", fmt.Errorf("qdisk disk %s of domain %d: %w", n, domid, err)
			}
			return v, nil
		}
		var vals [3]string
		for i, k := range []string{"params", "mode", "dev"} {
			if vals[i], err = read(k); err != nil {
				return fail(err)
			}
		}
		params, mode, vdev := vals[0], vals[1], vals[2]
		format, image, ok := strings.Cut(params, ":")
		if !ok || (format != "raw" && format != "aio") || image == "" {
			return fail(fmt.Errorf("qdisk disk %s of domain %d: params %q is not a raw image (an empty drive cannot be moved)", vdev, domid, params))
		}
		if mode != "r" {
			return fail(fmt.Errorf("qdisk disk %s of domain %d is writable (mode %q): only read-only discs are moved to blkback", vdev, domid, mode))
		}
		d, err := loopdev.Attach(ctx, image, true)
		if err != nil {
			return fail(fmt.Errorf("qdisk disk %s of domain %d: %w", vdev, domid, err))
		}
		devs = append(devs, d)
		p := VbdPaths(domid, devid)
		err = xs.Transaction(ctx, func(tx *xenstore.Transaction) error {
			if err := tx.Rm(ctx, be); err != nil {
				return err
			}
			if err := WriteReadOnly(ctx, tx, domid, vdev, devid, d.Path); err != nil {
				return err
			}
			return tx.WriteString(ctx, p.Frontend+"/backend", p.Backend)
		})
		if err != nil {
			return fail(fmt.Errorf("move disk %s of domain %d to blkback: %w", vdev, domid, err))
		}
	}
	if err := xs.Rm(ctx, dir); err != nil && !errors.Is(err, syscall.ENOENT) {
		return fail(fmt.Errorf("qdisk disks of domain %d: %w", domid, err))
	}
	return devs, nil
}
