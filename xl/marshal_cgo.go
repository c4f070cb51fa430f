//go:build cgo

package xl

/*
#cgo CFLAGS: -DHAVE_YAJL_YAJL_VERSION_H
#cgo LDFLAGS: -lxenlight -lxlutil -lxenctrl -lxentoollog -lyajl
#include "qvm_libxl.h"
*/
import "C"

import (
	"errors"
	"fmt"
	"unsafe"
)

// Memory ownership: every string (C.CString) and array (C calloc) put into
// a libxl_domain_config below belongs to it from then on and is freed by
// libxl_domain_config_dispose (qvm_config_free). Nothing here frees them
// separately.

// cDomainType maps a DomainType to libxl_domain_type.
func cDomainType(t DomainType) C.libxl_domain_type {
	switch t {
	case PV:
		return C.LIBXL_DOMAIN_TYPE_PV
	case PVH:
		return C.LIBXL_DOMAIN_TYPE_PVH
	case HVM:
		return C.LIBXL_DOMAIN_TYPE_HVM
	}
	return C.LIBXL_DOMAIN_TYPE_INVALID
}

// goDomainType maps libxl_domain_type back.
func goDomainType(t C.libxl_domain_type) DomainType {
	switch t {
	case C.LIBXL_DOMAIN_TYPE_PV:
		return PV
	case C.LIBXL_DOMAIN_TYPE_PVH:
		return PVH
	case C.LIBXL_DOMAIN_TYPE_HVM:
		return HVM
	}
	return ""
}

func cBool(b bool) C.int {
	if b {
		return 1
	}
	return 0
}

// cStr returns a C copy of s, or NULL for "".
func cStr(s string) *C.char {
	if s == "" {
		return nil
	}
	return C.CString(s)
}

// cStringList returns a NULL-terminated libxl_string_list, or NULL when
// empty.
func cStringList(ss []string) C.libxl_string_list {
	if len(ss) == 0 {
		return nil
	}
	p := (**C.char)(C.qvm_calloc_array(C.size_t(len(ss)+1), C.size_t(unsafe.Sizeof((*C.char)(nil)))))
	arr := unsafe.Slice(p, len(ss)+1)
	for i, s := range ss {
		arr[i] = C.CString(s)
	}
	return p
}

