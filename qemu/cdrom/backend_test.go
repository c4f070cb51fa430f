package cdrom

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/qvm-project/qvm/blkback"
	"github.com/qvm-project/qvm/qemu"
	"github.com/qvm-project/qvm/xenstore"
	"github.com/qvm-project/qvm/xenstore/xenstoretest"
)

// fakeQEMU is a QMP peer with one removable drive: it answers
// query-block with the drive and its medium, and records the media
// changes it is asked for.
type fakeQEMU struct {
	path string

	mu      sync.Mutex
	file    string   // the medium, "" for none
	changes []string // blockdev-change-medium filenames, "eject" for ejects
}

func newFakeQEMU(t *testing.T, driveID, file string) *fakeQEMU {
	f := &fakeQEMU{path: filepath.Join(t.TempDir(), "qmp"), file: file}
	l, err := net.Listen("unix", f.path)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() {
		l.Close()
		wg.Wait()
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				f.serve(c, driveID)
			}()
		}
	}()
	return f
}

func (f *fakeQEMU) serve(c net.Conn, driveID string) {
	io.WriteString(c, `{"QMP": {"version": {"qemu": {"micro": 0, "minor": 2, "major": 7}, "package": "fake"}, "capabilities": []}}`+"\r\n")
	r := bufio.NewReader(c)
	for {
		line, err := r.ReadBytes('\n')
		if err != nil {
			return
		}
		var req struct {
			Execute   string
			ID        string
			Arguments struct{ Filename string }
		}
		json.Unmarshal(line, &req)
		var ret any = struct{}{}
		f.mu.Lock()
		switch req.Execute {
		case "query-block":
			d := map[string]any{"device": "", "qdev": "/machine/peripheral/" + driveID + "/virtio-backend", "removable": true, "locked": false, "tray_open": f.file == ""}
			if f.file != "" {
				d["inserted"] = map[string]any{"file": f.file, "drv": "raw", "ro": true}
			}
			ret = []any{d}
		case "blockdev-change-medium":
			f.file = req.Arguments.Filename
			f.changes = append(f.changes, f.file)
		case "eject":
			f.file = ""
			f.changes = append(f.changes, "eject")
		}
		f.mu.Unlock()
		b, _ := json.Marshal(map[string]any{"return": ret, "id": req.ID})
		c.Write(append(b, '\r', '\n'))
	}
}

func (f *fakeQEMU) dial(ctx context.Context, domid uint32) (*qemu.Monitor, error) {
	return qemu.Dial(ctx, f.path)
}

// addDisk writes a block device of domain domid as libxl does: the
// frontend (owned by the domain), dom0's backend (readable by the
// domain) with params, and libxl's own record.
func addDisk(t *testing.T, ctx context.Context, dom0 *xenstore.Client, domid uint32, devid int, kind, params string) (fe, be string) {
	t.Helper()
	fe = fmt.Sprintf("/local/domain/%d/device/vbd/%d", domid, devid)
	be = fmt.Sprintf("/local/domain/0/backend/%s/%d/%d", kind, domid, devid)
	lp := fmt.Sprintf("/libxl/%d/device/vbd/%d", domid, devid)
	b := dom0.Batch()
	b.Mkdir(fe)
	b.SetPerms(fe, xenstore.Perms{{Domid: domid, Access: xenstore.AccessNone}, {Domid: 0, Access: xenstore.AccessRead}})
	b.WriteString(fe+"/backend", be)
	b.WriteString(fe+"/state", stateConnected)
	b.Mkdir(be)
	b.SetPerms(be, xenstore.Perms{{Domid: 0, Access: xenstore.AccessNone}, {Domid: domid, Access: xenstore.AccessRead}})
	b.WriteString(be+"/params", params)
	b.WriteString(be+"/frontend", fe)
	b.WriteString(lp+"/backend", be)
	b.WriteString(lp+"/frontend", fe)
	b.WriteString(lp+"/params", params)
	if err := b.Run(ctx); err != nil {
		t.Fatal(err)
	}
	return fe, be
}

// addDomain writes a domain's directory as libxl does: dom0's, readable
// by the domain.
func addDomain(t *testing.T, ctx context.Context, dom0 *xenstore.Client, domid uint32) {
	t.Helper()
	p := fmt.Sprintf("/local/domain/%d", domid)
	b := dom0.Batch()
	b.Mkdir(p)
	b.SetPerms(p, xenstore.Perms{{Domid: 0, Access: xenstore.AccessNone}, {Domid: domid, Access: xenstore.AccessRead}})
	b.Mkdir(p + "/device")
	b.Mkdir(fmt.Sprintf("/libxl/%d/device/vbd", domid))
	if err := b.Run(ctx); err != nil {
		t.Fatal(err)
	}
}

