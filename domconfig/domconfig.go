// Package domconfig turns a VM definition into the domain configuration
// qvm hands to libxl, following what Qubes asks libxl for through its
// libvirt template: disks root/private/volatile as xvda/xvdb/xvdc, the
// kernel-modules disk for PV/PVH VMs with a dom0 kernel, HVMs booting
// CD-ROM then disk with a Linux stubdomain, every shutdown a stop, and
// VMs with PCI devices given the host's memory map.
package domconfig

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"

	"github.com/qvm-project/qvm/blkback"
	"github.com/qvm-project/qvm/stubdom/dmargs"
	"github.com/qvm-project/qvm/vm"
	"github.com/qvm-project/qvm/vmconsole"
	"github.com/qvm-project/qvm/vmkernel"
	"github.com/qvm-project/qvm/xl"
)

// KernelOptsCommon are prepended to kernelopts when a VM boots a dom0
// kernel.
const KernelOptsCommon = "root=/dev/mapper/dmroot ro nomodeset console=hvc0 rd_NO_PLYMOUTH rd.plymouth.enable=0 plymouth.enable=0 xen_privcmd.unrestricted"

// Files of a VM kernel directory.
const (
	KernelFile    = "vmlinuz"
	InitramfsFile = "initramfs"
	ModulesFile   = "modules.img"
)

// VifScript is the hotplug script of a VM's network interface in its
// backend: routed, not bridged, as Qubes does.
const VifScript = "vif-route-qvm"

// BlockScript is the hotplug script of a VM disk served from a block
// device (qvm's file images go through loop devices): it tells dom0's
// block backend which device to open.
const BlockScript = "block-qvm"

// Inputs are the files a domain is built from.
type Inputs struct {
	// Root, Private and Volatile are the VM's image files for this start
	// (for an AppVM, Root is the snapshot of its template's root).
	Root, Private, Volatile string
	// KernelsDir holds the VM kernels, one directory per kernel.
	KernelsDir string
	// StubdomKernel and StubdomRamdisk are the HVM stubdomain's files;
	// empty leaves libxl's defaults.
	StubdomKernel, StubdomRamdisk string
	// StubdomDM is the program libxl runs in dom0 for the stubdomain
	// instead of QEMU (cmd/qvm-stubdom-dm: it serves the stubdomain's
	// consoles and moves its qdisk discs to blkback); empty leaves
	// libxl's QEMU.
	StubdomDM string
	// CDROM is an ISO image or block device attached as a CD-ROM (HVM).
	CDROM string
	// CDROMServer, when set, is the VM that serves the CD-ROM with its
	// own blkback (qvm-start --cdrom=VM:/path), and CDROMServed the loop
	// device it made of the file; CDROM is then unused. A nil CDROMServed
	// (a dry run, which asks the VM nothing) shows the VM's path,
	// CDROMSource, as the disk.
	CDROMServer string
	CDROMServed *blkback.DriverDisc
	CDROMSource string
	// BootKernel and BootInitramfs are the padded copies (see
	// vmkernel.Padded) of the VM kernel and initramfs an HVM boots in
	// qvm's stubdomain: they reach the stubdomain as read-only disks
	// (BootKernelVdev, BootInitramfsVdev), from which its QEMU boots them.
	BootKernel, BootInitramfs string
	// ConsoleLog and ConsoleSocket are where an HVM's serial console
	// goes in dom0: qvm-stubdom-dm keeps its log there and relays it on
	// the socket (see the lifecycle package). Empty: no serial port.
	ConsoleLog, ConsoleSocket string
}

// ErrServedDisc is returned (wrapped) for a disc in a VM that the HVM's
// device model cannot reach.
var ErrServedDisc = errors.New("a disc served by a VM needs qvm's stubdomain")

// FeatureDom0QEMU, set to 1 on a VM, runs its HVM device model in dom0
// instead of a stubdomain: less isolated, for debugging only.
const FeatureDom0QEMU = "qvm-dom0-qemu"

