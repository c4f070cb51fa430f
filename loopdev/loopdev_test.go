package loopdev

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"

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
	other.Close()
	if b, _ := BackingFile(d.Path); b != "" {
		t.Errorf("still attached to %q after the last close", b)
	}
}
