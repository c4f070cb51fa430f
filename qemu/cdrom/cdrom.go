// Package cdrom changes the medium in a running HVM guest's CD-ROM drive,
// whether the guest's QEMU runs in qvm's stubdomain or in dom0.
//
// The drive is the one the domain was started with (qvm puts it at
// domconfig.CDROMVdev; a domain started without --cdrom has none, and a drive
// cannot be added to a running guest). What QEMU can open differs:
//
//   - QEMU in dom0 opens dom0 files, and libxl changes media itself
//     (libxl_cdrom_insert, which also keeps the backend's xenstore entry
//     current). Xen 4.17's libxl refuses that for stubdomains.
//   - QEMU in the stubdomain only sees the block devices the stubdomain
//     has. The disc the guest started with is its /dev/xvdd; any other
//     image is first attached to the stubdomain as a read-only disk of its
//     own (see StubdomDisks), then opened there. Both go through QMP
//     (package qemu) via libxl's relay to the stubdomain.
//
// The dom0 path of what is in a drive comes from the backend of the block
// device that carries it, so nothing but the live state is consulted; and
// only from what dom0 alone can write (see backendDir): the guest and its
// stubdomain can rewrite their own xenstore entries, and what their QEMU
// reports is used only after validation.
package cdrom

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/qvm-project/qvm/blkback"
	"github.com/qvm-project/qvm/domconfig"
	"github.com/qvm-project/qvm/qemu"
	"github.com/qvm-project/qvm/termtext"
	"github.com/qvm-project/qvm/xenstore"
)

// Hypervisor changes media for QEMU in dom0 (xl.Context implements it).
type Hypervisor interface {
	CDROMInsert(ctx context.Context, domid uint32, vdev, target string) error
	CDROMEject(ctx context.Context, domid uint32, vdev string) error
}

// StubdomDisks attaches an image file to a stubdomain as a read-only
// disk, and detaches it.
type StubdomDisks interface {
	Attach(ctx context.Context, domid uint32, vdev, image string) error
	Detach(ctx context.Context, domid uint32, vdev string) error
}

// Changer changes media. Its fields are the live system it works on.
type Changer struct {
	// XS is dom0's xenstore connection.
	XS *xenstore.Client
	// Hyp and Disks do what libxl does (see the interfaces).
	Hyp   Hypervisor
	Disks StubdomDisks
	// QMP opens a QMP connection to domain domid's QEMU; nil uses
	// qemu.Dial on qemu.SocketPath(domid).
	QMP func(ctx context.Context, domid uint32) (*qemu.Monitor, error)
}

// Status is a CD-ROM drive and its medium.
type Status struct {
	// Stubdom is the stubdomain running the guest's QEMU, 0 for dom0.
	Stubdom uint32
	// DriveID is QEMU's id of the drive.
	DriveID string
	// Medium is the path of the disc in the drive, "" when empty: a dom0
	// path, or with Server set the path in that VM.
	Medium string
	// Server is the domain ID of the VM that serves the disc
	// (qvm-start --cdrom=VM:/path), 0 for a dom0 disc.
	Server uint32
	// TrayOpen reports the drive's tray.
	TrayOpen bool
}

// ErrNoDrive says that the domain has no CD-ROM drive.
var ErrNoDrive = errors.New("no CD-ROM drive")

// ErrBusy says that the drive holds another disc.
var ErrBusy = errors.New("the CD-ROM drive holds another disc")

// stubdomOf returns the domain running domid's device model, 0 for dom0.
func (c *Changer) stubdomOf(ctx context.Context, domid uint32) (uint32, error) {
	s, err := c.XS.ReadString(ctx, fmt.Sprintf("/local/domain/%d/image/device-model-domid", domid))
	if errors.Is(err, syscall.ENOENT) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	n, err := strconv.ParseUint(s, 10, 16)
	if err != nil {
		return 0, fmt.Errorf("domain %d's device-model-domid %q: %w", domid, s, err)
	}
	return uint32(n), nil
}

func (c *Changer) monitor(ctx context.Context, domid uint32) (*qemu.Monitor, error) {
	if c.QMP != nil {
		return c.QMP(ctx, domid)
	}
	return qemu.Dial(ctx, qemu.SocketPath(domid))
}

