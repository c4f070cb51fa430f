package xl

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"regexp"
	"strconv"
	"strings"
)

// DomainType is how Xen virtualises a domain.
type DomainType string

// The domain types libxl 4.17 knows on x86.
const (
	PV  DomainType = "pv"  // paravirtualised, no hardware virtualisation needed
	PVH DomainType = "pvh" // PV in an HVM container, no device model
	HVM DomainType = "hvm" // fully virtualised, with a QEMU device model
)

// Action is what the toolstack does when a domain shuts down for a reason.
// The values are xl.cfg's spellings (on_poweroff="destroy", ...).
type Action string

// The actions of xl.cfg's on_poweroff, on_reboot and on_crash.
const (
	ActionDestroy         Action = "destroy"
	ActionRestart         Action = "restart"
	ActionRenameRestart   Action = "rename-restart"
	ActionPreserve        Action = "preserve"
	ActionCoredumpDestroy Action = "coredump-destroy"
	ActionCoredumpRestart Action = "coredump-restart"
	ActionSoftReset       Action = "soft-reset"
)

// Firmware is the BIOS an HVM domain boots with (xl.cfg bios=).
type Firmware string

// The firmwares hvmloader can load.
const (
	SeaBIOS Firmware = "seabios"
	OVMF    Firmware = "ovmf" // UEFI
)

// VGA is the emulated graphics card of an HVM domain.
type VGA string

// The graphics cards of libxl's vga option.
const (
	VGAStd    VGA = "std"    // xl.cfg vga="stdvga"
	VGACirrus VGA = "cirrus" // libxl's default when none is given
	VGAQXL    VGA = "qxl"
	VGANone   VGA = "none" // no graphics card (needs no VGA ROM)
)

// DiskFormat is the format of a disk's backing data.
type DiskFormat string

// Disk formats. An empty CD-ROM drive has no format of its own: leave
// Disk.Target empty and libxl gets format "empty".
const (
	FormatRaw   DiskFormat = "raw"
	FormatQCOW2 DiskFormat = "qcow2"
)

// DiskBackend is the kind of backend that serves a disk.
type DiskBackend string

// Disk backends; empty lets libxl choose (phy for block devices).
const (
	BackendPhy   DiskBackend = "phy"   // blkback, for block devices
	BackendQdisk DiskBackend = "qdisk" // QEMU, for files and CD-ROMs
	BackendTap   DiskBackend = "tap"
)

// NICType says how an HVM domain sees a network interface.
type NICType string

// NIC types; empty lets libxl choose (emulated plus PV for HVM, PV otherwise).
const (
	NICVif   NICType = "vif"   // PV only
	NICIoemu NICType = "ioemu" // emulated by the device model, and PV
)

// UUID is a domain's 128-bit identifier.
type UUID [16]byte

// NewUUID returns a random (version 4) UUID.
func NewUUID() UUID {
	var u UUID
	_, _ = rand.Read(u[:])
	u[6] = u[6]&0x0f | 0x40
	u[8] = u[8]&0x3f | 0x80
	return u
}

var uuidRE = regexp.MustCompile(`^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$`)

// ParseUUID parses the 8-4-4-4-12 hexadecimal form.
func ParseUUID(s string) (UUID, error) {
	var u UUID
	if !uuidRE.MatchString(s) {
		return u, fmt.Errorf("uuid %q: want the form xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx (hexadecimal)", s)
	}
	b, _ := hex.DecodeString(strings.ReplaceAll(s, "-", ""))
	copy(u[:], b)
	return u, nil
}

// String returns the lower-case 8-4-4-4-12 form.
func (u UUID) String() string {
	h := hex.EncodeToString(u[:])
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
}

// IsZero reports whether u is the nil UUID.
func (u UUID) IsZero() bool { return u == UUID{} }

// PCIAddress is a host PCI function: domain (segment), bus, device, function.
type PCIAddress struct {
	Domain   uint16
	Bus      uint8
	Device   uint8 // 0..31
	Function uint8 // 0..7
}

