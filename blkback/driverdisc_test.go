package blkback

import (
	"context"
	"errors"
	"strings"
	"syscall"
	"testing"

	"github.com/qvm-project/qvm/xenstore"
	"github.com/qvm-project/qvm/xenstore/xenstoretest"
)

func TestParseDriverDisc(t *testing.T) {
	d := DriverDisc{Vdev: "xvdd", Backend: 3, Major: 7, Minor: 12, Dev: "/dev/loop12", Source: "/home/user/my cd:1.iso"}
	got, err := ParseDriverDisc(d.String())
	if err != nil || got != d {
		t.Fatalf("ParseDriverDisc(%q) = %+v, %v; want %+v", d.String(), got, err, d)
	}
	for _, bad := range []string{
		"", "xvdd:3:7:12:/dev/loop12", "hdd:3:7:0:/dev/loop0:/x", "xvdd:0:7:0:/dev/loop0:/x",
		"xvdd:3:7:0:/dev/sda:/x", "xvdd:3:7:0:/dev/loop01:/x", "xvdd:3:7:0:/dev/loop0/x:/x",
		"xvdd:-1:7:0:/dev/loop0:/x", "xvdd:32752:7:0:/dev/loop0:/x", "xvdd:3:4096:0:/dev/loop0:/x",
		"xvdd:3:7:1048576:/dev/loop0:/x", "xvdd:3:7:0x1:/dev/loop0:/x",
	} {
		if d, err := ParseDriverDisc(bad); !errors.Is(err, ErrBadDriverDisc) {
			t.Errorf("ParseDriverDisc(%q) = %+v, %v; want ErrBadDriverDisc", bad, d, err)
		}
	}
}

func TestVdevNumber(t *testing.T) {
	for v, want := range map[string]int{"xvda": 51712, "xvdd": 51760, "xvde": 51776, "xvdp": 51952, "xvdq": 1<<28 | 16<<8, "xvdz": 1<<28 | 25<<8, "hda": -1, "xvdaa": -1, "xvdA": -1} {
		if got := VdevNumber(v); got != want {
			t.Errorf("VdevNumber(%q) = %d, want %d", v, got, want)
		}
	}
}

func TestIsLoopName(t *testing.T) {
	for s, want := range map[string]bool{
		"/dev/loop0": true, "/dev/loop7": true, "/dev/loop123456": true,
		"/dev/loop": false, "/dev/loop1234567": false, "/dev/loop01": false, "/dev/loop1 ": false,
		"/dev/loop1\n": false, "dev/loop1": false, "/dev/loopa": false, "/dev/loop-1": false, "/dev/xvda": false,
	} {
		if got := IsLoopName(s); got != want {
			t.Errorf("IsLoopName(%q) = %v, want %v", s, got, want)
		}
	}
}

func FuzzParseDriverDisc(f *testing.F) {
	f.Add("xvdd:3:7:0:/dev/loop0:/home/user/installcd.iso")
	f.Add("xvdd:3:7:0:/dev/loop0:")
	f.Fuzz(func(t *testing.T, s string) {
		d, err := ParseDriverDisc(s)
		if err != nil {
			return
		}
		if !IsLoopName(d.Dev) || d.Backend == 0 || VdevNumber(d.Vdev) < 0 {
			t.Fatalf("ParseDriverDisc(%q) took %+v", s, d)
		}
		if again, err := ParseDriverDisc(d.String()); err != nil || again != d {
			t.Fatalf("round trip of %q: %+v, %v", s, again, err)
		}
	})
}

// writeDriverQdisk writes what libxl 4.17 writes for stubdomain 9's
// CD-ROM whose backend domain is 3 (a qdisk there) and returns its paths.
func writeDriverQdisk(t *testing.T, xs *xenstore.Client) (qdisk string, p Paths) {
	t.Helper()
	ctx := context.Background()
	qdisk, p = DriverDiscPaths(9, DriverDisc{Vdev: "xvdd", Backend: 3})
	w := map[string]string{
		qdisk + "/params": "raw:/dev/loop4", qdisk + "/mode": "r", qdisk + "/dev": "xvdd", qdisk + "/type": "qdisk",
		qdisk + "/device-type": "cdrom", qdisk + "/frontend": p.Frontend, qdisk + "/state": "1",
		p.Frontend + "/backend": qdisk, p.Frontend + "/backend-id": "3", p.Frontend + "/state": "1",
		p.Record + "/backend": qdisk, p.Record + "/frontend": p.Frontend,
	}
	for k, v := range w {
		if err := xs.WriteString(ctx, k, v); err != nil {
			t.Fatal(err)
		}
	}
	return qdisk, p
}

