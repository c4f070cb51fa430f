package blkback

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"syscall"

	"github.com/qvm-project/qvm/xenstore"
)

// A DriverDisc is a read-only disc that a VM serves to a stubdomain with
// its own blkback (the VM is a driver domain): qvm-start --cdrom=VM:/path
// has the VM put the file on a loop device of its own, and the HVM's
// stubdomain gets that device as its CD-ROM disc.
//
// libxl 4.17 gives an HVM's CD-ROM, and so the stubdomain's copy of it, a
// qdisk backend (in the VM, which runs no QEMU): ServeDriverDisc turns
// the stubdomain's one into a vbd backend in the VM, as MoveQdisk does
// for dom0's discs. Everything it needs is in the DriverDisc, which qvm
// hands to the stubdomain's device model on its command line (libxl
// extra_pv): nothing is read from the VM's backend directories, which the
// VM can write.
type DriverDisc struct {
	// Vdev is the stubdomain's device (xvdd).
	Vdev string
	// Backend is the serving VM's domain.
	Backend uint32
	// Major and Minor are the device's number in the serving VM, Dev its
	// path there (/dev/loopN).
	Major, Minor uint32
	Dev          string
	// Source is the file in the VM that the user named, for listings.
	Source string
}

// ErrBadDriverDisc is returned (wrapped) by ParseDriverDisc.
var ErrBadDriverDisc = errors.New("bad driver-domain disc")

// String is the disc as ParseDriverDisc reads it:
// VDEV:BACKEND:MAJOR:MINOR:DEV:SOURCE (SOURCE last, as it may hold ':').
func (d DriverDisc) String() string {
	return fmt.Sprintf("%s:%d:%d:%d:%s:%s", d.Vdev, d.Backend, d.Major, d.Minor, d.Dev, d.Source)
}

// ParseDriverDisc reads a DriverDisc from its String form.
func ParseDriverDisc(s string) (DriverDisc, error) {
	f := strings.SplitN(s, ":", 6)
	bad := func(why string) (DriverDisc, error) {
		return DriverDisc{}, fmt.Errorf("%w %q: %s (want VDEV:BACKEND:MAJOR:MINOR:DEV:SOURCE)", ErrBadDriverDisc, s, why)
	}
	if len(f) != 6 {
		return bad("not six fields")
	}
	d := DriverDisc{Vdev: f[0], Dev: f[4], Source: f[5]}
	if VdevNumber(d.Vdev) < 0 {
		return bad("not an xvd device name")
	}
	nums := []*uint32{&d.Backend, &d.Major, &d.Minor}
	limits := []uint64{0x7FF0, 1 << 12, 1 << 20} // DOMID_FIRST_RESERVED; Linux's MAJORBITS, MINORBITS
	for i, p := range nums {
		n, err := strconv.ParseUint(f[i+1], 10, 32)
		if err != nil || n >= limits[i] {
			return bad(fmt.Sprintf("field %d is not a number below %d", i+2, limits[i]))
		}
		*p = uint32(n)
	}
	if d.Backend == 0 {
		return bad("the backend is dom0, whose discs MoveQdisk serves")
	}
	if !IsLoopName(d.Dev) {
		return bad("the device is not /dev/loopN")
	}
	return d, nil
}

