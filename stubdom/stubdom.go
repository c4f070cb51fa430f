// Package stubdom describes and builds qvm's Linux stubdomain: the kernel
// and initramfs of the small PV domain that runs an HVM guest's QEMU
// outside dom0 (libxl's stubdomain_kernel and stubdomain_ramdisk).
//
// The initramfs is made with u-root from this module: cmd/stubdominit as
// /init, Debian's Xen device model (xen-qemu-system-i386 from
// qemu-system-xen) with every shared library it needs, the keymap and
// option ROMs QEMU loads for the machines qvm configures (standard VGA,
// rtl8139 NIC), Xen's vchan-socket-proxy (which relays QEMU's QMP socket to
// dom0) and the kernel modules the init loads. Build assembles it; Check
// reads an image back and verifies that all of that is in it, so a missing
// library or ROM fails the build instead of a guest's start.
//
// In dom0 the files live under Dir (see Dom0Archive), where qvm-start
// finds them.
package stubdom

import "github.com/qvm-project/qvm/bootinit"

// Paths in the stubdomain's root file system.
const (
	// QEMUPath is Xen's device model, as Debian installs it.
	QEMUPath = "/usr/libexec/xen-qemu-system-i386"
	// VchanProxyPath is Xen's vchan-socket-proxy ELF (Debian's
	// /usr/bin/vchan-socket-proxy is a shell wrapper around it).
	VchanProxyPath = "/usr/lib/xen-4.17/bin/vchan-socket-proxy"
	// InitName is the init's command name in the image.
	InitName = "stubdominit"
)

// Where dom0 keeps the stubdomain's files (the defaults of qvm-start).
const (
	Dir         = "/usr/lib/qvm/stubdom"
	KernelName  = "vmlinux"
	RamdiskName = "initramfs"
)

// Modules are the kernel modules the init loads, in order: the Xen
// frontends QEMU and the vchan need (event channels, privileged commands
// with unrestricted=1 so a stubdomain may make device-model hypercalls for
// its target, grant mapping and allocation), the block and network
// frontends that carry the guest's disks and network into the stubdomain,
// and tap and bridge for the guest's emulated NIC.
var Modules = []bootinit.Module{
	{Name: "xen-evtchn"},
	{Name: "xen-privcmd", Params: "unrestricted=1"},
	{Name: "xen-gntdev"},
	{Name: "xen-gntalloc"},
	{Name: "xen-blkfront"},
	{Name: "xen-netfront"},
	{Name: "tun"},
	{Name: "bridge"},
}

// File is a file of the host copied into the image.
type File struct {
	Host  string // path on the build host
	Image string // path in the image, without the leading '/'
	Why   string // what needs it
}

// Files are the host files in the image besides the init and the modules.
// u-root adds the shared libraries of the executables among them.
func Files() []File {
	return []File{
		{QEMUPath, QEMUPath[1:], "the device model"},
		{VchanProxyPath, VchanProxyPath[1:], "relays QEMU's QMP socket to dom0 over a vchan"},
		{"/usr/share/qemu/keymaps/en-us", "usr/share/qemu/keymaps/en-us", "QEMU refuses to start without its keymap (-k en-us)"},
		{"/usr/share/seabios/vgabios-stdvga.bin", "usr/share/seabios/vgabios-stdvga.bin", "option ROM of the standard VGA card (qvm's vga=std)"},
		{"/usr/share/seabios/vgabios-cirrus.bin", "usr/share/seabios/vgabios-cirrus.bin", "option ROM of the Cirrus VGA card (libxl's default card)"},
		{"/usr/lib/ipxe/qemu/efi-rtl8139.rom", "usr/lib/ipxe/qemu/efi-rtl8139.rom", "option ROM of the rtl8139 NIC (libxl's default model)"},
		{"/usr/lib/ipxe/qemu/efi-e1000.rom", "usr/lib/ipxe/qemu/efi-e1000.rom", "option ROM of the e1000 NIC"},
	}
}