var bdfRE = regexp.MustCompile(`^(?:([0-9a-fA-F]{1,4}):)?([0-9a-fA-F]{1,2}):([0-9a-fA-F]{1,2})\.([0-7])$`)

// ParsePCIAddress parses "DDDD:BB:DD.F" or "BB:DD.F" (hexadecimal, domain
// 0 when omitted), the form of lspci -D and of xl.cfg's pci=.
func ParsePCIAddress(s string) (PCIAddress, error) {
	m := bdfRE.FindStringSubmatch(s)
	if m == nil {
		return PCIAddress{}, fmt.Errorf("PCI address %q: want DDDD:BB:DD.F or BB:DD.F in hexadecimal, e.g. 0000:00:19.0", s)
	}
	var a PCIAddress
	if m[1] != "" {
		d, _ := strconv.ParseUint(m[1], 16, 16)
		a.Domain = uint16(d)
	}
	b, _ := strconv.ParseUint(m[2], 16, 8)
	dev, _ := strconv.ParseUint(m[3], 16, 8)
	fn, _ := strconv.ParseUint(m[4], 16, 8)
	a.Bus, a.Device, a.Function = uint8(b), uint8(dev), uint8(fn)
	if a.Device > 31 {
		return PCIAddress{}, fmt.Errorf("PCI address %q: device %#x is above 0x1f", s, a.Device)
	}
	return a, nil
}

// String returns the "DDDD:BB:DD.F" form used by sysfs.
func (a PCIAddress) String() string {
	return fmt.Sprintf("%04x:%02x:%02x.%x", a.Domain, a.Bus, a.Device, a.Function)
}

// DomainConfig is everything the toolstack tells libxl about a domain to
// create. Zero values mean "not set" unless a field says otherwise; every
// boolean is handed to libxl explicitly (false means off, not libxl's
// default).
type DomainConfig struct {
	Name string     // required; Xen domain name
	UUID UUID       // required, not the nil UUID
	Type DomainType // required

	VCPUs        int    // required, > 0; all of them online
	MemoryMiB    uint64 // required, > 0: memory at start (libxl target_memkb)
	MaxMemoryMiB uint64 // ballooning ceiling (libxl max_memkb); 0 means MemoryMiB

	// Kernel, Ramdisk and Cmdline boot a kernel directly. PV and PVH
	// domains need Kernel; an HVM domain without Kernel boots from its
	// disks through its firmware.
	Kernel  string
	Ramdisk string
	Cmdline string

	// E820Host gives a PV domain the host's memory map, needed for PCI
	// passthrough to PV domains. libxl has it for PV only.
	E820Host bool

	// HVM holds the settings of HVM domains; ignored for PV and PVH.
	HVM HVMConfig
	// DeviceModel is the QEMU of an HVM domain; ignored for PV and PVH.
	DeviceModel DeviceModel

	Disks      []Disk
	NICs       []NIC
	PCIDevices []PCIDevice

	// What happens on each kind of shutdown; empty means destroy.
	// Note that libxl only records these: acting on them is the
	// toolstack's job (Context.WaitDeath destroys).
	OnPoweroff Action
	OnReboot   Action
	OnCrash    Action
}

// HVMConfig is the part of a DomainConfig that only HVM domains have.
type HVMConfig struct {
	Firmware Firmware // empty means SeaBIOS
	// Boot is the boot order, xl.cfg letters: c disk, d CD-ROM, n network
	// (e.g. "dc": CD-ROM, then disk). Empty leaves libxl's default ("cd").
	Boot string

	ACPI      bool
	APIC      bool
	PAE       bool
	Viridian  bool // Hyper-V enlightenments for Windows
	NestedHVM bool // expose VT-x/AMD-V to the guest

	// Serial is the first serial port's QEMU spec ("pty",
	// "file:/path", ...); empty means no serial port.
	Serial string
	// VGA is the emulated graphics card; empty leaves libxl's default.
	VGA VGA
	// VideoMemMiB is the video memory; 0 leaves libxl's default.
	VideoMemMiB uint64
	// USBTablet adds a USB controller with a tablet (absolute pointer).
	USBTablet bool
	// Keymap is the keyboard layout QEMU loads (e.g. "en-us"); empty
	// leaves QEMU's default.
	Keymap string
}

