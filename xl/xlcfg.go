package xl

import (
	"fmt"
	"strconv"
	"strings"
)

// XLConfig renders cfg as xl.cfg text (see xl.cfg(5)) that `xl create`
// accepts and that describes the same domain as JSON(cfg): xl turns it
// into the same libxl_domain_config, apart from what xl adds from its own
// /etc/xen/xl.conf (run_hotplug_scripts, claim_mode). Call Validate first:
// XLConfig renders what it is given.
//
// PCIDevice.NoStrictReset has no xl.cfg form; it is noted in a comment.
func XLConfig(cfg *DomainConfig) string {
	var b strings.Builder
	w := func(key, val string) { fmt.Fprintf(&b, "%s = %s\n", key, val) }
	str := func(key, val string) {
		if val != "" {
			w(key, xlQuote(val))
		}
	}
	num := func(key string, v uint64) { w(key, strconv.FormatUint(v, 10)) }
	flag := func(key string, v bool) {
		if v {
			w(key, "1")
		} else {
			w(key, "0")
		}
	}

	fmt.Fprintf(&b, "# xl.cfg for domain %s, written by qvm: `xl create` this file to start\n# the same domain qvm would start.\n", sanitizeComment(cfg.Name))
	str("name", cfg.Name)
	str("uuid", cfg.UUID.String())
	str("type", string(cfg.Type))
	num("vcpus", uint64(cfg.VCPUs))
	num("memory", cfg.MemoryMiB)
	num("maxmem", cfg.maxMemMiB())
	str("kernel", cfg.Kernel)
	str("ramdisk", cfg.Ramdisk)
	str("cmdline", cfg.Cmdline)
	str("on_poweroff", string(orDestroy(cfg.OnPoweroff)))
	str("on_reboot", string(orDestroy(cfg.OnReboot)))
	str("on_crash", string(orDestroy(cfg.OnCrash)))
	if cfg.Type == PV && cfg.E820Host {
		flag("e820_host", true)
	}

	if cfg.Type == HVM {
		h := &cfg.HVM
		b.WriteString("\n# HVM\n")
		fw := h.Firmware
		if fw == "" {
			fw = SeaBIOS
		}
		str("bios", string(fw))
		str("boot", h.Boot)
		flag("acpi", h.ACPI)
		flag("apic", h.APIC)
		flag("pae", h.PAE)
		flag("viridian", h.Viridian)
		flag("nestedhvm", h.NestedHVM)
		str("serial", h.Serial)
		switch h.VGA {
		case VGAStd:
			str("vga", "stdvga")
		case "":
		default:
			str("vga", string(h.VGA))
		}
		if h.VideoMemMiB != 0 {
			num("videoram", h.VideoMemMiB)
		}
		flag("usb", h.USBTablet)
		if h.USBTablet {
			w("usbdevice", xlList([]string{"tablet"}))
		}
		str("keymap", h.Keymap)
		flag("vnc", false)
		flag("sdl", false)

		dm := &cfg.DeviceModel
		b.WriteString("\n# device model\n")
		str("device_model_version", "qemu-xen")
		str("device_model_override", dm.Override)
		flag("device_model_stubdomain_override", dm.Stubdomain)
		str("stubdomain_kernel", dm.StubdomainKernel)
		str("stubdomain_ramdisk", dm.StubdomainRamdisk)
		str("stubdomain_cmdline", dm.StubdomainCmdline)
		if dm.StubdomainMemoryMiB != 0 {
			num("stubdomain_memory", dm.StubdomainMemoryMiB)
		}
		if len(dm.Args) > 0 {
			w("device_model_args_hvm", xlList(dm.Args))
		}
		if len(dm.StubdomainDMArgs) > 0 {
			w("device_model_args_pv", xlList(dm.StubdomainDMArgs))
		}
	}

	if len(cfg.Disks) > 0 {
		b.WriteString("\n")
		specs := make([]string, len(cfg.Disks))
		for i := range cfg.Disks {
			specs[i] = diskSpec(&cfg.Disks[i])
		}
		w("disk", xlList(specs))
	}
	if len(cfg.NICs) > 0 {
		b.WriteString("\n")
		specs := make([]string, len(cfg.NICs))
		for i := range cfg.NICs {
			specs[i] = nicSpec(&cfg.NICs[i])
		}
		w("vif", xlList(specs))
	}
	if len(cfg.PCIDevices) > 0 {
		b.WriteString("\n")
		specs := make([]string, len(cfg.PCIDevices))
		for i, p := range cfg.PCIDevices {
			specs[i] = pciSpec(&p)
			if p.NoStrictReset {
				fmt.Fprintf(&b, "# %s: no-strict-reset (assigned even without a reset method; a qvm rule, not an xl option)\n", p.Addr)
			}
		}
		w("pci", xlList(specs))
	}
	return b.String()
}

