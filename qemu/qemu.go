// Package qemu controls a running HVM guest's device model over QMP: it
// lists the guest's removable drives, ejects or changes the medium in its
// CD-ROM drive, and presses keys on its keyboard.
//
// For a Xen guest, dom0 reaches the QMP monitor at SocketPath(domid). When
// QEMU runs in dom0 that is QEMU's own socket; when it runs in a
// stubdomain, it is libxl's vchan-socket-proxy, which relays to the QMP
// socket the stubdomain's init gives QEMU. Either way QEMU serves one
// client at a time, so hold a Monitor only for the commands at hand.
//
// The commands go through package qmp, which bounds what the peer (in a
// stubdomain, next to the guest) can make dom0 read, and how long it can
// make dom0 wait. What QEMU reports (file names, ids) is its own: callers
// validate it before they act on it and make it safe before they print it.
package qemu

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/qvm-project/qvm/qemu/qmp"
)

// SocketPath is where libxl keeps the QMP socket of domain domid's device
// model in dom0.
func SocketPath(domid uint32) string {
	return fmt.Sprintf("/var/run/xen/qmp-libxl-%d", domid)
}

// Monitor is a QMP connection to one QEMU. Its methods are not for
// concurrent use.
type Monitor struct {
	conn *qmp.Conn
}

// Dial connects to the QMP socket at path and does the capabilities
// handshake. It fails when ctx ends first (qmp.DefaultTimeout when it has
// no deadline), e.g. while another client holds the monitor.
func Dial(ctx context.Context, path string) (*Monitor, error) {
	c, err := qmp.Dial(ctx, path)
	if err != nil {
		return nil, err
	}
	return &Monitor{conn: c}, nil
}

// Close ends the connection.
func (m *Monitor) Close() error { return m.conn.Close() }

// Conn is the monitor's QMP connection, for commands Monitor has no
// method for.
func (m *Monitor) Conn() *qmp.Conn { return m.conn }

// Drive is a block device of the guest as QEMU reports it.
type Drive struct {
	// Device is the block backend's name (libxl names it like the
	// device, e.g. "ide-51760"); ID is the guest device's id, which eject
	// and change commands take.
	Device, ID string
	// Removable drives take media; TrayOpen and Locked are their tray.
	Removable, TrayOpen, Locked bool
	// Medium is what is in the drive, nil when it is empty.
	Medium *Medium
}

// Medium is the image in a drive.
type Medium struct {
	File     string // the image QEMU opened
	Driver   string // its format driver (raw, host_device, ...)
	ReadOnly bool
}

// blockInfo is what query-block says about one block device (the fields
// qvm uses, present since QEMU 2.x).
type blockInfo struct {
	Device    string  `json:"device"`
	Qdev      *string `json:"qdev"`
	Removable bool    `json:"removable"`
	Locked    bool    `json:"locked"`
	TrayOpen  *bool   `json:"tray_open"`
	Inserted  *struct {
		File string `json:"file"`
		Drv  string `json:"drv"`
		Ro   bool   `json:"ro"`
	} `json:"inserted"`
}

// Drives lists the guest's block devices.
func (m *Monitor) Drives(ctx context.Context) ([]Drive, error) {
	var infos []blockInfo
	if err := m.conn.Execute(ctx, "query-block", nil, &infos); err != nil {
		return nil, err
	}
	out := make([]Drive, 0, len(infos))
	for _, in := range infos {
		d := Drive{Device: in.Device, Removable: in.Removable, Locked: in.Locked}
		if in.Qdev != nil {
			d.ID = qdevID(*in.Qdev)
		}
		if in.TrayOpen != nil {
			d.TrayOpen = *in.TrayOpen
		}
		if in.Inserted != nil {
			d.Medium = &Medium{File: in.Inserted.File, Driver: in.Inserted.Drv, ReadOnly: in.Inserted.Ro}
		}
		out = append(out, d)
	}
	return out, nil
}

// qdevID turns query-block's qdev field into an id eject accepts: the id
// itself, or the id part of a /machine/peripheral/ID/... path.
func qdevID(q string) string {
	if rest, ok := strings.CutPrefix(q, "/machine/peripheral/"); ok {
		id, _, _ := strings.Cut(rest, "/")
		return id
	}
	return q
}

// Removable returns the drives that take media (the CD-ROM drives of an
// HVM guest).
func (m *Monitor) Removable(ctx context.Context) ([]Drive, error) {
	ds, err := m.Drives(ctx)
	if err != nil {
		return nil, err
	}
	var out []Drive
	for _, d := range ds {
		if d.Removable {
			out = append(out, d)
		}
	}
	return out, nil
}

// ErrNoDrive is returned for a drive id QEMU does not have.
var ErrNoDrive = errors.New("no such removable drive")

// Eject empties the drive with the given device id, even if the guest
// has locked its tray (as a user pressing the eject button of a locked
// drive cannot, this is what "force" means: the guest is told after the
// fact).
func (m *Monitor) Eject(ctx context.Context, id string) error {
	args := struct {
		ID    string `json:"id"`
		Force bool   `json:"force"`
	}{id, true}
	return m.conn.Execute(ctx, "eject", args, nil)
}

// ChangeMedium opens file (an image QEMU can reach: in a stubdomain, its
// own block device) read-only as raw data and puts it into the drive with
// the given device id, closing the tray.
func (m *Monitor) ChangeMedium(ctx context.Context, id, file string) error {
	args := struct {
		ID       string `json:"id"`
		Filename string `json:"filename"`
		Format   string `json:"format"`
		Mode     string `json:"read-only-mode"`
	}{id, file, "raw", "read-only"}
	return m.conn.Execute(ctx, "blockdev-change-medium", args, nil)
}

// Drive returns the removable drive with the given device id.
func (m *Monitor) Drive(ctx context.Context, id string) (Drive, error) {
	ds, err := m.Removable(ctx)
	if err != nil {
		return Drive{}, err
	}
	for _, d := range ds {
		if d.ID == id {
			return d, nil
		}
	}
	return Drive{}, fmt.Errorf("drive %s: %w", id, ErrNoDrive)
}
