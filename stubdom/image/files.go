package image

import "github.com/qvm-project/qvm/stubdom"

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
		{stubdom.QEMUPath, stubdom.QEMUPath[1:], "the device model"},
		{stubdom.VchanProxyPath, stubdom.VchanProxyPath[1:], "relays QEMU's QMP socket to dom0 over a vchan"},
		{"/usr/share/qemu/keymaps/en-us", "usr/share/qemu/keymaps/en-us", "QEMU refuses to start without its keymap (-k en-us)"},
		{"/usr/share/seabios/vgabios-stdvga.bin", "usr/share/seabios/vgabios-stdvga.bin", "option ROM of the standard VGA card (qvm's vga=std)"},
		{"/usr/share/seabios/vgabios-cirrus.bin", "usr/share/seabios/vgabios-cirrus.bin", "option ROM of the Cirrus VGA card (libxl's default card)"},
		{"/usr/lib/ipxe/qemu/efi-rtl8139.rom", "usr/lib/ipxe/qemu/efi-rtl8139.rom", "option ROM of the rtl8139 NIC (libxl's default model)"},
		{"/usr/lib/ipxe/qemu/efi-e1000.rom", "usr/lib/ipxe/qemu/efi-e1000.rom", "option ROM of the e1000 NIC"},
		{"/usr/share/qemu/linuxboot.bin", "usr/share/qemu/linuxboot.bin", "option ROM of QEMU's direct kernel boot (an HVM booting a dom0 kernel; xenfv has no fw_cfg DMA)"},
	}
}