// diskSpec renders a disk in xl-disk-configuration(5) syntax. target=
// comes last: it takes the rest of the spec, commas included.
func diskSpec(d *Disk) string {
	var parts []string
	if !(d.CDROM && d.Target == "") {
		f := d.Format
		if f == "" {
			f = FormatRaw
		}
		parts = append(parts, "format="+string(f))
	}
	parts = append(parts, "vdev="+d.Vdev)
	if d.ReadWrite && !d.CDROM {
		parts = append(parts, "access=rw")
	} else {
		parts = append(parts, "access=ro")
	}
	if d.CDROM {
		parts = append(parts, "devtype=cdrom")
	}
	if d.Backend != "" {
		parts = append(parts, "backendtype="+string(d.Backend))
	}
	if d.BackendDomain != "" {
		parts = append(parts, "backend="+d.BackendDomain)
	}
	if d.Script != "" {
		parts = append(parts, "script="+d.Script)
	}
	parts = append(parts, "target="+d.Target)
	return strings.Join(parts, ", ")
}

// nicSpec renders a NIC in xl-network-configuration(5) syntax.
func nicSpec(n *NIC) string {
	var parts []string
	if len(n.MAC) == 6 {
		parts = append(parts, "mac="+n.MAC.String())
	}
	if len(n.IPs) > 0 {
		parts = append(parts, "ip="+ipList(n.IPs))
	}
	if n.BackendDomain != "" {
		parts = append(parts, "backend="+n.BackendDomain)
	}
	if n.Script != "" {
		parts = append(parts, "script="+n.Script)
	}
	if n.Bridge != "" {
		parts = append(parts, "bridge="+n.Bridge)
	}
	if n.Name != "" {
		parts = append(parts, "vifname="+n.Name)
	}
	if n.Type != "" {
		parts = append(parts, "type="+string(n.Type))
	}
	if n.Model != "" {
		parts = append(parts, "model="+n.Model)
	}
	return strings.Join(parts, ", ")
}

// pciSpec renders a PCI device in xl.cfg's pci= syntax.
func pciSpec(p *PCIDevice) string {
	s := p.Addr.String()
	if p.Permissive {
		s += ",permissive=1"
	}
	if p.PowerMgmt {
		s += ",power_mgmt=1"
	}
	if p.Seize {
		s += ",seize=1"
	}
	return s
}

// xlQuote returns s as an xl.cfg double-quoted string, which libxlutil
// reads back byte for byte: '"' and '\' are escaped, and so are the
// control characters xl.cfg has a letter escape for (\t, \n, ...).
// libxlutil's numeric escapes do not work, so other control characters
// cannot be written; Validate refuses them and they come out as '?'.
func xlQuote(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch c {
		case '"', '\\':
			b.WriteByte('\\')
			b.WriteByte(c)
		case '\a':
			b.WriteString(`\a`)
		case '\b':
			b.WriteString(`\b`)
		case '\f':
			b.WriteString(`\f`)
		case '\n':
			b.WriteString(`\n`)
		case '\r':
			b.WriteString(`\r`)
		case '\t':
			b.WriteString(`\t`)
		case '\v':
			b.WriteString(`\v`)
		default:
			if c < 0x20 || c == 0x7f {
				c = '?'
			}
			b.WriteByte(c)
		}
	}
	b.WriteByte('"')
	return b.String()
}

// xlList renders a list of strings, one per line.
func xlList(items []string) string {
	if len(items) == 0 {
		return "[ ]"
	}
	var b strings.Builder
	b.WriteString("[\n")
	for _, it := range items {
		b.WriteString("    ")
		b.WriteString(xlQuote(it))
		b.WriteString(",\n")
	}
	b.WriteString("]")
	return b.String()
}

// sanitizeComment keeps a value from ending a comment line early.
func sanitizeComment(s string) string {
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return '?'
		}
		return r
	}, s)
}