// TestServeDriverDisc turns a stubdomain's qdisk disc in a driver domain
// into a vbd backend there, against the real C xenstored: the vbd names
// the device and number qvm was given, belongs to the serving domain and
// is readable by the stubdomain, the frontend and libxl's record point at
// it, the record names the source file, and the qdisk entries are gone.
// A record that names another backend is refused with nothing changed.
func TestServeDriverDisc(t *testing.T) {
	ctx := context.Background()
	xs := xenstoretest.Start(t).Client()
	qdisk, p := writeDriverQdisk(t, xs)
	d := DriverDisc{Vdev: "xvdd", Backend: 3, Major: 7, Minor: 4, Dev: "/dev/loop4", Source: "/home/user/installcd.iso"}
	if err := ServeDriverDisc(ctx, xs, 9, d); err != nil {
		t.Fatal(err)
	}
	if p.Backend != "/local/domain/3/backend/vbd/9/51760" {
		t.Errorf("backend %s", p.Backend)
	}
	for k, want := range map[string]string{
		p.Backend + "/params": "/dev/loop4", p.Backend + "/physical-device": "7:4", p.Backend + "/mode": "r",
		p.Backend + "/type": "phy", p.Backend + "/dev": "xvdd", p.Backend + "/frontend": p.Frontend,
		p.Backend + "/frontend-id": "9", p.Backend + "/state": "1", p.Backend + "/online": "1",
		p.Frontend + "/backend": p.Backend, p.Frontend + "/backend-id": "3",
		p.Record + "/backend": p.Backend, p.Record + "/" + SourceKey: d.Source,
	} {
		if got, err := xs.ReadString(ctx, k); err != nil || got != want {
			t.Errorf("%s = %q, %v; want %q", k, got, err, want)
		}
	}
	if perms, err := xs.GetPerms(ctx, p.Backend); err != nil || perms.String() != "n3,r9" {
		t.Errorf("backend perms %v, %v; want n3,r9 (the serving domain's, readable by the stubdomain)", perms, err)
	}
	for _, gone := range []string{qdisk, "/local/domain/3/backend/qdisk/9"} {
		if _, err := xs.Read(ctx, gone); !errors.Is(err, syscall.ENOENT) {
			t.Errorf("%s still there: %v", gone, err)
		}
	}

	// libxl's record names another backend: refused, untouched.
	xs2 := xenstoretest.Start(t).Client()
	qdisk, p = writeDriverQdisk(t, xs2)
	if err := xs2.WriteString(ctx, p.Record+"/backend", "/local/domain/0/backend/qdisk/9/51760"); err != nil {
		t.Fatal(err)
	}
	if err := ServeDriverDisc(ctx, xs2, 9, d); err == nil || !strings.Contains(err.Error(), "not "+qdisk) {
		t.Errorf("a disc libxl did not make was served: %v", err)
	}
	if got, err := xs2.ReadString(ctx, qdisk+"/params"); err != nil || got != "raw:/dev/loop4" {
		t.Errorf("refused disc changed: %q %v", got, err)
	}
	if _, err := xs2.Read(ctx, p.Backend); !errors.Is(err, syscall.ENOENT) {
		t.Errorf("refused disc got a vbd: %v", err)
	}
	if err := ServeDriverDisc(ctx, xs2, 9, DriverDisc{Vdev: "xvdd", Backend: 3, Dev: "/dev/sda"}); !errors.Is(err, ErrBadDriverDisc) {
		t.Errorf("a disc that is not a loop device: %v", err)
	}
}

// TestRemoveDriverBackends: after ServeDriverDisc, the stubdomain's disc
// backend in VM 3 goes (with its empty parent), and so does the qdisk
// libxl records in VM 3 for the guest's view of the disc; a dom0
// backend, a record naming another domain's device, and the other
// devices in VM 3 stay.
func TestRemoveDriverBackends(t *testing.T) {
	ctx := context.Background()
	xs := xenstoretest.Start(t).Client()
	_, p := writeDriverQdisk(t, xs)
	d := DriverDisc{Vdev: "xvdd", Backend: 3, Major: 7, Minor: 4, Dev: "/dev/loop4", Source: "/home/user/installcd.iso"}
	if err := ServeDriverDisc(ctx, xs, 9, d); err != nil {
		t.Fatal(err)
	}
	keep := []string{
		"/local/domain/0/backend/vbd/9/51712/params",  // dom0's: libxl's own
		"/local/domain/3/backend/vbd/10/51760/params", // another domain's disc
		"/local/domain/3/backend/vbd/9/51728/params",  // named by no record of 9
	}
	guestQdisk := "/local/domain/3/backend/qdisk/8/51760"
	w := map[string]string{
		"/libxl/9/device/vbd/51712/backend": "/local/domain/0/backend/vbd/9/51712",
		"/libxl/9/device/vbd/51744/backend": "/local/domain/3/backend/vbd/10/51760",
		"/libxl/8/device/vbd/51760/backend": guestQdisk,
		guestQdisk + "/params":              "raw:/home/user/installcd.iso",
	}
	for _, k := range keep {
		w[k] = "x"
	}
	for k, v := range w {
		if err := xs.WriteString(ctx, k, v); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range []struct {
		domid uint32
		want  int
	}{{9, 1}, {8, 1}, {9, 0}, {11, 0}} {
		if n, err := RemoveDriverBackends(ctx, xs, c.domid); err != nil || n != c.want {
			t.Errorf("RemoveDriverBackends(%d) = %d, %v; want %d", c.domid, n, err, c.want)
		}
	}
	for _, gone := range []string{p.Backend, guestQdisk, "/local/domain/3/backend/qdisk/8"} {
		if _, err := xs.Read(ctx, gone); !errors.Is(err, syscall.ENOENT) {
			t.Errorf("%s still there: %v", gone, err)
		}
	}
	for _, k := range keep {
		if got, err := xs.ReadString(ctx, k); err != nil || got != "x" {
			t.Errorf("%s = %q, %v; want it kept", k, got, err)
		}
	}
}
