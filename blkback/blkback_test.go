package blkback

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/qvm-project/qvm/internal/testenv"
	"github.com/qvm-project/qvm/loopdev"
	"github.com/qvm-project/qvm/xenstore/xenstoretest"
)

// TestHotplug runs the hotplug step against the real C xenstored with a
// real loop device: add tells blkback the device's numbers and reports
// it connected; a file that is no block device, a missing device and an
// unknown action are refused; remove does nothing.
func TestHotplug(t *testing.T) {
	testenv.RequireRoot(t)
	ctx := context.Background()
	xs := xenstoretest.Start(t).Client()
	img := filepath.Join(t.TempDir(), "disk.img")
	if err := os.WriteFile(img, make([]byte, 1<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	dev, err := loopdev.Attach(ctx, img, true)
	if err != nil {
		t.Fatal(err)
	}
	defer dev.Close()
	var st unix.Stat_t
	if err := unix.Stat(dev.Path, &st); err != nil {
		t.Fatal(err)
	}

	be := "/local/domain/0/backend/vbd/5/51712"
	if err := xs.WriteString(ctx, be+"/params", dev.Path); err != nil {
		t.Fatal(err)
	}
	if err := Hotplug(ctx, xs, "add", be); err != nil {
		t.Fatalf("add: %v", err)
	}
	want := map[string]string{
		"physical-device":      fmt.Sprintf("%x:%x", unix.Major(st.Rdev), unix.Minor(st.Rdev)),
		"physical-device-path": dev.Path,
		"hotplug-status":       "connected",
	}
	for k, v := range want {
		if got, err := xs.ReadString(ctx, be+"/"+k); err != nil || got != v {
			t.Errorf("%s = %q, %v; want %q", k, got, err, v)
		}
	}
	if err := Hotplug(ctx, xs, "remove", be); err != nil {
		t.Errorf("remove: %v", err)
	}

	bad := "/local/domain/0/backend/vbd/5/51728"
	xs.WriteString(ctx, bad+"/params", img)
	if err := Hotplug(ctx, xs, "add", bad); err == nil || !strings.Contains(err.Error(), "not a block device") {
		t.Errorf("add of a plain file: %v", err)
	}
	xs.WriteString(ctx, bad+"/params", "/dev/nonexistent-qvm")
	if err := Hotplug(ctx, xs, "add", bad); err == nil || !strings.Contains(err.Error(), "/dev/nonexistent-qvm") {
		t.Errorf("add of a missing device: %v", err)
	}
	if _, err := xs.ReadString(ctx, bad+"/hotplug-status"); err == nil {
		t.Errorf("a refused add reported the disk connected")
	}
	if err := Hotplug(ctx, xs, "frobnicate", be); !errors.Is(err, ErrUnknownAction) {
		t.Errorf("unknown action: %v", err)
	}
}
