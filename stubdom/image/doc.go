// Package image builds and checks the image of qvm's Linux stubdomain (see
// package stubdom for what the stubdomain's init expects of it).
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
// Build also writes an archive to append to dom0's initramfs (or unpack in
// dom0's root) that puts the kernel and ramdisk under stubdom.Dir
// (Result.Dom0Archive). StageModules, LoadOrder and WriteGzipCPIO are the
// module and cpio helpers, shared with the test ISO (stubdom/testiso).
package image