// newCConfig builds a libxl_domain_config from cfg. The caller frees it
// with C.qvm_config_free.
func newCConfig(cfg *DomainConfig) (*C.libxl_domain_config, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	c := C.qvm_config_new(C.int(cDomainType(cfg.Type)))
	if c == nil {
		return nil, errors.New("libxl_domain_config: out of memory")
	}

	ci := &c.c_info
	ci.name = C.CString(cfg.Name)
	C.qvm_uuid_set(&ci.uuid, (*C.uchar)(unsafe.Pointer(&cfg.UUID[0])))

	bi := &c.b_info
	bi.max_vcpus = C.int(cfg.VCPUs)
	if C.qvm_bitmap_set_first(&bi.avail_vcpus, C.int(cfg.VCPUs)) != 0 {
		C.qvm_config_free(c)
		return nil, errors.New("libxl_domain_config: out of memory")
	}
	bi.target_memkb = C.uint64_t(cfg.MemoryMiB * 1024)
	bi.max_memkb = C.uint64_t(cfg.maxMemMiB() * 1024)
	bi.kernel = cStr(cfg.Kernel)
	bi.ramdisk = cStr(cfg.Ramdisk)
	bi.cmdline = cStr(cfg.Cmdline)

	switch cfg.Type {
	case PV:
		if cfg.E820Host {
			C.qvm_set_pv_e820_host(bi, 1)
		}
	case HVM:
		h := &cfg.HVM
		C.qvm_defbool_set(&bi.acpi, cBool(h.ACPI))
		C.qvm_defbool_set(&bi.apic, cBool(h.APIC))
		C.qvm_defbool_set(&bi.nested_hvm, cBool(h.NestedHVM))
		if h.VideoMemMiB != 0 {
			bi.video_memkb = C.uint64_t(h.VideoMemMiB * 1024)
		}
		var ch C.struct_qvm_hvm
		ch.bios = C.int(cBios(h.Firmware))
		ch.boot = cStr(h.Boot)
		ch.pae = cBool(h.PAE)
		ch.viridian = cBool(h.Viridian)
		ch.serial = cStr(h.Serial)
		ch.vga = C.int(cVGA(h.VGA))
		ch.usb_tablet = cBool(h.USBTablet)
		ch.keymap = cStr(h.Keymap)
		C.qvm_set_hvm(bi, &ch)

		dm := &cfg.DeviceModel
		bi.device_model_version = C.LIBXL_DEVICE_MODEL_VERSION_QEMU_XEN
		C.qvm_defbool_set(&bi.device_model_stubdomain, cBool(dm.Stubdomain))
		bi.stubdomain_kernel = cStr(dm.StubdomainKernel)
		bi.stubdomain_ramdisk = cStr(dm.StubdomainRamdisk)
		bi.stubdomain_cmdline = cStr(dm.StubdomainCmdline)
		if dm.StubdomainMemoryMiB != 0 {
			bi.stubdomain_memkb = C.uint64_t(dm.StubdomainMemoryMiB * 1024)
		}
		bi.extra_hvm = cStringList(dm.Args)
		bi.extra_pv = cStringList(dm.StubdomainDMArgs)
		bi.device_model = cStr(dm.Override)
	}

	if n := len(cfg.Disks); n > 0 {
		c.disks = (*C.libxl_device_disk)(C.qvm_calloc_array(C.size_t(n), C.sizeof_libxl_device_disk))
		c.num_disks = C.int(n)
		disks := unsafe.Slice(c.disks, n)
		for i := range disks {
			fillDisk(&disks[i], &cfg.Disks[i])
		}
	}
	if n := len(cfg.NICs); n > 0 {
		c.nics = (*C.libxl_device_nic)(C.qvm_calloc_array(C.size_t(n), C.sizeof_libxl_device_nic))
		c.num_nics = C.int(n)
		nics := unsafe.Slice(c.nics, n)
		for i := range nics {
			fillNIC(&nics[i], &cfg.NICs[i], i)
		}
	}
	if n := len(cfg.PCIDevices); n > 0 {
		c.pcidevs = (*C.libxl_device_pci)(C.qvm_calloc_array(C.size_t(n), C.sizeof_libxl_device_pci))
		c.num_pcidevs = C.int(n)
		pcis := unsafe.Slice(c.pcidevs, n)
		for i := range pcis {
			fillPCI(&pcis[i], &cfg.PCIDevices[i])
		}
	}

	c.on_poweroff = cAction(cfg.OnPoweroff)
	c.on_reboot = cAction(cfg.OnReboot)
	c.on_crash = cAction(cfg.OnCrash)
	// Not configurable here; set to xl's defaults so the config is complete.
	c.on_watchdog = C.LIBXL_ACTION_ON_SHUTDOWN_DESTROY
	c.on_soft_reset = C.LIBXL_ACTION_ON_SHUTDOWN_SOFT_RESET
	return c, nil
}

func cAction(a Action) C.libxl_action_on_shutdown {
	code, _ := actionCode(a)
	return C.libxl_action_on_shutdown(code)
}

func cBios(f Firmware) C.libxl_bios_type {
	if f == OVMF {
		return C.LIBXL_BIOS_TYPE_OVMF
	}
	return C.LIBXL_BIOS_TYPE_SEABIOS
}

func cVGA(v VGA) C.libxl_vga_interface_type {
	switch v {
	case VGAStd:
		return C.LIBXL_VGA_INTERFACE_TYPE_STD
	case VGACirrus:
		return C.LIBXL_VGA_INTERFACE_TYPE_CIRRUS
	case VGAQXL:
		return C.LIBXL_VGA_INTERFACE_TYPE_QXL
	case VGANone:
		return C.LIBXL_VGA_INTERFACE_TYPE_NONE
	}
	return C.LIBXL_VGA_INTERFACE_TYPE_UNKNOWN
}

