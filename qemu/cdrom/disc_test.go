package cdrom

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/qvm-project/qvm/internal/testenv"
	"github.com/qvm-project/qvm/loopdev"
)

// TestParseDisc: dom0 ISO images and the R3 bare path are taken; a VM's
// file, a relative path, a missing file, a directory and a file that is no
// optical image are refused, each saying why.
func TestParseDisc(t *testing.T) {
	dir := t.TempDir()
	iso := filepath.Join(dir, "installer.iso")
	img := make([]byte, 17*2048)
	copy(img[16*2048:], "\x01CD001\x01")
	if err := os.WriteFile(iso, img, 0o644); err != nil {
		t.Fatal(err)
	}
	raw := filepath.Join(dir, "disk.img")
	if err := os.WriteFile(raw, make([]byte, 40*2048), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, spec := range []string{"dom0:" + iso, iso} {
		if got, err := ParseDisc("--cdrom", spec); err != nil || got != iso {
			t.Errorf("ParseDisc(%q) = %q, %v; want %q", spec, got, err, iso)
		}
	}
	cases := []struct {
		spec, want string
		is         error
	}{
		{"work:/home/user/x.iso", "only for a start", ErrNotDom0},
		{"dom0:x.iso", "absolute path", ErrRelativePath},
		{"dom0:" + dir + "/nope.iso", "no such file", nil},
		{"dom0:" + dir, "not an image file", nil},
		{"dom0:" + raw, "not an ISO 9660", nil},
	}
	for _, c := range cases {
		_, err := ParseDisc("--cdrom", c.spec)
		if err == nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), "--cdrom") {
			t.Errorf("ParseDisc(%q): %v, want an error naming --cdrom and saying %q", c.spec, err, c.want)
		}
		if c.is != nil && !errors.Is(err, c.is) {
			t.Errorf("ParseDisc(%q): %v does not match %v", c.spec, err, c.is)
		}
	}
}

// TestVMDisc: VM:/path splits into the VM and its path; dom0's forms are
// left to ParseDisc; an empty VM, a relative path or a control character
// (which would end the VM's one-line command) are refused, saying why.
func TestVMDisc(t *testing.T) {
	vm, path, ok, err := VMDisc("--cdrom", "someVM:/home/user/install cd.iso")
	if err != nil || !ok || vm != "someVM" || path != "/home/user/install cd.iso" {
		t.Errorf("VMDisc(someVM:...) = %q, %q, %v, %v", vm, path, ok, err)
	}
	for _, spec := range []string{"dom0:/x.iso", "/x.iso", "/a:b.iso", "x.iso"} {
		if _, _, ok, err := VMDisc("--cdrom", spec); ok || err != nil {
			t.Errorf("VMDisc(%q) = %v, %v; want a dom0 disc", spec, ok, err)
		}
	}
	cases := []struct{ spec, want string }{
		{":/x.iso", "no VM before the colon"},
		{"work:x.iso", "absolute path in work"},
		{"work:/x\n.iso", "control character"},
		{"work:/x\x1b[2J.iso", "control character"},
	}
	for _, c := range cases {
		if _, _, ok, err := VMDisc("--cdrom", c.spec); ok || err == nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), "--cdrom") {
			t.Errorf("VMDisc(%q) = %v, %v; want an error naming --cdrom and saying %q", c.spec, ok, err, c.want)
		}
	}
}

// FuzzIsOpticalImage feeds arbitrary image headers to the disc check:
// it must not panic, and must only accept data that reaches a volume
// descriptor's identifier at sector 16 or later.
func FuzzIsOpticalImage(f *testing.F) {
	iso := make([]byte, 17*2048)
	copy(iso[16*2048:], "\x01CD001\x01")
	f.Add(iso)
	f.Add([]byte("not an image"))
	f.Fuzz(func(t *testing.T, data []byte) {
		if IsOpticalImage(bytes.NewReader(data)) && len(data) < 16*2048+6 {
			t.Fatalf("accepted %d bytes, shorter than the first volume descriptor", len(data))
		}
	})
}

// TestParseDiscRefusesDom0sDisks: a block device dom0 has mounted, and an
// image file behind a mounted loop device, are refused; once unmounted,
// both are taken. (The image is a btrfs filesystem with an ISO 9660
// descriptor at sector 16, where btrfs keeps nothing, so that it is both
// mountable and taken for a disc.)
func TestParseDiscRefusesDom0sDisks(t *testing.T) {
	testenv.RequireRoot(t)
	testenv.LookPath(t, "mkfs.btrfs")
	ctx := context.Background()
	dir := t.TempDir()
	img := filepath.Join(dir, "disc.iso")
	f, err := os.Create(img)
	if err != nil {
		t.Fatal(err)
	}
	f.Truncate(256 << 20)
	f.Close()
	if out, err := exec.Command("mkfs.btrfs", "-q", img).CombinedOutput(); err != nil {
		t.Fatalf("mkfs.btrfs: %v\n%s", err, out)
	}
	f, err = os.OpenFile(img, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteAt([]byte("\x01CD001\x01"), 16*2048)
	f.Close()
	dev, err := loopdev.Attach(ctx, img, false)
	if err != nil {
		t.Fatal(err)
	}
	defer dev.Close()
	mnt := filepath.Join(dir, "mnt")
	os.Mkdir(mnt, 0o755)
	if err := unix.Mount(dev.Path, mnt, "btrfs", 0, ""); err != nil {
		t.Fatalf("mount %s: %v", dev.Path, err)
	}
	mounted := true
	defer func() {
		if mounted {
			unix.Unmount(mnt, 0)
		}
	}()
	for _, spec := range []string{"dom0:" + dev.Path, "dom0:" + img} {
		if _, err := ParseDisc("--cdrom", spec); !errors.Is(err, ErrInUse) || !strings.Contains(err.Error(), "mounted") {
			t.Errorf("ParseDisc(%s) while mounted: %v, want ErrInUse", spec, err)
		}
	}
	if err := unix.Unmount(mnt, 0); err != nil {
		t.Fatal(err)
	}
	mounted = false
	for _, spec := range []string{"dom0:" + dev.Path, "dom0:" + img} {
		if _, err := ParseDisc("--cdrom", spec); err != nil {
			t.Errorf("ParseDisc(%s) once unmounted: %v", spec, err)
		}
	}
}