// Where an HVM's stubdomain finds the kernel and initramfs of an HVM
// that boots a dom0 kernel (past the four IDE slots: PV disks only, which
// the guest sees too, read-only). stubdom/dmargs.BootFromDiscs points
// QEMU at them.
const (
	BootKernelVdev    = dmargs.BootKernelVdev
	BootInitramfsVdev = dmargs.BootInitramfsVdev
)

// Where a VM's disks appear: root, private and volatile first, then the
// kernel modules of a PV/PVH VM booting a dom0 kernel, or an HVM's
// CD-ROM, in the fourth IDE slot.
const (
	RootVdev     = "xvda"
	PrivateVdev  = "xvdb"
	VolatileVdev = "xvdc"
	ModulesVdev  = "xvdd"
	CDROMVdev    = "xvdd"
)

// ErrNoKernel is returned for a PV or PVH VM that has no kernel to boot.
var ErrNoKernel = errors.New("no kernel")

// ErrStubdomKernel is returned for an HVM that would boot a dom0 kernel
// with its device model in a stubdomain.
var ErrStubdomKernel = errors.New("dom0 kernel with a stubdomain")

// Build returns the libxl configuration that starts v.
func Build(v *vm.View, in Inputs) (*xl.DomainConfig, error) {
	if v.Class() == vm.AdminVM {
		return nil, fmt.Errorf("dom0 is not started by qvm")
	}
	uuid, err := xl.ParseUUID(v.Def().UUID)
	if err != nil {
		return nil, fmt.Errorf("VM %s: %w", v.Name(), err)
	}
	mode := v.VirtMode()
	cfg := &xl.DomainConfig{
		Name:       v.Name(),
		UUID:       uuid,
		Type:       DomainType(mode),
		VCPUs:      v.Int("vcpus"),
		MemoryMiB:  uint64(v.Int("memory")),
		OnPoweroff: xl.ActionDestroy,
		OnReboot:   xl.ActionDestroy,
		OnCrash:    xl.ActionDestroy,
	}
	if mm := v.Int("maxmem"); mm > 0 {
		cfg.MaxMemoryMiB = uint64(mm)
	}

	kernel := v.Str("kernel")
	if kernel != "" {
		dir := filepath.Join(in.KernelsDir, kernel)
		cfg.Kernel = filepath.Join(dir, KernelFile)
		if _, err := os.Stat(cfg.Kernel); err != nil {
			return nil, fmt.Errorf("VM %s: kernel %s: %w: reinstall it or choose another with qvm-prefs %s kernel", v.Name(), kernel, err, v.Name())
		}
		// A PV or PVH guest boots the kernel's unpacked ELF image when
		// lifecycle made one (package vmkernel): the same kernel, without
		// the decompression Xen's builder would do at every start. (QEMU's
		// direct kernel boot for an HVM wants the bzImage.)
		if u := vmkernel.Fresh(cfg.Kernel); u != "" && mode != vm.HVM {
			cfg.Kernel = u
		}
		if _, err := os.Stat(filepath.Join(dir, InitramfsFile)); err == nil {
			cfg.Ramdisk = filepath.Join(dir, InitramfsFile)
		}
		cfg.Cmdline = strings.TrimSpace(KernelOptsCommon + " " + v.Str("kernelopts"))
	} else if mode != vm.HVM {
		return nil, fmt.Errorf("VM %s: %w: virt_mode %s boots a kernel from dom0, and kernel is '' (boot from the VM's own disk), which only HVM can do: set a kernel (qvm-prefs %s kernel VERSION) or virt_mode hvm",
			v.Name(), ErrNoKernel, mode, v.Name())
	}

	cfg.Disks = []xl.Disk{
		{Target: in.Root, Vdev: RootVdev, ReadWrite: true},
		{Target: in.Private, Vdev: PrivateVdev, ReadWrite: true},
		{Target: in.Volatile, Vdev: VolatileVdev, ReadWrite: true},
	}
	if kernel != "" && mode != vm.HVM {
		if mods := filepath.Join(in.KernelsDir, kernel, ModulesFile); fileExists(mods) {
			cfg.Disks = append(cfg.Disks, xl.Disk{Target: mods, Vdev: ModulesVdev})
		}
	}
	if in.CDROM != "" || in.CDROMServer != "" {
		if mode != vm.HVM {
			return nil, fmt.Errorf("VM %s: a CD-ROM needs virt_mode hvm (it is %s): qvm-prefs %s virt_mode hvm", v.Name(), mode, v.Name())
		}
		disk := xl.Disk{Target: in.CDROM, Vdev: CDROMVdev, CDROM: true, Backend: xl.BackendQdisk}
		if in.CDROMServer != "" {
			// libxl takes only qdisk for an HVM's CD-ROM; the stubdomain's
			// device model turns the stubdomain's copy into a vbd served by
			// the VM's blkback (blkback.ServeDriverDisc).
			disk.Target, disk.BackendDomain = in.CDROMSource, in.CDROMServer
			if in.CDROMServed != nil {
				disk.Target = in.CDROMServed.Dev
			}
		}
		cfg.Disks = append(cfg.Disks, disk)
	}

	if n := v.NetVM(); n != nil {
		nic, err := nicFor(v, n)
		if err != nil {
			return nil, err
		}
		cfg.NICs = []xl.NIC{nic}
	}

	for _, p := range v.Def().PCI {
		addr, err := xl.ParsePCIAddress(p.BDF)
		if err != nil {
			return nil, fmt.Errorf("VM %s: %w", v.Name(), err)
		}
		cfg.PCIDevices = append(cfg.PCIDevices, xl.PCIDevice{Addr: addr, Permissive: p.Permissive, NoStrictReset: p.NoStrictReset, Seize: true})
	}
	if len(cfg.PCIDevices) > 0 && mode == vm.PV {
		cfg.E820Host = true
	}

	if mode == vm.HVM {
		hvmConfig(v, cfg, in)
		if dm := cfg.DeviceModel; cfg.Kernel != "" && dm.Stubdomain {
			if dm.Override == "" || in.BootKernel == "" {
				return nil, fmt.Errorf("VM %s: %w: it is an HVM that boots dom0's kernel %s, and its QEMU runs in a stubdomain without qvm's device model (qvm-stubdom-dm), which cannot read dom0's files: "+
					"boot it from its own disk or a CD-ROM (qvm-prefs %s kernel '', as an OS install needs), "+
					"or, less isolated, run its QEMU in dom0 (qvm-features %s %s 1)",
					v.Name(), ErrStubdomKernel, kernel, v.Name(), v.Name(), FeatureDom0QEMU)
			}
			// The stubdomain gets the kernel and initramfs as disks; its
			// init points QEMU's -kernel and -initrd at them.
			cfg.Disks = append(cfg.Disks, xl.Disk{Target: in.BootKernel, Vdev: BootKernelVdev})
			if cfg.Ramdisk != "" && in.BootInitramfs != "" {
				cfg.Disks = append(cfg.Disks, xl.Disk{Target: in.BootInitramfs, Vdev: BootInitramfsVdev})
			}
		}
	}
	if in.CDROMServer != "" {
		if dm := &cfg.DeviceModel; !dm.Stubdomain || dm.Override == "" {
			return nil, fmt.Errorf("VM %s: %w: a disc in VM %s reaches an HVM only through qvm's stubdomain (with qvm-stubdom-dm as its device model in dom0); "+
				"%s runs its QEMU in dom0 or without qvm-stubdom-dm: qvm-features --unset %s %s, or copy the disc to dom0 and use --cdrom=dom0:PATH",
				v.Name(), ErrServedDisc, in.CDROMServer, v.Name(), v.Name(), FeatureDom0QEMU)
		} else if in.CDROMServed != nil {
			dm.StubdomainDMArgs = append(dm.StubdomainDMArgs, "-qvm-disc", in.CDROMServed.String())
		}
	}
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("VM %s: %w", v.Name(), err)
	}
	return cfg, nil
}

