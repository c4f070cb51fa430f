package guestdisk_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/qvm-project/qvm/guestdisk"
	"github.com/qvm-project/qvm/internal/testenv"
	"github.com/qvm-project/qvm/loopdev"
)

// lvmBase keeps the test's lvm commands to themselves: no udev, no
// devices file, no hints, locks, backups or activation in the machine's
// directories.
const lvmBase = `devices {
	use_devicesfile = 0
	obtain_device_list_from_udev = 0
	hints = "none"
%s}
activation {
	udev_sync = 0
	udev_rules = 0
	monitoring = 0
}
backup {
	backup = 0
	archive = 0
}
global {
	event_activation = 0
	use_lvmpolld = 0
	locking_dir = "%s"
}
`

// TestLVMFilterHidesGuestVolumeGroups: a guest wrote an LVM physical
// volume and volume group on its disk. While qvm has the image attached,
// Debian's lvm2 with qvm's configuration (in lvmlocal.conf, where the
// configuration's comment says it goes) lists neither; with the machine's
// default configuration (the control) it lists both.
func TestLVMFilterHidesGuestVolumeGroups(t *testing.T) {
	testenv.RequireRoot(t)
	testenv.RequireFile(t, "/dev/loop-control")
	for _, c := range []string{"lvm", "losetup"} {
		testenv.LookPath(t, c)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	root := t.TempDir()
	t.Cleanup(func() { removeMarks(t, root) })
	image := filepath.Join(root, "state", "appvms", "work", "private.img")
	mkdirs(t, filepath.Dir(image), filepath.Join(root, "lock"))
	f, err := os.Create(image)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(32 << 20); err != nil {
		t.Fatal(err)
	}
	f.Close()
	vg := "qvmtest" + randomHex(t, 4)
	lvm := func(conf, local string, args ...string) (string, error) {
		dir := t.TempDir()
		writeFile(t, filepath.Join(dir, "lvm.conf"), []byte(conf))
		if local != "" {
			writeFile(t, filepath.Join(dir, "lvmlocal.conf"), []byte(local))
		}
		cmd := exec.CommandContext(ctx, "lvm", args...)
		cmd.Env = append(os.Environ(), "LVM_SYSTEM_DIR="+dir, "LVM_SUPPRESS_FD_WARNINGS=1")
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	only := func(dev string) string {
		return fmtConf(`	global_filter = [ "a|^`+dev+`$|", "r|.*|" ]
`, root)
	}

	// The guest's doing (from dom0, on a loop device of its own).
	dev := strings.TrimSpace(run(t, ctx, "losetup", "--find", "--show", image))
	for _, args := range [][]string{{"pvcreate", "-q", dev}, {"vgcreate", "-q", vg, dev}} {
		if out, err := lvm(only(dev), "", args...); err != nil {
			run(t, ctx, "losetup", "--detach", dev)
			t.Fatalf("lvm %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	run(t, ctx, "losetup", "--detach", dev)

	d, err := loopdev.Attach(ctx, image, false)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()

	// The control: the machine's defaults, kept to this device.
	out, err := lvm(only(d.Path), "", "pvs", "--noheadings", "-o", "pv_name,vg_name")
	if err != nil || !strings.Contains(out, d.Path) || !strings.Contains(out, vg) {
		t.Fatalf("without the filter lvm does not see %s's volume group %s: %v\n%s", d.Path, vg, err, out)
	}

	// qvm's configuration: lvm scans the machine and skips the device.
	conf := fmtConf("", root)
	for _, args := range [][]string{
		{"pvs", "--noheadings", "-o", "pv_name,vg_name"},
		{"vgs", "--noheadings", "-o", "vg_name"},
		{"vgscan"},
	} {
		out, err := lvm(conf, guestdisk.LVMConfig(), args...)
		if err != nil {
			t.Errorf("lvm %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		if strings.Contains(out, vg) || strings.Contains(out, d.Path+" ") {
			t.Errorf("lvm %s sees the guest's volumes:\n%s", strings.Join(args, " "), out)
		}
	}
	out, err = lvm(conf, guestdisk.LVMConfig(), "pvs", d.Path)
	if err == nil || !strings.Contains(out, "rejected by filter") {
		t.Errorf("lvm pvs %s: %v, want it rejected by the filter\n%s", d.Path, err, out)
	}
	if out, err := lvm(conf, guestdisk.LVMConfig(), "vgchange", "--activate", "y", vg); err == nil {
		t.Errorf("vgchange -ay %s worked:\n%s", vg, out)
	}
}

// fmtConf is lvmBase with more devices settings, its locks under root.
func fmtConf(devices, root string) string {
	return fmt.Sprintf(lvmBase, devices, filepath.Join(root, "lock"))
}