func cDiskFormat(d *Disk) C.libxl_disk_format {
	if d.CDROM && d.Target == "" {
		return C.LIBXL_DISK_FORMAT_EMPTY
	}
	if d.Format == FormatQCOW2 {
		return C.LIBXL_DISK_FORMAT_QCOW2
	}
	return C.LIBXL_DISK_FORMAT_RAW
}

func cDiskBackend(b DiskBackend) C.libxl_disk_backend {
	switch b {
	case BackendPhy:
		return C.LIBXL_DISK_BACKEND_PHY
	case BackendQdisk:
		return C.LIBXL_DISK_BACKEND_QDISK
	case BackendTap:
		return C.LIBXL_DISK_BACKEND_TAP
	}
	return C.LIBXL_DISK_BACKEND_UNKNOWN
}

// fillDisk initialises *cd and fills it the way xl's disk parser would
// for the same spec (removable and read-only CD-ROMs, format empty for an
// empty drive).
func fillDisk(cd *C.libxl_device_disk, d *Disk) {
	C.libxl_device_disk_init(cd)
	cd.pdev_path = C.CString(d.Target) // "" for an empty CD-ROM drive, like xl
	cd.vdev = C.CString(d.Vdev)
	cd.format = cDiskFormat(d)
	cd.backend = cDiskBackend(d.Backend)
	cd.backend_domname = cStr(d.BackendDomain)
	cd.script = cStr(d.Script)
	cd.readwrite = cBool(d.ReadWrite && !d.CDROM)
	if d.CDROM {
		cd.is_cdrom = 1
		cd.removable = 1
	}
}

func cNICType(t NICType) C.libxl_nic_type {
	switch t {
	case NICVif:
		return C.LIBXL_NIC_TYPE_VIF
	case NICIoemu:
		return C.LIBXL_NIC_TYPE_VIF_IOEMU
	}
	return C.LIBXL_NIC_TYPE_UNKNOWN
}

func fillNIC(cn *C.libxl_device_nic, n *NIC, devid int) {
	C.libxl_device_nic_init(cn)
	cn.devid = C.libxl_devid(devid)
	for i := 0; i < 6 && i < len(n.MAC); i++ {
		cn.mac[i] = C.uint8_t(n.MAC[i])
	}
	if len(n.IPs) > 0 {
		cn.ip = C.CString(ipList(n.IPs))
	}
	cn.backend_domname = cStr(n.BackendDomain)
	cn.script = cStr(n.Script)
	cn.bridge = cStr(n.Bridge)
	cn.ifname = cStr(n.Name)
	cn.nictype = cNICType(n.Type)
	cn.model = cStr(n.Model)
}

func fillPCI(cp *C.libxl_device_pci, p *PCIDevice) {
	C.libxl_device_pci_init(cp)
	cp.domain = C.int(p.Addr.Domain)
	cp.bus = C.uint8_t(p.Addr.Bus)
	cp.dev = C.uint8_t(p.Addr.Device)
	cp._func = C.uint8_t(p.Addr.Function)
	cp.vfunc_mask = 1 // this one function, as xl's pci= parser sets it
	cp.permissive = C.bool(p.Permissive)
	cp.power_mgmt = C.bool(p.PowerMgmt)
	cp.seize = C.bool(p.Seize)
}

// JSON renders cfg with libxl's own JSON generator
// (libxl_domain_config_to_json), exactly what libxl would be handed.
func JSON(cfg *DomainConfig) (string, error) {
	c, err := newCConfig(cfg)
	if err != nil {
		return "", err
	}
	defer C.qvm_config_free(c)
	s := C.libxl_domain_config_to_json(nil, c)
	if s == nil {
		return "", fmt.Errorf("domain %s: libxl_domain_config_to_json failed", cfg.Name)
	}
	defer C.free(unsafe.Pointer(s))
	return C.GoString(s), nil
}
