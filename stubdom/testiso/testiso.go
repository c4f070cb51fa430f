// Package testiso builds the small bootable ISO that the stubdomain's
// end-to-end tests and benchmark boot as an HVM guest: isolinux, the
// Debian kernel and an initramfs whose init (busybox sh) loads the drivers
// of QEMU's emulated IDE CD-ROM and NICs, asks for an address with busybox
// udhcpc on the emulated NIC, reports what it got, then reports every
// change of the medium in its CD-ROM drive, and powers off when it sees a
// disc with the label PowerOffLabel.
//
// The guest reports on the Xen debug console: its lines are written to
// /dev/kmsg at a level the quiet console prints, and the kernel runs with
// earlyprintk=xen keep_bootcon, which sends them to port 0xe9; Xen prints
// them as "(dN) ..." (xl dmesg, and Xen's own console). Every line starts
// with LinePrefix:
//
//	qvmguest: start
//	qvmguest: dhcp ip=10.137.0.5 subnet=255.255.255.255 router=10.137.0.1 dns=10.139.1.1 10.139.1.2
//	qvmguest: dhcp none          (no NIC, or no answer)
//	qvmguest: cdrom LABEL        (or "cdrom empty")
//	qvmguest: poweroff
//	qvmguest: key LINE           (a line typed on its keyboard, at any time)
//
// The kernel command line turns off the kernel's unplugging of emulated
// devices (xen_emul_unplug=never), so the guest uses the NIC that QEMU
// emulates, where the stubdomain's DHCP server answers, and not Xen's PV
// NIC.
package testiso

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"sort"
	"strings"

	"github.com/u-root/u-root/pkg/cpio"

	"github.com/qvm-project/qvm/bootinit"
	"github.com/qvm-project/qvm/stubdom/image"
)

// LinePrefix starts every line the guest reports.
const LinePrefix = "qvmguest: "

// Lines returns what the guest reported in text, a console log: the rest
// of each line after LinePrefix, trimmed. With domid set, text is Xen's
// console (xl dmesg) and only the lines of that domain ("(dN) ...") count.
func Lines(text, domid string) []string {
	var lines []string
	for _, l := range strings.Split(text, "\n") {
		if domid != "" && !strings.Contains(l, "(d"+domid+") ") {
			continue
		}
		if _, rest, ok := strings.Cut(l, LinePrefix); ok {
			lines = append(lines, strings.TrimSpace(rest))
		}
	}
	return lines
}

// PowerOffLabel is the volume label of a disc that makes the guest power
// off when it appears in its drive.
const PowerOffLabel = "QVMPOWEROFF"

// Where the parts come from on a Debian host.
const (
	IsolinuxBin = "/usr/lib/ISOLINUX/isolinux.bin"
	LdlinuxC32  = "/usr/lib/syslinux/modules/bios/ldlinux.c32"
	Busybox     = "/bin/busybox"
)

// guestModules are the drivers of the devices QEMU emulates for an HVM
// guest: the PIIX IDE controller and its CD-ROM, and the NIC models.
var guestModules = []bootinit.Module{
	{Name: "ata_piix"}, {Name: "sr_mod"}, {Name: "8139cp"}, {Name: "8139too"}, {Name: "e1000"},
}

// Spec describes an ISO.
type Spec struct {
	// Kernel is the guest kernel; ModulesDir its lib/modules/<version>
	// directory (with modules.dep), KernelVersion that version.
	Kernel, ModulesDir, KernelVersion string
	// Label is the ISO's volume label (at most 32 characters, A-Z 0-9 _).
	Label string
	// Cmdline is the kernel command line; empty means XenCmdline.
	Cmdline string
	// Out is the ISO file to write; WorkDir a scratch directory.
	Out, WorkDir string
}

// Build writes the ISO.
func Build(ctx context.Context, s Spec) error {
	if len(s.Label) == 0 || len(s.Label) > 32 || strings.Trim(s.Label, "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_") != "" {
		return fmt.Errorf("testiso: label %q: want 1 to 32 of A-Z, 0-9, _", s.Label)
	}
	for _, f := range []string{s.Kernel, IsolinuxBin, LdlinuxC32, Busybox} {
		if _, err := os.Stat(f); err != nil {
			return fmt.Errorf("testiso: %w (packages isolinux, syslinux-common, busybox-static)", err)
		}
	}
	root := filepath.Join(s.WorkDir, "iso-"+s.Label)
	if err := os.RemoveAll(root); err != nil {
		return err
	}
	initrd, err := Initramfs(s.ModulesDir, s.KernelVersion, filepath.Join(s.WorkDir, "initrd-stage-"+s.Label))
	if err != nil {
		return err
	}
	cmdline := s.Cmdline
	if cmdline == "" {
		cmdline = XenCmdline
	}
	if strings.ContainsAny(cmdline, "\n\r") {
		return fmt.Errorf("testiso: kernel command line %q has a line break", cmdline)
	}
	files := map[string][]byte{
		"isolinux/isolinux.cfg": []byte(isolinuxCfg + cmdline + "\n"),
		"boot/initrd.gz":        initrd,
	}
	for src, dst := range map[string]string{IsolinuxBin: "isolinux/isolinux.bin", LdlinuxC32: "isolinux/ldlinux.c32", s.Kernel: "boot/vmlinuz"} {
		b, err := os.ReadFile(src)
		if err != nil {
			return err
		}
		files[dst] = b
	}
	for name, b := range files {
		p := filepath.Join(root, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(p, b, 0o644); err != nil {
			return err
		}
	}
	cmd := exec.CommandContext(ctx, "xorriso", "-as", "mkisofs", "-quiet", "-o", s.Out, "-V", s.Label,
		"-b", "isolinux/isolinux.bin", "-c", "isolinux/boot.cat", "-no-emul-boot", "-boot-load-size", "4", "-boot-info-table", root)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("testiso: xorriso: %w\n%s", err, out)
	}
	return os.RemoveAll(root)
}

