package loopfs

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/qvm-project/qvm/internal/testenv"
)

// TestMakeClose: the filesystem is mounted with the asked type, and Close
// leaves no mount, loop device, image or directory behind.
func TestMakeClose(t *testing.T) {
	testenv.RequireRoot(t)
	for _, ft := range []Type{Ext4, Tmpfs} {
		for _, c := range ft.Commands() {
			testenv.LookPath(t, c)
		}
		work := t.TempDir()
		fs, err := Make(context.Background(), work, ft, 64<<20)
		if err != nil {
			t.Fatal(err)
		}
		mounts, _ := os.ReadFile("/proc/self/mounts")
		want := " " + fs.Dir + " " + string(ft) + " "
		if !strings.Contains(string(mounts), want) {
			t.Errorf("%s: no mount line containing %q", ft, want)
		}
		if err := os.WriteFile(fs.Path("f"), []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
		dev, img := fs.Device, fs.image
		t.Logf("%s on %q (image %q)", ft, dev, img)
		if err := fs.Close(); err != nil {
			t.Fatal(err)
		}
		if err := fs.Close(); err != nil {
			t.Errorf("second Close: %v", err)
		}
		mounts, _ = os.ReadFile("/proc/self/mounts")
		if strings.Contains(string(mounts), work) {
			t.Errorf("%s: still mounted under %s", ft, work)
		}
		if ents, _ := os.ReadDir(work); len(ents) != 0 {
			t.Errorf("%s: left %v in the work directory", ft, ents)
		}
		if dev != "" {
			out, _ := exec.Command("losetup", "-j", img).CombinedOutput()
			if len(strings.TrimSpace(string(out))) != 0 {
				t.Errorf("%s: loop device still attached: %s", ft, out)
			}
			if b, err := os.ReadFile(filepath.Join("/sys/block", filepath.Base(dev), "loop/backing_file")); err == nil && strings.Contains(string(b), img) {
				t.Errorf("%s: %s still backed by %s", ft, dev, img)
			}
		}
	}
}

// TestMakeBadType refuses an unknown type and leaves nothing.
func TestMakeBadType(t *testing.T) {
	work := t.TempDir()
	_, err := Make(context.Background(), work, "ntfs", 64<<20)
	if err == nil || !strings.Contains(err.Error(), `unknown filesystem type "ntfs"`) {
		t.Fatalf("err %v", err)
	}
	if ents, _ := os.ReadDir(work); len(ents) != 0 {
		t.Errorf("left %v", ents)
	}
}