// drive finds the domain's CD-ROM drive in QEMU: its only removable
// drive, or the one libxl named after domconfig.CDROMVdev.
func drive(ctx context.Context, m *qemu.Monitor, domid uint32) (qemu.Drive, error) {
	ds, err := m.Removable(ctx)
	if err != nil {
		return qemu.Drive{}, err
	}
	if len(ds) == 1 {
		return ds[0], nil
	}
	want := "ide-" + strconv.Itoa(blkback.VdevNumber(domconfig.CDROMVdev))
	for _, d := range ds {
		if d.ID == want {
			return d, nil
		}
	}
	return qemu.Drive{}, fmt.Errorf("domain %d: %w (it was started without a disc: start it with qvm-start --cdrom=dom0:PATH to have one)", domid, ErrNoDrive)
}

// Status reports the CD-ROM drive of running domain domid.
func (c *Changer) Status(ctx context.Context, domid uint32) (Status, error) {
	st := Status{}
	var err error
	if st.Stubdom, err = c.stubdomOf(ctx, domid); err != nil {
		return st, err
	}
	m, err := c.monitor(ctx, domid)
	if err != nil {
		return st, err
	}
	defer m.Close()
	d, err := drive(ctx, m, domid)
	if err != nil {
		return st, err
	}
	st.DriveID, st.TrayOpen = d.ID, d.TrayOpen
	if d.Medium == nil {
		return st, nil
	}
	if st.Stubdom == 0 {
		// libxl's QEMU in dom0 opens media through file descriptors it
		// passes in; the backend entry has the path.
		st.Medium, err = c.backendImage(ctx, domid, domconfig.CDROMVdev)
	} else {
		st.Server, st.Medium, err = c.stubdomImage(ctx, st.Stubdom, d.Medium.File)
	}
	return st, err
}

// Disc is the disc in the drive for messages: dom0:PATH, or for a disc
// a VM serves "domain DOMID:PATH" (the caller knows the VM's name).
func (st Status) Disc() string {
	if st.Server != 0 {
		return fmt.Sprintf("domain %d:%s", st.Server, st.Medium)
	}
	return "dom0:" + st.Medium
}

// stubdomImage maps a block device the stubdomain's QEMU opened
// (/dev/xvdX) to the image behind it: a dom0 image, or the file a VM
// serves (server is that VM's domain ID).
func (c *Changer) stubdomImage(ctx context.Context, stubdom uint32, file string) (server uint32, path string, err error) {
	vdev, ok := strings.CutPrefix(file, "/dev/")
	if !ok {
		return 0, "", fmt.Errorf("stubdomain %d's QEMU has \"%s\" in the drive, not one of its block devices", stubdom, termtext.Cut(file, 256))
	}
	n := blkback.VdevNumber(vdev)
	if n < 0 {
		return 0, "", fmt.Errorf("block device %q of domain %d: not an xvd name qvm uses", termtext.Cut(vdev, 64), stubdom)
	}
	if server, path, ok, err := c.servedImage(ctx, stubdom, n); ok || err != nil {
		if err != nil {
			return 0, "", fmt.Errorf("domain %d's block device %s: %w", stubdom, vdev, err)
		}
		return server, path, nil
	}
	path, err = c.backendImage(ctx, stubdom, vdev)
	return 0, path, err
}

// servedImage reports the disc a VM serves as stubdomain stub's block
// device devid (blkback.ServeDriverDisc), from libxl's record alone
// (dom0's to write): the serving domain from the backend path it names,
// and the file in that VM qvm recorded. ok is false for another disc.
// The VM's own backend directory is never read.
func (c *Changer) servedImage(ctx context.Context, stub uint32, devid int) (server uint32, path string, ok bool, err error) {
	rec := fmt.Sprintf("%s/%d", libxlVbdDir(stub), devid)
	be, err := c.XS.ReadString(ctx, rec+"/backend")
	if err != nil {
		return 0, "", false, nil // backendDir says why
	}
	if !strings.HasPrefix(be, "/local/domain/") || strings.HasPrefix(be, "/local/domain/0/") {
		return 0, "", false, nil // a dom0 backend (backendDir checks it)
	}
	dom, kind, ok := blkback.VMBackend(be, stub, strconv.Itoa(devid))
	if !ok || kind != "vbd" {
		return 0, "", false, fmt.Errorf("libxl's record of it names backend \"%s\", not a vbd of that device", termtext.Cut(be, 256))
	}
	src, err := c.XS.ReadString(ctx, rec+"/"+blkback.SourceKey)
	if err != nil {
		return 0, "", false, fmt.Errorf("served by domain %d, without qvm's record of its file: %w", dom, err)
	}
	return dom, src, true, nil
}

