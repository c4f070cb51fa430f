package loopdev

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/qvm-project/qvm/guestdisk"
	"github.com/qvm-project/qvm/internal/testenv"
)

func TestAttachServesTheImageAndClearsItself(t *testing.T) {
	testenv.RequireRoot(t)
	testenv.RequireFile(t, "/dev/loop-control")
	img := filepath.Join(t.TempDir(), "disk.img")
	data := bytes.Repeat([]byte("qvm!"), 1024)
	if err := os.WriteFile(img, data, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(guestdisk.MarkDir + filepath.Dir(filepath.Dir(img))) })
	d, err := Attach(context.Background(), img, true)
	if err != nil {
		t.Fatal(err)
	}
	// Marked for dom0's udev rules before the device was configured.
	if _, err := os.Stat(guestdisk.MarkDir + img); err != nil {
		t.Errorf("%s is not marked as a VM disk: %v", img, err)
	}
	got, err := os.ReadFile(d.Path)
	if err != nil || !bytes.Equal(got[:len(data)], data) {
		t.Fatalf("read %s: %v", d.Path, err)
	}
	// The kernel keeps at most 63 bytes of the name.
	name := img[:min(len(img), 63)]
	if b, err := BackingFile(d.Path); err != nil || b != name {
		t.Errorf("backing file %q, %v", b, err)
	}
	// Read-only: writes are refused.
	if f, err := os.OpenFile(d.Path, os.O_WRONLY, 0); err == nil {
		_, werr := f.Write([]byte("x"))
		f.Close()
		if werr == nil {
			t.Error("wrote to a read-only loop device")
		}
	}
	// A second holder keeps it attached after our Close; its close then
	// detaches it (autoclear): nothing leaks.
	other, err := os.Open(d.Path)
	if err != nil {
		t.Fatal(err)
	}
	d.Close()
	if b, _ := BackingFile(d.Path); b != name {
		t.Errorf("detached while still in use: %q", b)
	}
	backing := "/sys/block/" + filepath.Base(d.Path) + "/loop/backing_file"
	if b, err := os.ReadFile(backing); err != nil || string(bytes.TrimSpace(b)) != img {
		t.Errorf("%s while attached: %q, %v", backing, b, err)
	}
	other.Close()
	// Others may hold it a moment longer (udev answering the change
	// event, a parallel test listing loop devices): the kernel clears it
	// at their close. Watch sysfs, which holds no device open, with a
	// bound on the wait, not on its speed.
	deadline := time.Now().Add(time.Minute)
	for {
		b, err := os.ReadFile(backing)
		if os.IsNotExist(err) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("still attached to %q a minute after the last close (%v)", bytes.TrimSpace(b), err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
