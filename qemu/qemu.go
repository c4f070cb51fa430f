// Package qemu controls a running HVM guest's device model over QMP: it
// lists the guest's removable drives and ejects or changes the medium in
// its CD-ROM drive.
//
// For a Xen guest, dom0 reaches the QMP monitor at SocketPath(domid). When
// QEMU runs in dom0 that is QEMU's own socket; when it runs in a
// stubdomain, it is libxl's vchan-socket-proxy, which relays to the QMP
// socket the stubdomain's init gives QEMU. Either way QEMU serves one
// client at a time, so hold a Monitor only for the commands at hand.
//
// The commands go through github.com/digitalocean/go-qemu's QMP socket
// monitor and its raw API (generated from QEMU 2.11's schema, which has
// query-block, eject and blockdev-change-medium with device ids).
package qemu

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/digitalocean/go-qemu/qmp"
	"github.com/digitalocean/go-qemu/qmp/raw"
)

// SocketPath is where libxl keeps the QMP socket of domain domid's device
// model in dom0.
func SocketPath(domid uint32) string {
	return fmt.Sprintf("/var/run/xen/qmp-libxl-%d", domid)
}

// dialTimeout bounds connecting to the socket (the greeting and handshake
// are bounded by the caller's context).
const dialTimeout = 5 * time.Second

// Monitor is a QMP connection to one QEMU. Its methods are not for
// concurrent use.
type Monitor struct {
	path string
	mon  *qmp.SocketMonitor
	raw  *raw.Monitor
}

// Dial connects to the QMP socket at path and does the capabilities
// handshake. It fails when ctx ends first, e.g. while another client holds
// the monitor.
func Dial(ctx context.Context, path string) (*Monitor, error) {
	mon, err := qmp.NewSocketMonitor("unix", path, dialTimeout)
	if err != nil {
		return nil, fmt.Errorf("QMP %s: %w", path, err)
	}
	m := &Monitor{path: path, mon: mon}
	if err := m.call(ctx, "connect", mon.Connect); err != nil {
		mon.Disconnect()
		return nil, err
	}
	m.raw = raw.NewMonitor(mon)
	return m, nil
}

// Close ends the connection.
func (m *Monitor) Close() error { return m.mon.Disconnect() }

// call runs fn, giving up (and breaking the connection) when ctx ends.
func (m *Monitor) call(ctx context.Context, what string, fn func() error) error {
	done := make(chan error, 1)
	go func() { done <- fn() }()
	select {
	case err := <-done:
		if err != nil {
			return fmt.Errorf("QMP %s: %s: %w", m.path, what, err)
		}
		return nil
	case <-ctx.Done():
		m.mon.Disconnect()
		<-done
		return fmt.Errorf("QMP %s: %s: %w", m.path, what, ctx.Err())
	}
}

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

// Drives lists the guest's block devices.
func (m *Monitor) Drives(ctx context.Context) ([]Drive, error) {
	var infos []raw.BlockInfo
	err := m.call(ctx, "query-block", func() (err error) {
		infos, err = m.raw.QueryBlock()
		return err
	})
	if err != nil {
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
	force := true
	return m.call(ctx, "eject "+id, func() error { return m.raw.Eject(nil, &id, &force) })
}

// ChangeMedium opens file (an image QEMU can reach: in a stubdomain, its
// own block device) read-only as raw data and puts it into the drive with
// the given device id, closing the tray.
func (m *Monitor) ChangeMedium(ctx context.Context, id, file string) error {
	format := "raw"
	mode := raw.BlockdevChangeReadOnlyModeReadOnly
	return m.call(ctx, "blockdev-change-medium "+id, func() error {
		return m.raw.BlockdevChangeMedium(nil, &id, file, &format, &mode)
	})
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