// recordDisks is a StubdomDisks that records its calls and plays a
// frontend that connects.
type recordDisks struct {
	xs       *xenstore.Client
	attached []string
}

func (r *recordDisks) Attach(ctx context.Context, domid uint32, vdev, image string) error {
	r.attached = append(r.attached, vdev+"="+image)
	p := fmt.Sprintf("/local/domain/%d/device/vbd/%d/state", domid, blkback.VdevNumber(vdev))
	return r.xs.WriteString(ctx, p, stateConnected)
}

func (r *recordDisks) Detach(ctx context.Context, domid uint32, vdev string) error { return nil }

// TestBackendFromLibxlRecord: a guest (whose QEMU is in dom0) and a
// stubdomain (which also has the guest's rights) point the backend keys
// of their frontends at another VM's disk, in a real C xenstored. qvm
// still reports the disc that is in the drive, inserts by attaching a new
// disk rather than believing xvdd holds the other VM's image, and picks a
// name the stubdomain's libxl record does not have even when the
// stubdomain has removed its own frontend entry.
func TestBackendFromLibxlRecord(t *testing.T) {
	d := xenstoretest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	dom0 := d.Client()
	const guest, stub, dom0QEMUGuest, other = 5, 6, 7, 9
	xvdd, xvde := blkback.VdevNumber("xvdd"), blkback.VdevNumber("xvde")
	for _, dom := range []uint32{guest, stub, dom0QEMUGuest, other} {
		addDomain(t, ctx, dom0, dom)
	}
	if err := dom0.WriteString(ctx, fmt.Sprintf("/local/domain/%d/image/device-model-domid", guest), fmt.Sprint(stub)); err != nil {
		t.Fatal(err)
	}
	// Both are introduced (as SET_TARGET needs), the stubdomain acts
	// with the guest's rights.
	stubXS, guestXS := d.Guest(stub), d.Guest(dom0QEMUGuest)
	d.Guest(guest)
	if err := dom0.SetTarget(ctx, stub, guest); err != nil {
		t.Fatal(err)
	}
	_, otherBE := addDisk(t, ctx, dom0, other, xvdd, "vbd", "/var/lib/qvm/appvms/other/private.img")
	guestFE, _ := addDisk(t, ctx, dom0, guest, xvdd, "vbd", "/srv/iso/installer.iso")
	stubFE, _ := addDisk(t, ctx, dom0, stub, xvdd, "vbd", "/srv/iso/installer.iso")
	extraFE, _ := addDisk(t, ctx, dom0, stub, xvde, "vbd", "/srv/iso/disc2.iso")
	g7FE, _ := addDisk(t, ctx, dom0, dom0QEMUGuest, xvdd, "qdisk", "raw:/srv/iso/dom0qemu.iso")

	// The attacks: each domain rewrites what it owns (the stubdomain
	// also the guest's), and the stubdomain drops its second disk's
	// frontend entry.
	for _, w := range []struct {
		xs   *xenstore.Client
		path string
	}{{stubXS, stubFE}, {stubXS, guestFE}, {guestXS, g7FE}} {
		if err := w.xs.WriteString(ctx, w.path+"/backend", otherBE); err != nil {
			t.Fatalf("domain rewriting %s/backend: %v (the test must be able to attack)", w.path, err)
		}
	}
	if err := stubXS.Rm(ctx, extraFE); err != nil {
		t.Fatalf("stubdomain removing %s: %v", extraFE, err)
	}
	// Neither can touch dom0's records.
	for _, p := range []string{"/libxl/6/device/vbd/51760/backend", "/local/domain/0/backend/vbd/6/51760/params"} {
		if err := stubXS.WriteString(ctx, p, otherBE); err == nil {
			t.Fatalf("the stubdomain wrote %s", p)
		}
	}

	// The stubdomain's QEMU has its xvdd in the drive: the disc is the
	// one dom0's backend serves it.
	q := newFakeQEMU(t, "ide-51760", "/dev/xvdd")
	disks := &recordDisks{xs: dom0}
	c := &Changer{XS: dom0, Disks: disks, QMP: q.dial}
	st, err := c.Status(ctx, guest)
	if err != nil || st.Medium != "/srv/iso/installer.iso" || st.Stubdom != stub || st.DriveID != "ide-51760" {
		t.Fatalf("Status through the stubdomain: %+v, %v; want /srv/iso/installer.iso", st, err)
	}

	// Inserting the image the rewritten key names: xvdd does not hold
	// it, so it is attached as a new disk, at a name libxl's record
	// shows free (not xvde, whose frontend entry the stubdomain removed).
	if err := c.Eject(ctx, guest, ""); err != nil {
		t.Fatal(err)
	}
	img := "/var/lib/qvm/appvms/other/private.img"
	if err := c.Insert(ctx, guest, img); err != nil {
		t.Fatal(err)
	}
	if want := []string{"xvdf=" + img}; !slices.Equal(disks.attached, want) {
		t.Errorf("attached %v, want %v", disks.attached, want)
	}
	if want := []string{"eject", "/dev/xvdf"}; !slices.Equal(q.changes, want) {
		t.Errorf("QEMU was asked %v, want %v", q.changes, want)
	}

	// QEMU in dom0: the disc is the one of the guest's qdisk backend.
	q7 := newFakeQEMU(t, "ide-51760", "/dev/fdset/1")
	c.QMP = q7.dial
	if st, err := c.Status(ctx, dom0QEMUGuest); err != nil || st.Medium != "/srv/iso/dom0qemu.iso" || st.Stubdom != 0 {
		t.Fatalf("Status with QEMU in dom0: %+v, %v; want /srv/iso/dom0qemu.iso", st, err)
	}

	// A libxl record that names anything but dom0's backend of the
	// device is refused.
	if err := dom0.WriteString(ctx, "/libxl/7/device/vbd/51760/backend", otherBE); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Status(ctx, dom0QEMUGuest); err == nil || !strings.Contains(err.Error(), "not a backend of that device in dom0") {
		t.Fatalf("Status with a libxl record naming another domain's disk: %v", err)
	}
}