// IsLoopName reports whether s is a loop device path, /dev/loopN (N
// without leading zeros, at most six digits): the only answer qvm takes
// from a VM asked to put a file on a loop device.
func IsLoopName(s string) bool {
	n, ok := strings.CutPrefix(s, "/dev/loop")
	if !ok || n == "" || len(n) > 6 || (n[0] == '0' && len(n) > 1) {
		return false
	}
	for _, c := range n {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// DriverDiscPaths are the xenstore directories of the disc of stubdomain
// stub served by d.Backend: the qdisk backend libxl wrote, the vbd
// backend that replaces it, the stubdomain's frontend, and libxl's record.
func DriverDiscPaths(stub uint32, d DriverDisc) (qdisk string, p Paths) {
	n := VdevNumber(d.Vdev)
	return fmt.Sprintf("/local/domain/%d/backend/qdisk/%d/%d", d.Backend, stub, n), Paths{
		Frontend: fmt.Sprintf("/local/domain/%d/device/vbd/%d", stub, n),
		Backend:  fmt.Sprintf("/local/domain/%d/backend/vbd/%d/%d", d.Backend, stub, n),
		Record:   fmt.Sprintf("/libxl/%d/device/vbd/%d", stub, n),
	}
}

// SourceKey is the key, in libxl's record of a driver-domain disc (which
// only dom0 can write), that names the file in the serving VM.
const SourceKey = "qvm-source"

// ServeDriverDisc serves stubdomain stub's disc d from d.Backend's
// blkback in place of the qdisk backend libxl wrote there: the qdisk
// directory goes, a vbd backend directory (the serving VM's to write, the
// stubdomain's to read) names the device, and the stubdomain's frontend
// and libxl's record point at it, all in one transaction. libxl's record
// must show the qdisk backend (it is dom0's, so this checks that the
// disc is the one libxl made). Like MoveQdisk it must run while the
// stubdomain is paused. libxl removes the vbd when it destroys the
// stubdomain, from its record.
func ServeDriverDisc(ctx context.Context, xs *xenstore.Client, stub uint32, d DriverDisc) error {
	if VdevNumber(d.Vdev) < 0 || d.Backend == 0 || !IsLoopName(d.Dev) {
		return fmt.Errorf("%w: %v", ErrBadDriverDisc, d)
	}
	qdisk, p := DriverDiscPaths(stub, d)
	err := xs.Transaction(ctx, func(tx *xenstore.Transaction) error {
		be, err := tx.ReadString(ctx, p.Record+"/backend")
		if err != nil {
			return fmt.Errorf("libxl's record of the disc: %w", err)
		}
		if be != qdisk {
			return fmt.Errorf("libxl's record of the disc names backend %q, not %s", be, qdisk)
		}
		if err := tx.Rm(ctx, qdisk); err != nil && !errors.Is(err, syscall.ENOENT) {
			return err
		}
		// The serving VM owns its backend directory (its blkback writes
		// its state there); the stubdomain reads it.
		if err := writeVbd(ctx, tx, d.Backend, stub, p, d.Vdev, d.Dev, fmt.Sprintf("%x:%x", d.Major, d.Minor)); err != nil {
			return err
		}
		for k, v := range map[string]string{
			p.Frontend + "/backend": p.Backend, p.Frontend + "/backend-id": strconv.FormatUint(uint64(d.Backend), 10),
			p.Record + "/backend": p.Backend, p.Record + "/" + SourceKey: d.Source,
		} {
			if err := tx.WriteString(ctx, k, v); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("serve disc %s of stubdomain %d from domain %d: %w", d.Vdev, stub, d.Backend, err)
	}
	// libxl made the parent for this disc alone; leave others' be.
	parent := qdisk[:strings.LastIndexByte(qdisk, '/')]
	if names, err := xs.Directory(ctx, parent); err == nil && len(names) == 0 {
		xs.Rm(ctx, parent)
	}
	return nil
}

// VMBackend parses be, the backend a libxl record of domain domid's
// block device devid names, as a backend in another VM: exactly
// /local/domain/N/backend/KIND/DOMID/DEVID with N not 0 and KIND vbd or
// qdisk. ok is false for anything else (dom0's backends among them).
func VMBackend(be string, domid uint32, devid string) (server uint32, kind string, ok bool) {
	var rest string
	if c, _ := fmt.Sscanf(be, "/local/domain/%d/backend/%s", &server, &rest); c != 2 || server == 0 {
		return 0, "", false
	}
	for _, k := range []string{"vbd", "qdisk"} {
		if be == fmt.Sprintf("/local/domain/%d/backend/%s/%d/%s", server, k, domid, devid) {
			return server, k, true
		}
	}
	return 0, "", false
}

// RemoveDriverBackends removes, before libxl destroys domain domid, the
// backend directories of its block devices that live in other VMs (a
// disc served by a VM, and the qdisk libxl records for the guest's view
// of it). libxl leaves those to a daemon in the driver domain (xl devd)
// and waits 10 s per device for it; qvm's VMs run none, and removing the
// directory is also what makes the VM's blkback let go of the device.
// Only libxl's record (dom0's to write) is read, and only a backend
// directory of this very device (VMBackend) is removed, with its parent
// once empty. It returns how many it removed.
func RemoveDriverBackends(ctx context.Context, xs *xenstore.Client, domid uint32) (int, error) {
	rec := fmt.Sprintf("/libxl/%d/device/vbd", domid)
	ids, err := xs.Directory(ctx, rec)
	if errors.Is(err, syscall.ENOENT) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("libxl's record of domain %d's disks: %w", domid, err)
	}
	removed := 0
	for _, id := range ids {
		be, err := xs.ReadString(ctx, rec+"/"+id+"/backend")
		if err != nil {
			continue
		}
		if _, _, ok := VMBackend(be, domid, id); !ok {
			continue // dom0's, which libxl removes itself
		}
		// xenstored's rm succeeds for a missing node whose parent exists.
		if _, err := xs.Directory(ctx, be); errors.Is(err, syscall.ENOENT) {
			continue
		}
		if err := xs.Rm(ctx, be); err != nil && !errors.Is(err, syscall.ENOENT) {
			return removed, fmt.Errorf("remove domain %d's backend %s: %w", domid, be, err)
		}
		removed++
		parent := be[:strings.LastIndexByte(be, '/')]
		if names, err := xs.Directory(ctx, parent); err == nil && len(names) == 0 {
			xs.Rm(ctx, parent)
		}
	}
	return removed, nil
}
