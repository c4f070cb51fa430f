package xl

import (
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func validHVM() *DomainConfig {
	return &DomainConfig{
		Name: "work", UUID: UUID{1, 2, 3}, Type: HVM, VCPUs: 2, MemoryMiB: 400, MaxMemoryMiB: 4000,
		HVM:         HVMConfig{Boot: "dc", ACPI: true, APIC: true, PAE: true, Viridian: true, VGA: VGAStd, USBTablet: true},
		DeviceModel: DeviceModel{Stubdomain: true},
		Disks:       []Disk{{Target: "/dev/x", Vdev: "xvda", ReadWrite: true}},
	}
}

func TestValidateRejects(t *testing.T) {
	for _, tc := range []struct {
		name   string
		change func(c *DomainConfig)
		want   string // part of the error
	}{
		{"no name", func(c *DomainConfig) { c.Name = "" }, "name is empty"},
		{"bad name", func(c *DomainConfig) { c.Name = "a b" }, "name \"a b\""},
		{"nil uuid", func(c *DomainConfig) { c.UUID = UUID{} }, "nil UUID"},
		{"bad type", func(c *DomainConfig) { c.Type = "kvm" }, "want pv, pvh or hvm"},
		{"no vcpus", func(c *DomainConfig) { c.VCPUs = 0 }, "vcpus 0"},
		{"no memory", func(c *DomainConfig) { c.MemoryMiB = 0 }, "memory is 0"},
		{"maxmem below memory", func(c *DomainConfig) { c.MaxMemoryMiB = 100 }, "maxmem 100 MiB is below memory 400 MiB"},
		{"pv without kernel", func(c *DomainConfig) { c.Type = PV; c.Disks = nil }, "pv domain without a kernel"},
		{"pvh without kernel", func(c *DomainConfig) { c.Type = PVH; c.Disks = nil }, "pvh domain without a kernel"},
		{"cmdline without kernel", func(c *DomainConfig) { c.Cmdline = "quiet" }, "without a kernel"},
		{"control char", func(c *DomainConfig) { c.Kernel = "/boot/vm\nlinuz" }, "control character"},
		{"e820 on hvm", func(c *DomainConfig) { c.E820Host = true }, "e820_host is a PV option"},
		{"bad action", func(c *DomainConfig) { c.OnCrash = "explode" }, "on_crash \"explode\""},
		{"bad firmware", func(c *DomainConfig) { c.HVM.Firmware = "uefi" }, "firmware \"uefi\""},
		{"bad boot", func(c *DomainConfig) { c.HVM.Boot = "x" }, "boot order \"x\""},
		{"bad vga", func(c *DomainConfig) { c.HVM.VGA = "vmware" }, "vga \"vmware\""},
		{"videoram without vga", func(c *DomainConfig) { c.HVM.VGA = VGANone; c.HVM.VideoMemMiB = 8 }, "videoram set with vga none"},
		{"stub settings without stub", func(c *DomainConfig) { c.DeviceModel.Stubdomain = false; c.DeviceModel.StubdomainMemoryMiB = 128 }, "stubdomain is off"},
		{"bad vdev", func(c *DomainConfig) { c.Disks[0].Vdev = "vda" }, "vdev \"vda\""},
		{"dup vdev", func(c *DomainConfig) { c.Disks = append(c.Disks, c.Disks[0]) }, "used twice"},
		{"disk without target", func(c *DomainConfig) { c.Disks[0].Target = "" }, "no target"},
		{"rw cdrom", func(c *DomainConfig) { c.Disks = append(c.Disks, Disk{Vdev: "xvdi", CDROM: true, ReadWrite: true}) }, "read-only"},
		{"cdrom on pv", func(c *DomainConfig) {
			c.Type = PV
			c.Kernel = "/k"
			c.Disks = []Disk{{Vdev: "xvdi", CDROM: true}}
		}, "CD-ROM drives are emulated"},
		{"phy cdrom", func(c *DomainConfig) { c.Disks = append(c.Disks, Disk{Vdev: "xvdi", CDROM: true, Backend: BackendPhy}) }, "qdisk only"},
		{"bad disk format", func(c *DomainConfig) { c.Disks[0].Format = "vmdk" }, "format \"vmdk\""},
		{"bad mac", func(c *DomainConfig) { c.NICs = []NIC{{MAC: []byte{1, 2}}} }, "want 6 bytes"},
		{"zero ip", func(c *DomainConfig) { c.NICs = []NIC{{IPs: []netip.Addr{{}}}} }, "zero value"},
		{"comma in script", func(c *DomainConfig) { c.NICs = []NIC{{Script: "a,b"}} }, "script \"a,b\""},
		{"emulated nic on pvh", func(c *DomainConfig) {
			c.Type = PVH
			c.Kernel = "/k"
			c.NICs = []NIC{{Model: "e1000"}}
		}, "only HVM domains have a device model"},
		{"pci on pvh", func(c *DomainConfig) {
			c.Type = PVH
			c.Kernel = "/k"
			c.PCIDevices = []PCIDevice{{Addr: PCIAddress{Bus: 1}}}
		}, "not supported for PVH"},
		{"dup pci", func(c *DomainConfig) {
			c.PCIDevices = []PCIDevice{{Addr: PCIAddress{Bus: 1}}, {Addr: PCIAddress{Bus: 1}, Permissive: true}}
		}, "listed twice"},
		{"bad pci device", func(c *DomainConfig) { c.PCIDevices = []PCIDevice{{Addr: PCIAddress{Device: 32}}} }, "device must be"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := validHVM()
			tc.change(c)
			err := c.Validate()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Validate() = %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

func TestValidateAcceptsMatrix(t *testing.T) {
	for _, tc := range testMatrix() {
		if err := tc.cfg.Validate(); err != nil {
			t.Errorf("%s: %v", tc.name, err)
		}
	}
}

func TestParseUUID(t *testing.T) {
	u, err := ParseUUID("5EED0102-1234-4567-89ab-cdef01234567")
	if err != nil {
		t.Fatal(err)
	}
	if got := u.String(); got != "5eed0102-1234-4567-89ab-cdef01234567" {
		t.Fatalf("String() = %s", got)
	}
	for _, bad := range []string{"", "5eed0102123445678 9abcdef01234567", "5eed0102-1234-4567-89ab-cdef0123456", "zeed0102-1234-4567-89ab-cdef01234567"} {
		if _, err := ParseUUID(bad); err == nil {
			t.Errorf("ParseUUID(%q) accepted", bad)
		}
	}
	a, b := NewUUID(), NewUUID()
	if a == b || a.IsZero() || a[6]>>4 != 4 || a[8]>>6 != 2 {
		t.Fatalf("NewUUID gave %s and %s", a, b)
	}
}

func TestParsePCIAddress(t *testing.T) {
	for in, want := range map[string]PCIAddress{
		"0000:00:19.0": {0, 0, 0x19, 0},
		"00:1f.7":      {0, 0, 0x1f, 7},
		"1:ff:0.3":     {1, 0xff, 0, 3},
		"ABCD:0a:1F.2": {0xabcd, 0x0a, 0x1f, 2},
	} {
		got, err := ParsePCIAddress(in)
		if err != nil || got != want {
			t.Errorf("ParsePCIAddress(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "00:19", "00:20.0", "00:19.8", "0:0:0:0.0", "00_19.0", "12345:00:00.0"} {
		if _, err := ParsePCIAddress(bad); err == nil {
			t.Errorf("ParsePCIAddress(%q) accepted", bad)
		}
	}
}

func FuzzParsePCIAddress(f *testing.F) {
	for _, s := range []string{"0000:00:19.0", "00:1f.7", "ffff:ff:1f.7", "00:20.0", "x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		a, err := ParsePCIAddress(s)
		if err != nil {
			return
		}
		b, err := ParsePCIAddress(a.String())
		if err != nil || a != b {
			t.Fatalf("%q -> %v -> %q -> %v, %v", s, a, a.String(), b, err)
		}
		if a.Device > 31 || a.Function > 7 {
			t.Fatalf("%q parsed to out-of-range %v", s, a)
		}
	})
}

func FuzzParseUUID(f *testing.F) {
	for _, s := range []string{"5eed0102-1234-4567-89ab-cdef01234567", "", "----"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		u, err := ParseUUID(s)
		if err != nil {
			return
		}
		if !strings.EqualFold(u.String(), s) {
			t.Fatalf("%q -> %s", s, u)
		}
	})
}

func TestCheckType(t *testing.T) {
	noHVM := PhysInfo{CapPV: true}
	err := noHVM.CheckType(HVM)
	if !errors.Is(err, ErrNoHVM) || !strings.Contains(err.Error(), "enable hardware virtualisation (VT-x/AMD-V) in the firmware") {
		t.Fatalf("HVM on a host without VT-x: %v", err)
	}
	if err := noHVM.CheckType(PVH); !errors.Is(err, ErrNoHVM) {
		t.Fatalf("PVH on a host without VT-x: %v", err)
	}
	if err := noHVM.CheckType(PV); err != nil {
		t.Fatalf("PV on a PV host: %v", err)
	}
	noPaging := PhysInfo{CapPV: true, CapHVM: true}
	if err := noPaging.CheckType(HVM); err == nil || !strings.Contains(err.Error(), "EPT/NPT") {
		t.Fatalf("HVM without HAP or shadow: %v", err)
	}
	full := PhysInfo{CapPV: true, CapHVM: true, CapHAP: true}
	for _, ty := range []DomainType{PV, PVH, HVM} {
		if err := full.CheckType(ty); err != nil {
			t.Errorf("%s on a full host: %v", ty, err)
		}
	}
	if err := (PhysInfo{CapHVM: true, CapHAP: true}).CheckType(PV); err == nil {
		t.Error("PV accepted on a host without PV support")
	}
}

// TestCheckPCIReset runs the strict-reset rule on a sysfs-shaped tree (the
// kernel's layout: /sys/bus/pci/devices/DDDD:BB:DD.F/reset exists when a
// reset method is known).
func TestCheckPCIReset(t *testing.T) {
	root := t.TempDir()
	withReset := PCIAddress{Bus: 0, Device: 0x19, Function: 0}
	without := PCIAddress{Bus: 2, Device: 0, Function: 0}
	for _, a := range []PCIAddress{withReset, without} {
		if err := os.MkdirAll(filepath.Join(root, "bus/pci/devices", a.String()), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(root, "bus/pci/devices", withReset.String(), "reset"), nil, 0o200); err != nil {
		t.Fatal(err)
	}
	if err := CheckPCIReset(root, withReset); err != nil {
		t.Errorf("device with reset: %v", err)
	}
	if err := CheckPCIReset(root, without); !errors.Is(err, ErrStrictReset) || !strings.Contains(err.Error(), "no-strict-reset") {
		t.Errorf("device without reset: %v", err)
	}
	err := CheckPCIReset(root, PCIAddress{Bus: 9})
	if err == nil || errors.Is(err, ErrStrictReset) || !strings.Contains(err.Error(), "not present") {
		t.Errorf("missing device: %v", err)
	}
}

// TestCheckPCIResetRealSysfs checks the rule against this machine's own
// PCI devices: it must agree with the kernel's reset files.
func TestCheckPCIResetRealSysfs(t *testing.T) {
	ents, err := os.ReadDir("/sys/bus/pci/devices")
	if err != nil || len(ents) == 0 {
		t.Skipf("no PCI devices in sysfs here (%v)", err)
	}
	for _, e := range ents {
		a, err := ParsePCIAddress(e.Name())
		if err != nil {
			t.Fatalf("sysfs PCI name %q: %v", e.Name(), err)
		}
		_, statErr := os.Stat(filepath.Join("/sys/bus/pci/devices", e.Name(), "reset"))
		err = CheckPCIReset("/sys", a)
		if (statErr == nil) != (err == nil) {
			t.Errorf("%s: reset file present=%v but CheckPCIReset = %v", a, statErr == nil, err)
		}
	}
}