// DeviceModel configures the QEMU that emulates an HVM domain's devices,
// in dom0 or in a stubdomain. VNC and SDL displays are always off.
type DeviceModel struct {
	// Stubdomain runs QEMU in a Linux stubdomain (libxl
	// device_model_stubdomain, xl.cfg device_model_stubdomain_override).
	Stubdomain bool
	// StubdomainKernel and StubdomainRamdisk are the stubdomain's kernel
	// and root filesystem; empty leaves libxl's default paths.
	StubdomainKernel  string
	StubdomainRamdisk string
	// StubdomainCmdline is the stubdomain kernel's command line.
	StubdomainCmdline string
	// StubdomainMemoryMiB is the stubdomain's memory; 0 leaves libxl's
	// default.
	StubdomainMemoryMiB uint64
	// Args are extra QEMU arguments (libxl extra_hvm, xl.cfg
	// device_model_args_hvm); a Linux stubdomain gets them too.
	Args []string
	// StubdomainDMArgs are extra arguments of the stubdomain's device
	// model in dom0 (libxl extra_pv, xl.cfg device_model_args_pv), which
	// libxl runs for the stubdomain's consoles (qvm-stubdom-dm): what the
	// stubdomain itself must not see or change.
	StubdomainDMArgs []string
	// Override is the path of the QEMU binary in dom0 (xl.cfg
	// device_model_override); empty leaves libxl's default.
	Override string
}

// Disk is a virtual block device.
type Disk struct {
	// Target is the backing file or block device in the backend domain.
	// Empty only for an empty CD-ROM drive.
	Target string
	// Vdev is the device name in the guest: xvda, xvdb, ..., hda, ...
	Vdev string
	// Format of Target; empty means raw.
	Format DiskFormat
	// Backend is the kind of backend; empty lets libxl choose.
	Backend DiskBackend
	// ReadWrite makes the disk writable.
	ReadWrite bool
	// CDROM makes it a removable CD-ROM drive, emulated by the device
	// model of an HVM domain and served by a qdisk backend.
	//
	// Known limitation of Xen 4.17's libxl with QEMU 7.2 as device model:
	// a drive that starts empty cannot take a medium later (QEMU fails to
	// set up the empty qdisk and drops its QMP connection on the insert;
	// `xl cd-insert` fails the same way). Start the domain with a medium
	// in every drive that will be used; eject and insert then work.
	CDROM bool
	// BackendDomain is the name (or decimal domid) of the domain serving
	// the disk; empty means dom0.
	BackendDomain string
	// Script is a block hotplug script run in the backend domain.
	Script string
}

// NIC is a virtual network interface.
type NIC struct {
	// MAC is the guest's MAC address; nil lets libxl pick a random
	// 00:16:3e address.
	MAC net.HardwareAddr
	// IPs are the guest's addresses, handed to the hotplug script (e.g.
	// vif-route sets up a route for each).
	IPs []netip.Addr
	// BackendDomain is the name (or decimal domid) of the domain serving
	// the interface; empty means dom0.
	BackendDomain string
	// Script is the hotplug script in the backend domain (e.g.
	// "vif-route-qubes"); empty leaves libxl's default (vif-bridge).
	Script string
	// Bridge is the bridge the backend interface joins (vif-bridge).
	Bridge string
	// Name is the backend interface's name; empty means vifDOMID.DEVID.
	Name string
	// Type is how an HVM domain sees the NIC; empty lets libxl choose.
	Type NICType
	// Model is the emulated card for HVM domains (e.g. "e1000").
	Model string
}

