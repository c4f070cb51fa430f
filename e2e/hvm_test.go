package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/qvm-project/qvm/e2e/xenvm"
)

// qemuPart is the dom0 archive with Xen's device model (make dom0-qemu-image).
func qemuPart(t *testing.T, p xenvm.Parts) string {
	t.Helper()
	return xenvm.RequireDom0QEMU(t, p)
}

// hvmInside proves HVM in the test bed with the device model in dom0:
// Xen's xl starts an HVM guest (hvmloader, SeaBIOS, then the Debian kernel
// by direct boot with the guest image) whose marker reaches its emulated
// serial port; when the guest powers off, the domain and its QEMU are gone.
func hvmInside(t *testing.T) {
	dir := t.TempDir()
	copyTo(t, xenvm.GuestKernel, filepath.Join(dir, "vmlinuz"))
	copyTo(t, xenvm.GuestImage, filepath.Join(dir, "guest.cpio.gz"))
	name := "bed-hvm"
	marker := name + "-" + nonce(t)
	serial := filepath.Join(dir, "serial.log")
	cfg := writeCfg(t, name, `type="hvm"`, fmt.Sprintf(`memory=256
device_model_version="qemu-xen"
vga="none"
vnc=0
kernel="%s/vmlinuz"
ramdisk="%s/guest.cpio.gz"
cmdline="console=ttyS0 quiet qvm.marker=%s"
serial="file:%s"`, dir, dir, marker, serial))
	t.Cleanup(func() { _ = exec.Command("xl", "destroy", name).Run() })
	start := time.Now()
	if out, err := exec.Command("xl", "create", cfg).CombinedOutput(); err != nil {
		log, _ := os.ReadFile("/var/log/xen/qemu-dm-" + name + ".log")
		t.Fatalf("xl create %s: %v\n%s\ndevice model log:\n%s", name, err, out, log)
	}
	created := time.Since(start)
	want := "guestinit: marker " + marker
	if err := waitFor(15*time.Minute, func() bool { return fileHasLine(serial, want) }); err != nil {
		b, _ := os.ReadFile(serial)
		log, _ := os.ReadFile("/var/log/xen/qemu-dm-" + name + ".log")
		t.Fatalf("HVM guest: no %q on its serial port: %v\nserial:\n%s\ndevice model log:\n%s", want, err, xenvm.Tail(b, 30), xenvm.Tail(log, 30))
	}
	marked := time.Since(start)
	waitGone(t, name)
	if err := waitFor(time.Minute, func() bool { return len(procsNamed("xen-qemu-system-i386")) == 0 }); err != nil {
		t.Fatalf("device model still running after the HVM guest is gone: pids %v", procsNamed("xen-qemu-system-i386"))
	}
	t.Logf("HVM guest: xl create %.2f s, marker on serial %.2f s, domain and QEMU gone %.2f s after create started", created.Seconds(), marked.Seconds(), time.Since(start).Seconds())
	requireOnlyDom0(t)
}

// procsNamed lists the pids whose command name (comm) is name (truncated
// to the kernel's 15 characters).
func procsNamed(name string) []string {
	if len(name) > 15 {
		name = name[:15]
	}
	var pids []string
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "comm"))
		if err == nil && strings.TrimSpace(string(b)) == name {
			pids = append(pids, e.Name())
		}
	}
	return pids
}
