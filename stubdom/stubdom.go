// Package stubdom is the contract of qvm's Linux stubdomain, the small PV
// domain that runs an HVM guest's QEMU outside dom0 (libxl's
// stubdomain_kernel and stubdomain_ramdisk): where the programs its init
// runs are in its root file system, the kernel modules the init loads, and
// where dom0 keeps the stubdomain's kernel and ramdisk (Dir), which is where
// qvm-start finds them.
//
// The stubdomain's init (cmd/stubdominit) imports this package; the image
// builder and checker, with their cpio and compression code, are package
// stubdom/image, which the init does not link.
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