// DomainType is libxl's domain type for a virtualisation mode.
func DomainType(m vm.VirtMode) xl.DomainType {
	switch m {
	case vm.HVM:
		return xl.HVM
	case vm.PV:
		return xl.PV
	case vm.PVH:
		return xl.PVH
	}
	return xl.DomainType(m)
}

func nicFor(v, netvm *vm.View) (xl.NIC, error) {
	mac, err := net.ParseMAC(v.Str("mac"))
	if err != nil {
		return xl.NIC{}, fmt.Errorf("VM %s: mac: %w", v.Name(), err)
	}
	nic := xl.NIC{MAC: mac, Script: VifScript}
	if netvm.Class() != vm.AdminVM {
		nic.BackendDomain = netvm.Name()
	}
	for _, s := range []string{v.Str("ip"), v.Str("ip6")} {
		if s == "" {
			continue
		}
		a, err := netip.ParseAddr(s)
		if err != nil {
			return xl.NIC{}, fmt.Errorf("VM %s: address %q: %w", v.Name(), s, err)
		}
		nic.IPs = append(nic.IPs, a)
	}
	return nic, nil
}

// hvmConfig sets what Qubes gives an HVM: SeaBIOS (OVMF with the uefi
// feature), boot from CD-ROM then disk, ACPI, APIC, PAE, Viridian, no
// nested virtualisation, a USB tablet, standard VGA, and QEMU in a Linux
// stubdomain told the VM's network settings, with a serial port that
// qvm-stubdom-dm relays (see Inputs.ConsoleLog).
func hvmConfig(v *vm.View, cfg *xl.DomainConfig, in Inputs) {
	fw := xl.SeaBIOS
	if val, ok := v.Feature("uefi"); ok && val != "" && val != "0" {
		fw = xl.OVMF
	}
	cfg.HVM = xl.HVMConfig{
		Firmware:  fw,
		Boot:      "dc",
		ACPI:      true,
		APIC:      true,
		PAE:       true,
		Viridian:  true,
		USBTablet: true,
		VGA:       xl.VGAStd,
		Keymap:    "en-us",
	}
	dm := xl.DeviceModel{Stubdomain: true, StubdomainKernel: in.StubdomKernel, StubdomainRamdisk: in.StubdomRamdisk,
		Override: in.StubdomDM}
	if val, ok := v.Feature(FeatureDom0QEMU); ok && val != "" && val != "0" {
		dm = xl.DeviceModel{}
	}
	if dm.Stubdomain {
		dm.StubdomainMemoryMiB = StubdomMemoryMiB
		if mem := v.Int("stubdom_mem"); mem > 0 {
			dm.StubdomainMemoryMiB = uint64(mem)
		}
	}
	if v.Networked() && v.NetVM() != nil {
		dm.Args = append(dm.Args, QubesNetArg(v))
	}
	if dm.Stubdomain && dm.Override != "" && in.ConsoleLog != "" && in.ConsoleSocket != "" {
		// A serial port: libxl gives the stubdomain a console for it
		// (QEMU's -serial /dev/hvc3), which qvm-stubdom-dm serves.
		cfg.HVM.Serial = "pty"
		dm.StubdomainDMArgs = append(dm.StubdomainDMArgs, vmconsole.DMFlag, in.ConsoleLog, in.ConsoleSocket)
	}
	cfg.DeviceModel = dm
}

// StubdomMemoryMiB is the memory an HVM's stubdomain gets when its
// stubdom_mem is unset. libxl adds the guest's video RAM (16 MiB for
// stdvga) on top, so the stubdomain runs in 128 MiB in all; with QEMU
// running, qvm's stubdomain kernel reports about 36 MiB of that still
// available (make bench-hvm prints it).
const StubdomMemoryMiB = 112

// QubesNetArg is the device-model argument that tells the stubdomain the
// VM's network settings, for its DHCP server.
func QubesNetArg(v *vm.View) string {
	return fmt.Sprintf("-qubes-net:client_ip=%s,dns_0=%s,dns_1=%s,gw=%s,netmask=%s",
		v.Str("visible_ip"), vm.PrimaryDNS, vm.SecondaryDNS, v.Str("visible_gateway"), v.Str("visible_netmask"))
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}