// PCIDevice is a host PCI function passed through to the domain.
type PCIDevice struct {
	Addr PCIAddress
	// Permissive lets the guest write all of the device's configuration
	// space instead of the registers pciback allows.
	Permissive bool
	// PowerMgmt lets the guest control the device's power state.
	PowerMgmt bool
	// Seize makes libxl bind the device to pciback if it is not
	// assignable yet (libvirt's managed="yes").
	Seize bool
	// NoStrictReset allows a device that offers no reset method.
	//
	// libxl has no such field: libxl resets a device itself when it
	// is assigned and removed, and only logs when that fails. Strict
	// reset is a toolstack rule (libvirt's, which Qubes patched in as
	// nostrictreset): unless NoStrictReset is set, Context.Create
	// refuses a device whose sysfs node has no "reset" file, i.e. for
	// which the kernel knows no FLR, PM or bus reset.
	// It appears in neither libxl's JSON nor the xl.cfg text.
	NoStrictReset bool
}

// ShutdownReason is why a domain shut down.
type ShutdownReason string

// Shutdown reasons reported by Xen, plus ReasonDestroyed for a domain that
// was destroyed without shutting down first.
const (
	ReasonPoweroff  ShutdownReason = "poweroff"
	ReasonReboot    ShutdownReason = "reboot"
	ReasonSuspend   ShutdownReason = "suspend"
	ReasonCrash     ShutdownReason = "crash"
	ReasonWatchdog  ShutdownReason = "watchdog"
	ReasonSoftReset ShutdownReason = "soft_reset"
	ReasonUnknown   ShutdownReason = "unknown"
	ReasonDestroyed ShutdownReason = "destroyed"
)

// shutdownReasonFromXen maps Xen's SHUTDOWN_* codes.
func shutdownReasonFromXen(code int) ShutdownReason {
	switch code {
	case 0:
		return ReasonPoweroff
	case 1:
		return ReasonReboot
	case 2:
		return ReasonSuspend
	case 3:
		return ReasonCrash
	case 4:
		return ReasonWatchdog
	case 5:
		return ReasonSoftReset
	}
	return ReasonUnknown
}

// DomainState is the state Xen reports for a domain, most significant
// flag first: dying, shutdown, paused, running, blocked.
type DomainState string

// Domain states.
const (
	StateRunning  DomainState = "running"
	StateBlocked  DomainState = "blocked" // waiting for an event; normal when idle
	StatePaused   DomainState = "paused"
	StateShutdown DomainState = "shutdown" // shut down, not yet destroyed
	StateDying    DomainState = "dying"    // being destroyed
)

// DomainInfo is what the hypervisor reports about a domain.
type DomainInfo struct {
	ID   uint32
	Name string // empty if the domain has no name in xenstore
	UUID UUID
	// Type is PV or HVM as Xen reports it: a PVH domain reports HVM.
	Type  DomainType
	State DomainState
	// ShutdownReason is set when State is StateShutdown.
	ShutdownReason ShutdownReason
	shutdownCode   int // Xen's SHUTDOWN_* code behind ShutdownReason
	CurrentMemKiB  uint64
	MaxMemKiB      uint64
	VCPUsOnline    int
	CPUTimeNs      uint64
}

// PhysInfo is what the hypervisor reports about the host.
type PhysInfo struct {
	CPUs           int
	ThreadsPerCore int
	CoresPerSocket int
	NUMANodes      int
	CPUkHz         uint32
	TotalMemKiB    uint64
	FreeMemKiB     uint64
	// Virtualisation capabilities (xl info's virt_caps).
	CapPV          bool
	CapHVM         bool // hardware virtualisation (VT-x/AMD-V) usable
	CapHAP         bool // hardware-assisted paging (EPT/NPT)
	CapShadow      bool // shadow paging compiled into Xen
	CapHVMDirectIO bool // an IOMMU: PCI passthrough to HVM domains
}

// ErrNoHVM is returned by PhysInfo.CheckType when an HVM or PVH domain is
// asked for on a host without hardware virtualisation.
var ErrNoHVM = errors.New("this machine's hypervisor has no HVM support: enable hardware virtualisation (VT-x/AMD-V) in the firmware")