// TestStatusOfServedDisc: a stubdomain's xvdd served by VM 9's blkback
// (qvm-start --cdrom=VM:/path) is reported as that VM's file, from
// libxl's record and qvm's key in it, in a real C xenstored; what VM 9
// writes in its own backend directory is never taken. A drive holding
// it is busy for a dom0 disc, and a detach naming a dom0 disc refuses.
// A record naming another VM's vbd of some other device is refused.
func TestStatusOfServedDisc(t *testing.T) {
	d := xenstoretest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	dom0 := d.Client()
	const guest, stub, server = 5, 6, 9
	for _, dom := range []uint32{guest, stub, server} {
		addDomain(t, ctx, dom0, dom)
	}
	if err := dom0.WriteString(ctx, fmt.Sprintf("/local/domain/%d/image/device-model-domid", guest), fmt.Sprint(stub)); err != nil {
		t.Fatal(err)
	}
	xvdd := blkback.VdevNumber("xvdd")
	be := fmt.Sprintf("/local/domain/%d/backend/vbd/%d/%d", server, stub, xvdd)
	rec := fmt.Sprintf("/libxl/%d/device/vbd/%d", stub, xvdd)
	b := dom0.Batch()
	b.Mkdir(be)
	b.SetPerms(be, xenstore.Perms{{Domid: server, Access: xenstore.AccessNone}, {Domid: stub, Access: xenstore.AccessRead}})
	b.WriteString(rec+"/backend", be)
	b.WriteString(rec+"/"+blkback.SourceKey, "/home/user/installcd.iso")
	if err := b.Run(ctx); err != nil {
		t.Fatal(err)
	}
	// The serving VM writes what it likes in its backend directory.
	if err := d.Guest(server).WriteString(ctx, be+"/params", "/etc/shadow"); err != nil {
		t.Fatalf("VM %d writing its backend: %v (the test must be able to attack)", server, err)
	}
	q := newFakeQEMU(t, "ide-51760", "/dev/xvdd")
	disks := &recordDisks{xs: dom0}
	c := &Changer{XS: dom0, Disks: disks, QMP: q.dial}
	st, err := c.Status(ctx, guest)
	if err != nil || st.Server != server || st.Medium != "/home/user/installcd.iso" || st.Stubdom != stub {
		t.Fatalf("Status of a served disc: %+v, %v; want /home/user/installcd.iso from domain %d", st, err, server)
	}
	if err := c.Insert(ctx, guest, "/srv/iso/disc2.iso"); !errors.Is(err, ErrBusy) || !strings.Contains(err.Error(), "domain 9:/home/user/installcd.iso") {
		t.Errorf("Insert into a drive holding a served disc: %v", err)
	}
	if err := c.Eject(ctx, guest, "/home/user/installcd.iso"); err == nil || !strings.Contains(err.Error(), "holds domain 9:/home/user/installcd.iso, not dom0:") {
		t.Errorf("Eject naming a dom0 disc: %v", err)
	}
	if len(disks.attached) != 0 || len(q.changes) != 0 {
		t.Errorf("refused changes still did %v, %v", disks.attached, q.changes)
	}
	if err := dom0.WriteString(ctx, rec+"/backend", fmt.Sprintf("/local/domain/%d/backend/vbd/%d/51712", server, stub)); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Status(ctx, guest); err == nil || !strings.Contains(err.Error(), "not a vbd of that device") {
		t.Errorf("Status with a record naming another device: %v", err)
	}
}