// backendImage returns the image behind domain domid's block device vdev,
// from its backend's params ("format:path" for qdisk).
func (c *Changer) backendImage(ctx context.Context, domid uint32, vdev string) (string, error) {
	n := blkback.VdevNumber(vdev)
	if n < 0 {
		return "", fmt.Errorf("block device %q of domain %d: not an xvd name qvm uses", vdev, domid)
	}
	be, err := c.backendDir(ctx, domid, n)
	if err != nil {
		return "", fmt.Errorf("domain %d's block device %s: %w", domid, vdev, err)
	}
	params, err := c.XS.ReadString(ctx, be+"/params")
	if err != nil {
		return "", fmt.Errorf("domain %d's block device %s: %w", domid, vdev, err)
	}
	return imageOf(ParamsPath(params)), nil
}

// backendKinds are the backends libxl serves a disk with from dom0.
var backendKinds = []string{"vbd", "qdisk", "vbd3"}

// backendDir returns the backend directory of domain domid's block device
// devid. It comes from libxl's own record of the device,
// /libxl/<domid>/device/vbd/<devid>/backend (libxl__device_libxl_path),
// which only dom0 can write. The frontend's copy,
// /local/domain/<domid>/device/vbd/<devid>/backend, belongs to the domain
// (and to its stubdomain, which has the guest's rights), which can point
// it anywhere: it is never read. The directory must also be dom0's own
// backend of that device, /local/domain/0/backend/KIND/<domid>/<devid>.
func (c *Changer) backendDir(ctx context.Context, domid uint32, devid int) (string, error) {
	p := fmt.Sprintf("%s/%d/backend", libxlVbdDir(domid), devid)
	be, err := c.XS.ReadString(ctx, p)
	if err != nil {
		return "", fmt.Errorf("libxl's record of it: %w", err)
	}
	for _, k := range backendKinds {
		if be == fmt.Sprintf("/local/domain/0/backend/%s/%d/%d", k, domid, devid) {
			return be, nil
		}
	}
	return "", fmt.Errorf("%s is \"%s\", not a backend of that device in dom0 (qvm serves disks from dom0, and CD-ROMs of stubdomains from VMs)", p, termtext.Cut(be, 256))
}

// libxlVbdDir is libxl's record of domain domid's block devices.
func libxlVbdDir(domid uint32) string {
	return fmt.Sprintf("/libxl/%d/device/vbd", domid)
}

// imageOf maps a loop device (how a phy backend serves a file) to the
// file behind it, from sysfs (which has the whole path); other paths are
// returned as they are.
func imageOf(p string) string {
	name, ok := strings.CutPrefix(p, "/dev/")
	if !ok || !strings.HasPrefix(name, "loop") || strings.Contains(name, "/") {
		return p
	}
	b, err := os.ReadFile(filepath.Join("/sys/block", name, "loop", "backing_file"))
	if err != nil {
		return p
	}
	return strings.TrimSpace(string(b))
}

// ParamsPath is the path in a disk backend's params: libxl writes
// "FORMAT:PATH" for qdisk backends and the bare path for phy.
func ParamsPath(params string) string {
	if f, p, ok := strings.Cut(params, ":"); ok && !strings.Contains(f, "/") {
		return p
	}
	return params
}