// CheckType returns a clear error when the host cannot run a domain of
// type t: HVM and PVH need hardware virtualisation (ErrNoHVM) and a
// paging mode (HAP or shadow).
func (p PhysInfo) CheckType(t DomainType) error {
	switch t {
	case PV:
		if !p.CapPV {
			return fmt.Errorf("this machine's hypervisor cannot run PV domains (built without PV support): use virt_mode pvh or hvm")
		}
	case HVM, PVH:
		if !p.CapHVM {
			return fmt.Errorf("%s domain: %w", t, ErrNoHVM)
		}
		if !p.CapHAP && !p.CapShadow {
			return fmt.Errorf("%s domain: this machine's hypervisor has neither hardware-assisted paging (EPT/NPT) nor shadow paging: enable EPT/NPT in the firmware or use a Xen built with shadow paging", t)
		}
	default:
		return fmt.Errorf("domain type %q: want pv, pvh or hvm", t)
	}
	return nil
}

var (
	nameRE   = regexp.MustCompile(`^[A-Za-z0-9_.-][A-Za-z0-9_.:-]*$`)
	vdevRE   = regexp.MustCompile(`^(xvd|hd|sd)[a-z]+[0-9]*$|^d[0-9]+p[0-9]+$`)
	bootRE   = regexp.MustCompile(`^[acdn]{1,4}$`)
	keymapRE = regexp.MustCompile(`^[a-z]{2}(-[a-z]{2,3})?$`)
)

// Validate checks c for mistakes libxl would reject or silently
// misinterpret, and says what is wrong and how to fix it.
func (c *DomainConfig) Validate() error {
	if err := c.validate(); err != nil {
		if c.Name != "" {
			return fmt.Errorf("domain %s: %w", c.Name, err)
		}
		return err
	}
	return nil
}

func (c *DomainConfig) validate() error {
	if c.Name == "" {
		return errors.New("name is empty: every domain needs a name")
	}
	if !nameRE.MatchString(c.Name) || len(c.Name) > 64 {
		return fmt.Errorf("name %q: use up to 64 letters, digits, '_', '.', '-'", c.Name)
	}
	if c.UUID.IsZero() {
		return errors.New("uuid is the nil UUID: give the domain its own UUID")
	}
	switch c.Type {
	case PV, PVH, HVM:
	default:
		return fmt.Errorf("type %q: want pv, pvh or hvm", c.Type)
	}
	if c.VCPUs <= 0 || c.VCPUs > 512 {
		return fmt.Errorf("vcpus %d: want 1 to 512", c.VCPUs)
	}
	if c.MemoryMiB == 0 {
		return errors.New("memory is 0 MiB: give the domain some memory")
	}
	if c.MemoryMiB > 1<<30 || c.MaxMemoryMiB > 1<<30 {
		return fmt.Errorf("memory %d MiB / maxmem %d MiB: too large", c.MemoryMiB, c.MaxMemoryMiB)
	}
	if c.MaxMemoryMiB != 0 && c.MaxMemoryMiB < c.MemoryMiB {
		return fmt.Errorf("maxmem %d MiB is below memory %d MiB: raise maxmem or set it to 0 (no ballooning)", c.MaxMemoryMiB, c.MemoryMiB)
	}
	if c.Type != HVM && c.Kernel == "" {
		return fmt.Errorf("%s domain without a kernel: PV and PVH domains boot a kernel given by path (bootloaders are not supported)", c.Type)
	}
	if c.Kernel == "" && (c.Ramdisk != "" || c.Cmdline != "") {
		return errors.New("ramdisk or cmdline without a kernel: give the kernel too, or drop them to boot from disk")
	}
	for _, s := range []struct{ what, v string }{{"kernel", c.Kernel}, {"ramdisk", c.Ramdisk}, {"cmdline", c.Cmdline}} {
		if err := checkText(s.what, s.v); err != nil {
			return err
		}
	}
	if c.E820Host && c.Type != PV {
		return fmt.Errorf("e820_host is a PV option (libxl has it for PV domains only): drop it for this %s domain", c.Type)
	}
	for _, a := range []struct {
		what string
		v    Action
	}{{"on_poweroff", c.OnPoweroff}, {"on_reboot", c.OnReboot}, {"on_crash", c.OnCrash}} {
		if _, ok := actionCode(a.v); !ok {
			return fmt.Errorf("%s %q: want destroy, restart, rename-restart, preserve, coredump-destroy, coredump-restart or soft-reset", a.what, a.v)
		}
	}
	if c.Type == HVM {
		if err := c.HVM.validate(); err != nil {
			return err
		}
		if err := c.DeviceModel.validate(); err != nil {
			return err
		}
	}
	vdevs := map[string]bool{}
	for i, d := range c.Disks {
		if err := d.validate(c.Type); err != nil {
			return fmt.Errorf("disk %d (%s): %w", i, d.Vdev, err)
		}
		if vdevs[d.Vdev] {
			return fmt.Errorf("disk %d: vdev %s is used twice: give each disk its own", i, d.Vdev)
		}
		vdevs[d.Vdev] = true
	}
	for i, n := range c.NICs {
		if err := n.validate(c.Type); err != nil {
			return fmt.Errorf("nic %d: %w", i, err)
		}
	}
	seen := map[PCIAddress]bool{}
	for _, p := range c.PCIDevices {
		if seen[p.Addr] {
			return fmt.Errorf("PCI device %s is listed twice", p.Addr)
		}
		seen[p.Addr] = true
		if p.Addr.Device > 31 || p.Addr.Function > 7 {
			return fmt.Errorf("PCI device %s: device must be 0..1f and function 0..7", p.Addr)
		}
	}
	if len(c.PCIDevices) > 0 && c.Type == PVH {
		return errors.New("PCI passthrough is not supported for PVH domains in Xen 4.17: use pv or hvm")
	}
	return nil
}

