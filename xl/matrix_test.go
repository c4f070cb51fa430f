package xl

import (
	"fmt"
	"net"
	"net/netip"
	"strings"
)

// namedConfig is one case of the marshalling matrix.
type namedConfig struct {
	name string
	cfg  *DomainConfig
}

func mustMAC(s string) net.HardwareAddr {
	m, err := net.ParseMAC(s)
	if err != nil {
		panic(err)
	}
	return m
}

// diskSets are the disk layouts of the matrix, named after the VM classes
// whose layouts they copy (see qubes-facts.md, "Domain config").
var diskSets = []struct {
	name  string
	hvm   bool // only for HVM domains (CD-ROM drives)
	disks []Disk
}{
	{name: "nodisk"},
	{name: "template", disks: []Disk{
		{Target: "/dev/qubes_dom0/vm-tpl-root", Vdev: "xvda", ReadWrite: true, Backend: BackendPhy},
		{Target: "/dev/qubes_dom0/vm-tpl-private", Vdev: "xvdb", ReadWrite: true, Backend: BackendPhy},
		{Target: "/dev/qubes_dom0/vm-tpl-volatile", Vdev: "xvdc", ReadWrite: true, Backend: BackendPhy},
	}},
	{name: "appvm", disks: []Disk{
		{Target: "/dev/qubes_dom0/vm-work-root-snap", Vdev: "xvda", ReadWrite: true, Backend: BackendPhy, BackendDomain: "dom0"},
		{Target: "/dev/qubes_dom0/vm-work-private", Vdev: "xvdb", ReadWrite: true, Backend: BackendPhy},
		{Target: "/dev/qubes_dom0/vm-work-volatile", Vdev: "xvdc", ReadWrite: true, Backend: BackendPhy, Script: "/etc/xen/scripts/block-snapshot"},
		{Target: "/var/lib/qubes/vm-kernels/6.1.75-1/modules.img", Vdev: "xvdd", Backend: BackendPhy},
	}},
	{name: "installer", hvm: true, disks: []Disk{
		{Target: "/dev/qubes_dom0/vm-win-root", Vdev: "xvda", ReadWrite: true},
		{Target: "/var/lib/qvm/iso/debian-12.iso", Vdev: "xvdi", CDROM: true, Backend: BackendQdisk},
	}},
	{name: "emptycd", hvm: true, disks: []Disk{
		{Target: "/var/lib/qvm/images/disk.qcow2", Vdev: "hda", ReadWrite: true, Format: FormatQCOW2, Backend: BackendQdisk},
		{Vdev: "hdc", CDROM: true},
	}},
}

var nicSets = []struct {
	name string
	hvm  bool
	nics []NIC
}{
	{name: "nonet"},
	{name: "v4", nics: []NIC{{
		MAC: mustMAC("00:16:3e:5e:6c:05"), IPs: []netip.Addr{netip.MustParseAddr("10.137.0.5")},
		BackendDomain: "sys-firewall", Script: "vif-route-qubes",
	}}},
	{name: "v4v6", nics: []NIC{{
		MAC:           mustMAC("00:16:3e:5e:6c:7a"),
		IPs:           []netip.Addr{netip.MustParseAddr("10.137.0.122"), netip.MustParseAddr("fd09:24ef:4179::a89:7a")},
		BackendDomain: "0", Script: "/etc/xen/scripts/vif-route-qubes", Name: "vif-work",
	}}},
	{name: "bridged2", hvm: true, nics: []NIC{
		{MAC: mustMAC("00:16:3e:00:00:01"), Bridge: "xenbr0", Type: NICIoemu, Model: "e1000"},
		{MAC: mustMAC("00:16:3e:00:00:02"), Bridge: "xenbr1", Type: NICVif, Script: "vif-bridge"},
	}},
}

var pciSets = []struct {
	name string
	pcis []PCIDevice
}{
	{name: "nopci"},
	{name: "nic", pcis: []PCIDevice{{Addr: PCIAddress{Bus: 0, Device: 0x19, Function: 0}, Permissive: true, Seize: true}}},
	{name: "two", pcis: []PCIDevice{
		{Addr: PCIAddress{Domain: 1, Bus: 0xff, Device: 0x1f, Function: 7}, PowerMgmt: true, NoStrictReset: true},
		{Addr: PCIAddress{Bus: 3, Device: 0, Function: 1}},
	}},
}

// hvmVariant varies the HVM-only settings.
type hvmVariant struct {
	name   string
	kernel bool // direct kernel boot instead of firmware boot from disk
	hvm    HVMConfig
	dm     DeviceModel
}