// Insert puts the image at path (a dom0 file or block device) into the
// empty CD-ROM drive of running domain domid.
func (c *Changer) Insert(ctx context.Context, domid uint32, path string) error {
	if !filepath.IsAbs(path) {
		return fmt.Errorf("image %q: give an absolute dom0 path", path)
	}
	st, err := c.Status(ctx, domid)
	if err != nil {
		return err
	}
	if st.Medium != "" {
		if st.Server == 0 && st.Medium == path {
			return nil
		}
		return fmt.Errorf("domain %d: %w (%s): detach it first", domid, ErrBusy, termtext.Line(st.Disc()))
	}
	if st.Stubdom == 0 {
		return c.Hyp.CDROMInsert(ctx, domid, domconfig.CDROMVdev, path)
	}
	// The disc the stubdomain got at start is still its xvdd.
	vdev := domconfig.CDROMVdev
	if orig, err := c.backendImage(ctx, st.Stubdom, domconfig.CDROMVdev); err != nil || orig != path {
		if vdev, err = c.freeVdev(ctx, st.Stubdom); err != nil {
			return err
		}
		if err := c.Disks.Attach(ctx, st.Stubdom, vdev, path); err != nil {
			return fmt.Errorf("attach %s to stubdomain %d: %w", path, st.Stubdom, err)
		}
		if err := c.waitConnected(ctx, st.Stubdom, vdev); err != nil {
			c.Disks.Detach(context.WithoutCancel(ctx), st.Stubdom, vdev)
			return err
		}
	}
	m, err := c.monitor(ctx, domid)
	if err != nil {
		c.dropExtra(ctx, st.Stubdom, vdev)
		return err
	}
	defer m.Close()
	if err := m.ChangeMedium(ctx, st.DriveID, "/dev/"+vdev); err != nil {
		c.dropExtra(ctx, st.Stubdom, vdev)
		return err
	}
	return nil
}

// Eject empties the CD-ROM drive of running domain domid, and detaches
// from its stubdomain a disc attached by Insert. With path set, it refuses
// when the drive holds another disc.
func (c *Changer) Eject(ctx context.Context, domid uint32, path string) error {
	st, err := c.Status(ctx, domid)
	if err != nil {
		return err
	}
	if st.Medium == "" {
		if path != "" {
			return fmt.Errorf("domain %d: the CD-ROM drive is empty, dom0:%s is not in it", domid, path)
		}
		return nil
	}
	if path != "" && (st.Server != 0 || st.Medium != path) {
		return fmt.Errorf("domain %d: the CD-ROM drive holds %s, not dom0:%s", domid, termtext.Line(st.Disc()), path)
	}
	if st.Stubdom == 0 {
		return c.Hyp.CDROMEject(ctx, domid, domconfig.CDROMVdev)
	}
	m, err := c.monitor(ctx, domid)
	if err != nil {
		return err
	}
	d, err := drive(ctx, m, domid)
	if err != nil {
		m.Close()
		return err
	}
	file := ""
	if d.Medium != nil {
		file = d.Medium.File
	}
	err = m.Eject(ctx, st.DriveID)
	m.Close()
	if err != nil {
		return err
	}
	if vdev, ok := strings.CutPrefix(file, "/dev/"); ok {
		c.dropExtra(ctx, st.Stubdom, vdev)
	}
	return nil
}

// dropExtra detaches a disc Insert attached to the stubdomain (not its
// original xvdd).
func (c *Changer) dropExtra(ctx context.Context, stubdom uint32, vdev string) {
	if stubdom != 0 && vdev != domconfig.CDROMVdev {
		_ = c.Disks.Detach(context.WithoutCancel(ctx), stubdom, vdev)
	}
}

// freeVdev returns the first xvd name from xvde on that the stubdomain
// does not use, by libxl's record (the stubdomain can remove its own
// frontend entries, not that).
func (c *Changer) freeVdev(ctx context.Context, stubdom uint32) (string, error) {
	used := map[string]bool{}
	ids, err := c.XS.Directory(ctx, libxlVbdDir(stubdom))
	if err != nil && !errors.Is(err, syscall.ENOENT) {
		return "", err
	}
	for _, id := range ids {
		used[id] = true
	}
	for l := 'e'; l <= 'z'; l++ {
		v := "xvd" + string(l)
		if !used[strconv.Itoa(blkback.VdevNumber(v))] {
			return v, nil
		}
	}
	return "", fmt.Errorf("stubdomain %d has no free block device name", stubdom)
}

// waitConnected waits until the stubdomain's block device vdev is
// connected (its frontend state is 4), so the device node exists there.
func (c *Changer) waitConnected(ctx context.Context, stubdom uint32, vdev string) error {
	p := fmt.Sprintf("/local/domain/%d/device/vbd/%d/state", stubdom, blkback.VdevNumber(vdev))
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for {
		if s, err := c.XS.ReadString(ctx, p); err == nil && s == "4" {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("stubdomain %d's block device %s did not connect: %w", stubdom, vdev, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}