// checkText refuses strings that have no place in a path, a command line
// or xl.cfg: control characters other than tab.
func checkText(what, s string) error {
	for i := 0; i < len(s); i++ {
		if c := s[i]; (c < 0x20 && c != '\t') || c == 0x7f {
			return fmt.Errorf("%s %q contains a control character (%#02x): remove it", what, s, c)
		}
	}
	return nil
}

func (h *HVMConfig) validate() error {
	switch h.Firmware {
	case "", SeaBIOS, OVMF:
	default:
		return fmt.Errorf("firmware %q: want seabios or ovmf", h.Firmware)
	}
	if h.Boot != "" && !bootRE.MatchString(h.Boot) {
		return fmt.Errorf("boot order %q: use the letters c (disk), d (CD-ROM), n (network), e.g. \"dc\"", h.Boot)
	}
	switch h.VGA {
	case "", VGAStd, VGACirrus, VGAQXL, VGANone:
	default:
		return fmt.Errorf("vga %q: want std, cirrus, qxl or none", h.VGA)
	}
	if h.VGA == VGANone && h.VideoMemMiB != 0 {
		return errors.New("videoram set with vga none: drop one of them")
	}
	if h.Keymap != "" && !keymapRE.MatchString(h.Keymap) {
		return fmt.Errorf("keymap %q: want a QEMU keymap name such as en-us or de", h.Keymap)
	}
	if err := checkText("serial", h.Serial); err != nil {
		return err
	}
	return nil
}

func (m *DeviceModel) validate() error {
	if !m.Stubdomain && (m.StubdomainKernel != "" || m.StubdomainRamdisk != "" || m.StubdomainCmdline != "" || m.StubdomainMemoryMiB != 0) {
		return errors.New("stubdomain kernel, ramdisk, cmdline or memory given but the stubdomain is off: set DeviceModel.Stubdomain or drop them")
	}
	for _, s := range append([]string{m.StubdomainKernel, m.StubdomainRamdisk, m.StubdomainCmdline, m.Override}, m.Args...) {
		if err := checkText("device model setting", s); err != nil {
			return err
		}
	}
	return nil
}

