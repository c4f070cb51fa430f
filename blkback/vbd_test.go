package blkback

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/qvm-project/qvm/internal/testenv"
	"github.com/qvm-project/qvm/loopdev"
	"github.com/qvm-project/qvm/xenstore"
	"github.com/qvm-project/qvm/xenstore/xenstoretest"
)

// writeQdisk writes what libxl 4.17 writes for a stubdomain's qdisk
// CD-ROM (libxl_disk.c device_disk_add) and returns its paths.
func writeQdisk(t *testing.T, xs *xenstore.Client, domid uint32, image, mode string) (fe, be, rec string) {
	t.Helper()
	ctx := context.Background()
	fe, be, rec = "/local/domain/9/device/vbd/51760", "/local/domain/0/backend/qdisk/9/51760", "/libxl/9/device/vbd/51760"
	w := map[string]string{
		be + "/params": "raw:" + image, be + "/mode": mode, be + "/dev": "xvdd", be + "/type": "qdisk",
		be + "/device-type": "cdrom", be + "/frontend": fe, be + "/state": "1",
		fe + "/backend": be, fe + "/backend-id": "0", fe + "/state": "1", fe + "/device-type": "cdrom",
		rec + "/backend": be, rec + "/frontend": fe,
	}
	for k, v := range w {
		if err := xs.WriteString(ctx, k, v); err != nil {
			t.Fatal(err)
		}
	}
	return fe, be, rec
}

// TestMoveQdisk moves a stubdomain's qdisk disc to blkback against the
// real C xenstored with a real loop device: the vbd backend names a
// read-only loop device of the image, the frontend and libxl's record
// point at it, and the qdisk entries are gone. A writable qdisk disk is refused with nothing changed
// and no loop device left.
func TestMoveQdisk(t *testing.T) {
	testenv.RequireRoot(t)
	ctx := context.Background()
	xs := xenstoretest.Start(t).Client()
	iso := filepath.Join(t.TempDir(), "disc.iso")
	if err := os.WriteFile(iso, make([]byte, 1<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	fe, qbe, rec := writeQdisk(t, xs, 9, iso, "r")
	devs, err := MoveQdisk(ctx, xs, 9)
	if err != nil {
		t.Fatal(err)
	}
	if len(devs) != 1 {
		t.Fatalf("MoveQdisk gave %d devices, want 1", len(devs))
	}
	dev := devs[0].Path
	if f, err := loopdev.BackingFile(dev); err != nil || f != iso {
		t.Errorf("%s backs %q, %v; want %s", dev, f, err, iso)
	}
	p := VbdPaths(9, 51760)
	for k, want := range map[string]string{
		p.Backend + "/params": dev, p.Backend + "/mode": "r", p.Backend + "/type": "phy", p.Backend + "/dev": "xvdd",
		p.Backend + "/frontend": fe, p.Backend + "/frontend-id": "9", p.Backend + "/state": "1",
		fe + "/backend": p.Backend, rec + "/backend": p.Backend,
	} {
		if got, err := xs.ReadString(ctx, k); err != nil || got != want {
			t.Errorf("%s = %q, %v; want %q", k, got, err, want)
		}
	}
	if perms, err := xs.GetPerms(ctx, p.Backend); err != nil || len(perms) != 2 || perms[0].Domid != 0 || perms[1].Domid != 9 || perms[1].Access != xenstore.AccessRead {
		t.Errorf("backend perms %v, %v; want dom0's, readable by the domain", perms, err)
	}
	for _, gone := range []string{qbe, "/local/domain/0/backend/qdisk/9"} {
		if _, err := xs.Read(ctx, gone); !errors.Is(err, syscall.ENOENT) {
			t.Errorf("%s still there: %v", gone, err)
		}
	}
	devs[0].Close()

	// No qdisk disks: nothing to do.
	if devs, err := MoveQdisk(ctx, xs, 9); err != nil || len(devs) != 0 {
		t.Errorf("second move: %v %v", devs, err)
	}

	// A writable one is refused, untouched.
	xs2 := xenstoretest.Start(t).Client()
	_, qbe, _ = writeQdisk(t, xs2, 9, iso, "w")
	before, _ := loopdev.Attached()
	if devs, err := MoveQdisk(ctx, xs2, 9); err == nil {
		t.Errorf("writable qdisk moved: %v", devs)
	}
	if got, err := xs2.ReadString(ctx, qbe+"/params"); err != nil || got != "raw:"+iso {
		t.Errorf("refused disk changed: %q %v", got, err)
	}
	if after, _ := loopdev.Attached(); len(after) != len(before) {
		t.Errorf("loop devices %v after a refusal, %v before", after, before)
	}
}