// XenCmdline is the guest kernel's command line in a Xen HVM guest: its
// lines go to Xen's debug port (earlyprintk=xen hangs on a machine without
// Xen; use BareCmdline there), and it keeps QEMU's emulated NIC.
const XenCmdline = "console=ttyS0 earlyprintk=xen keep_bootcon quiet xen_emul_unplug=never panic=-1"

// BareCmdline is the command line for a machine without Xen: the lines go
// to the first serial port.
const BareCmdline = "console=ttyS0 quiet panic=-1"

// isolinuxCfg boots the kernel at once (TIMEOUT is in tenths of a
// second); the APPEND line is completed with the command line.
const isolinuxCfg = `SERIAL 0 115200
DEFAULT guest
PROMPT 0
TIMEOUT 1
LABEL guest
  KERNEL /boot/vmlinuz
  APPEND initrd=/boot/initrd.gz `

// initScript is the guest's /init.
const initScript = `#!/bin/busybox sh
/bin/busybox mkdir -p /proc /sys /dev /tmp /sbin /usr/bin /usr/sbin
/bin/busybox --install -s
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
say() { echo "<2>` + LinePrefix + `$*" > /dev/kmsg; }
say start
[ -c /dev/tty1 ] && (while read -r k; do say key "$k"; done < /dev/tty1) &
while read -r m; do insmod "/lib/modules/$m" 2>/dev/null; done < /modules.load
nic=
for i in 1 2 3 4 5 6 7 8 9 10; do
  for d in /sys/class/net/*; do
    n=${d##*/}
    [ "$n" = lo ] || { nic=$n; break; }
  done
  [ -n "$nic" ] && break
  sleep 0.5
done
if [ -n "$nic" ]; then
  ip link set "$nic" up
  udhcpc -i "$nic" -n -q -f -t 20 -T 3 -s /udhcpc.sh >/dev/null 2>&1 || say dhcp none
else
  say dhcp none
fi
prev=
while :; do
  echo 1 > /proc/sys/vm/drop_caches
  label=$(dd if=/dev/sr0 bs=2048 skip=16 count=1 2>/dev/null | dd bs=1 skip=40 count=32 2>/dev/null | tr -d ' \000')
  [ -n "$label" ] || label=empty
  if [ "$label" != "$prev" ]; then
    say cdrom "$label"
    prev=$label
  fi
  if [ "$label" = ` + PowerOffLabel + ` ]; then
    say poweroff
    sync
    poweroff -f
  fi
  sleep 1
done
`

// udhcpcScript reports a lease (udhcpc passes it in the environment).
const udhcpcScript = `#!/bin/busybox sh
case "$1" in
bound|renew) echo "<2>` + LinePrefix + `dhcp ip=$ip subnet=$subnet router=$router dns=$dns" > /dev/kmsg ;;
esac
`

// Initramfs returns the guest's gzipped initramfs: busybox, the init
// scripts and the guest's drivers from modulesDir, with a modules.load
// list in dependency order. stage is a scratch directory.
func Initramfs(modulesDir, kernelVersion, stage string) ([]byte, error) {
	defer os.RemoveAll(stage)
	mods, err := image.StageModules(modulesDir, stage, guestModules)
	if err != nil {
		return nil, fmt.Errorf("testiso: %w", err)
	}
	order, err := image.LoadOrder(filepath.Join(stage, "modules.dep"))
	if err != nil {
		return nil, err
	}
	bb, err := os.ReadFile(Busybox)
	if err != nil {
		return nil, err
	}
	recs := []cpio.Record{
		cpio.Directory("bin", 0o755),
		cpio.StaticRecord(bb, cpio.Info{Name: "bin/busybox", Mode: cpio.S_IFREG | 0o755}),
		cpio.Symlink("bin/sh", "busybox"),
		cpio.StaticFile("init", initScript, 0o755),
		cpio.StaticFile("udhcpc.sh", udhcpcScript, 0o755),
		cpio.StaticFile("modules.load", strings.Join(order, "\n")+"\n", 0o644),
	}
	dirs := map[string]bool{}
	for _, m := range mods {
		dst := path.Join("lib/modules", m)
		for d := path.Dir(dst); d != "." && !dirs[d]; d = path.Dir(d) {
			dirs[d] = true
		}
		b, err := os.ReadFile(filepath.Join(stage, m))
		if err != nil {
			return nil, err
		}
		recs = append(recs, cpio.StaticRecord(b, cpio.Info{Name: dst, Mode: cpio.S_IFREG | 0o644}))
	}
	var dl []string
	for d := range dirs {
		dl = append(dl, d)
	}
	sort.Strings(dl) // parents sort before their children
	var dirRecs []cpio.Record
	for _, d := range dl {
		dirRecs = append(dirRecs, cpio.Directory(d, 0o755))
	}
	recs = append(dirRecs, recs...)
	var buf bytes.Buffer
	if err := image.WriteGzipCPIO(&buf, recs); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}