func (d *Disk) validate(t DomainType) error {
	if !vdevRE.MatchString(d.Vdev) {
		return fmt.Errorf("vdev %q: want a name such as xvda, hdc or sda", d.Vdev)
	}
	if d.Target == "" && !d.CDROM {
		return errors.New("no target: only an empty CD-ROM drive may have no backing file or device")
	}
	if d.CDROM && t != HVM {
		// PV CD-ROMs exist in libxl but cannot change media at run time.
		return fmt.Errorf("CD-ROM drives are emulated by the device model: %s domains have none (attach the image as a read-only disk instead)", t)
	}
	if d.CDROM && d.ReadWrite {
		return errors.New("a CD-ROM drive is read-only: clear ReadWrite")
	}
	if d.CDROM && d.Backend != "" && d.Backend != BackendQdisk {
		return fmt.Errorf("backend type %s for a CD-ROM drive: libxl serves the CD-ROM drives of HVM domains with qdisk only (leave Backend empty)", d.Backend)
	}
	if err := checkText("target", d.Target); err != nil {
		return err
	}
	switch d.Format {
	case "", FormatRaw, FormatQCOW2:
	default:
		return fmt.Errorf("format %q: want raw or qcow2", d.Format)
	}
	switch d.Backend {
	case "", BackendPhy, BackendQdisk, BackendTap:
	default:
		return fmt.Errorf("backend type %q: want phy, qdisk or tap", d.Backend)
	}
	if d.BackendDomain != "" && !nameRE.MatchString(d.BackendDomain) {
		return fmt.Errorf("backend domain %q is not a domain name or id", d.BackendDomain)
	}
	if strings.ContainsAny(d.Script, ",= \x00\n\r") {
		return fmt.Errorf("script %q contains a comma, '=', space or line break", d.Script)
	}
	return nil
}

func (n *NIC) validate(t DomainType) error {
	if n.MAC != nil && len(n.MAC) != 6 {
		return fmt.Errorf("MAC %s: want 6 bytes", n.MAC)
	}
	for _, ip := range n.IPs {
		if !ip.IsValid() {
			return errors.New("an IP address is the zero value")
		}
	}
	if n.BackendDomain != "" && !nameRE.MatchString(n.BackendDomain) {
		return fmt.Errorf("backend domain %q is not a domain name or id", n.BackendDomain)
	}
	for _, s := range []struct{ what, v string }{{"script", n.Script}, {"bridge", n.Bridge}, {"name", n.Name}, {"model", n.Model}} {
		if strings.ContainsAny(s.v, ",= '\"\x00\n\r") {
			return fmt.Errorf("%s %q contains a comma, '=', quote, space or line break", s.what, s.v)
		}
	}
	switch n.Type {
	case "", NICVif, NICIoemu:
	default:
		return fmt.Errorf("type %q: want vif or ioemu", n.Type)
	}
	if t != HVM && (n.Type == NICIoemu || n.Model != "") {
		return fmt.Errorf("emulated NIC (type ioemu or a model) on a %s domain: only HVM domains have a device model", t)
	}
	return nil
}

// actionCode maps an Action to libxl's enum (LIBXL_ACTION_ON_SHUTDOWN_*).
func actionCode(a Action) (int, bool) {
	switch a {
	case "", ActionDestroy:
		return 1, true
	case ActionRestart:
		return 2, true
	case ActionRenameRestart:
		return 3, true
	case ActionPreserve:
		return 4, true
	case ActionCoredumpDestroy:
		return 5, true
	case ActionCoredumpRestart:
		return 6, true
	case ActionSoftReset:
		return 7, true
	}
	return 0, false
}

// orDestroy returns a, or destroy when a is empty.
func orDestroy(a Action) Action {
	if a == "" {
		return ActionDestroy
	}
	return a
}

// maxMemMiB returns the ballooning ceiling actually used.
func (c *DomainConfig) maxMemMiB() uint64 {
	if c.MaxMemoryMiB == 0 {
		return c.MemoryMiB
	}
	return c.MaxMemoryMiB
}

// ipList renders IPs the way libxl carries them: space-separated.
func ipList(ips []netip.Addr) string {
	s := make([]string, len(ips))
	for i, ip := range ips {
		s[i] = ip.String()
	}
	return strings.Join(s, " ")
}