var hvmVariants = []hvmVariant{
	{name: "stubdom-seabios", hvm: HVMConfig{Firmware: SeaBIOS, Boot: "dc", ACPI: true, APIC: true, PAE: true, Viridian: true, VGA: VGAStd, USBTablet: true},
		dm: DeviceModel{Stubdomain: true, StubdomainKernel: "/usr/libexec/xen/boot/qemu-stubdom-linux-kernel", StubdomainRamdisk: "/usr/libexec/xen/boot/qemu-stubdom-linux-rootfs",
			Args:             []string{"-qubes-net:client_ip=10.137.0.5,dns_0=10.139.1.1,dns_1=10.139.1.2,gw=10.138.0.1,netmask=255.255.255.255"},
			StubdomainDMArgs: []string{"-qvm-disc", "5696:3:7:0:/dev/loop0:/home/user/install cd.iso"}}},
	{name: "stubdom-ovmf-mem", hvm: HVMConfig{Firmware: OVMF, Boot: "c", ACPI: true, APIC: true, PAE: true, Viridian: false, VGA: VGANone, Serial: "pty"},
		dm: DeviceModel{Stubdomain: true, StubdomainKernel: "/srv/stub/vmlinuz", StubdomainRamdisk: "/srv/stub/rootfs.cpio.gz", StubdomainCmdline: "console=hvc0 quiet", StubdomainMemoryMiB: 256}},
	{name: "dom0dm-seabios", hvm: HVMConfig{Boot: "cd", ACPI: true, APIC: true, PAE: true, VGA: VGACirrus, VideoMemMiB: 16, Keymap: "en-us", Serial: "file:/var/log/qvm/serial.log"},
		dm: DeviceModel{Override: "/usr/libexec/xen-qemu-system-i386", Args: []string{"-no-user-config", "-d", "guest_errors"}}},
	{name: "dom0dm-kernel", kernel: true, hvm: HVMConfig{Firmware: SeaBIOS, ACPI: false, APIC: false, PAE: false, NestedHVM: true, VGA: VGAQXL}},
	{name: "stubdom-kernel-ovmf", kernel: true, hvm: HVMConfig{Firmware: OVMF, Boot: "n", ACPI: true, APIC: true, PAE: true, Viridian: true, USBTablet: true, VideoMemMiB: 32, VGA: VGAStd},
		dm: DeviceModel{Stubdomain: true}},
	{name: "dom0dm-plain", hvm: HVMConfig{}},
}

const (
	testKernel  = "/var/lib/qubes/vm-kernels/6.1.75-1/vmlinuz"
	testRamdisk = "/var/lib/qubes/vm-kernels/6.1.75-1/initramfs"
	testCmdline = `root=/dev/mapper/dmroot ro nomodeset console=hvc0 rd_NO_PLYMOUTH rd.plymouth.enable=0 plymouth.enable=0 xen_privcmd.unrestricted swiotlb=2048`
	// A command line that exercises xl.cfg quoting.
	trickyCmdline = "console=hvc0 quote=\"a b\" backslash=C:\\dir\\ tab=\there single='x'"
)

// testMatrix returns every case: virt mode x disks x NICs x PCI, and for
// HVM also x the HVM variants (stubdomain on/off, firmware, direct kernel
// boot, graphics).
func testMatrix() []namedConfig {
	var out []namedConfig
	n := 0
	for _, t := range []DomainType{PV, PVH, HVM} {
		for _, ds := range diskSets {
			if ds.hvm && t != HVM {
				continue
			}
			for _, ns := range nicSets {
				if ns.hvm && t != HVM {
					continue
				}
				for _, ps := range pciSets {
					if len(ps.pcis) > 0 && t == PVH {
						continue
					}
					variants := []hvmVariant{{name: "-"}}
					if t == HVM {
						variants = hvmVariants
					}
					for _, v := range variants {
						n++
						cfg := &DomainConfig{
							Name:       fmt.Sprintf("vm%d-%s", n, t),
							UUID:       UUID{0x5e, 0xed, byte(n >> 8), byte(n), 0x12, 0x34, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef, 0x01, 0x23, 0x45, byte(n)},
							Type:       t,
							VCPUs:      1 + n%4,
							MemoryMiB:  400,
							Disks:      append([]Disk(nil), ds.disks...),
							NICs:       append([]NIC(nil), ns.nics...),
							PCIDevices: append([]PCIDevice(nil), ps.pcis...),
						}
						if n%3 != 0 {
							cfg.MaxMemoryMiB = 4000
						}
						switch n % 4 {
						case 1:
							cfg.OnReboot = ActionRestart
						case 2:
							cfg.OnPoweroff, cfg.OnReboot, cfg.OnCrash = ActionDestroy, ActionDestroy, ActionDestroy
						case 3:
							cfg.OnCrash = ActionPreserve
							cfg.OnReboot = ActionRenameRestart
						}
						if t != HVM || v.kernel {
							cfg.Kernel, cfg.Ramdisk, cfg.Cmdline = testKernel, testRamdisk, testCmdline
							if n%5 == 0 {
								cfg.Cmdline = trickyCmdline
							}
						}
						if t == PV && len(ps.pcis) > 0 {
							cfg.E820Host = true
						}
						if t == HVM {
							cfg.HVM = v.hvm
							cfg.DeviceModel = v.dm
							cfg.DeviceModel.Args = append([]string(nil), v.dm.Args...)
							cfg.DeviceModel.StubdomainDMArgs = append([]string(nil), v.dm.StubdomainDMArgs...)
						}
						name := strings.Join([]string{string(t), ds.name, ns.name, ps.name, v.name}, "/")
						out = append(out, namedConfig{name: name, cfg: cfg})
					}
				}
			}
		}
	}
	return out
}
