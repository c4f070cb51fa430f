package domconfig

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/qvm-project/qvm/blkback"
	"github.com/qvm-project/qvm/vm"
	"github.com/qvm-project/qvm/vmkernel"
	"github.com/qvm-project/qvm/vmkernel/vmkerneltest"
	"github.com/qvm-project/qvm/xl"
)

func setup(t *testing.T) (*vm.System, Inputs) {
	t.Helper()
	kdir := t.TempDir()
	os.MkdirAll(filepath.Join(kdir, "6.1.0"), 0o755)
	for _, f := range []string{KernelFile, InitramfsFile, ModulesFile} {
		os.WriteFile(filepath.Join(kdir, "6.1.0", f), []byte("x"), 0o644)
	}
	s := vm.NewSystem()
	s.Host = vm.Host{MemoryMiB: 8192, Kernels: map[string]vm.KernelInfo{"6.1.0": {}}}
	n := 0
	create := func(spec vm.CreateSpec) {
		n++
		spec.UUID = "5d7c8f3a-0000-4000-8000-00000000000" + string(rune('0'+n))
		if _, err := s.Create(spec); err != nil {
			t.Fatalf("%s: %v", spec.Name, err)
		}
	}
	create(vm.CreateSpec{Name: "debian-12", Class: vm.TemplateVM, Label: "black"})
	create(vm.CreateSpec{Name: "work", Class: vm.AppVM, Label: "blue", Template: "debian-12"})
	create(vm.CreateSpec{Name: "pvvm", Class: vm.StandaloneVM, Label: "red", Props: props("virt_mode", "pv", "kernelopts", "quiet")})
	create(vm.CreateSpec{Name: "my-new-vm", Class: vm.StandaloneVM, Label: "green", Props: props("virt_mode", "hvm", "kernel", "", "memory", "4096", "stubdom_mem", "128")})
	create(vm.CreateSpec{Name: "win-tpl", Class: vm.TemplateVM, Label: "green", Props: props("virt_mode", "HVM", "kernel", "")})
	create(vm.CreateSpec{Name: "win-app", Class: vm.AppVM, Label: "green", Template: "win-tpl"})
	create(vm.CreateSpec{Name: "usb", Class: vm.StandaloneVM, Label: "red", Props: props("kernel", "")})
	d, _ := s.Lookup("usb")
	d.PCI = []vm.PCIDevice{{BDF: "00:14.0", Permissive: true, NoStrictReset: true}}
	return s, Inputs{Root: "/r.img", Private: "/p.img", Volatile: "/v.img", KernelsDir: kdir,
		StubdomKernel: "/stub/vmlinuz", StubdomRamdisk: "/stub/initramfs"}
}

func build(t *testing.T, s *vm.System, name string, in Inputs) *xl.DomainConfig {
	t.Helper()
	v, err := s.View(name)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := Build(v, in)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return cfg
}

func TestPVHAppVM(t *testing.T) {
	s, in := setup(t)
	cfg := build(t, s, "work", in)
	if cfg.Type != xl.PVH || cfg.MemoryMiB != 400 || cfg.MaxMemoryMiB != 4000 || cfg.VCPUs != 2 {
		t.Errorf("work: %+v", cfg)
	}
	if !strings.HasSuffix(cfg.Kernel, "6.1.0/vmlinuz") || !strings.HasSuffix(cfg.Ramdisk, "6.1.0/initramfs") {
		t.Errorf("kernel %s ramdisk %s", cfg.Kernel, cfg.Ramdisk)
	}
	if cfg.Cmdline != KernelOptsCommon+" swiotlb=2048" {
		t.Errorf("cmdline %q", cfg.Cmdline)
	}
	vdevs := []string{}
	for _, d := range cfg.Disks {
		vdevs = append(vdevs, d.Vdev)
	}
	if strings.Join(vdevs, ",") != "xvda,xvdb,xvdc,xvdd" || cfg.Disks[3].ReadWrite || !cfg.Disks[0].ReadWrite {
		t.Errorf("disks %+v", cfg.Disks)
	}
	if len(cfg.NICs) != 1 || cfg.NICs[0].MAC.String() != "00:16:3e:5e:6c:02" || cfg.NICs[0].IPs[0].String() != "10.137.0.2" || cfg.NICs[0].BackendDomain != "" || cfg.NICs[0].Script != VifScript {
		t.Errorf("nic %+v", cfg.NICs)
	}
	if cfg.OnPoweroff != xl.ActionDestroy || cfg.OnReboot != xl.ActionDestroy || cfg.OnCrash != xl.ActionDestroy {
		t.Errorf("actions %s %s %s", cfg.OnPoweroff, cfg.OnReboot, cfg.OnCrash)
	}
}

func TestStandaloneHVMWithStubdomain(t *testing.T) {
	s, in := setup(t)
	in.CDROM = "/iso/install.iso"
	in.StubdomDM = "/usr/bin/qvm-stubdom-dm"
	cfg := build(t, s, "my-new-vm", in)
	if cfg.Type != xl.HVM || cfg.Kernel != "" || cfg.MaxMemoryMiB != 0 || cfg.MemoryMiB != 4096 {
		t.Errorf("hvm: %+v", cfg)
	}
	h := cfg.HVM
	if h.Firmware != xl.SeaBIOS || h.Boot != "dc" || !h.ACPI || !h.APIC || !h.PAE || !h.Viridian || h.NestedHVM || !h.USBTablet {
		t.Errorf("hvm settings %+v", h)
	}
	dm := cfg.DeviceModel
	if !dm.Stubdomain || dm.StubdomainKernel != "/stub/vmlinuz" || dm.StubdomainMemoryMiB != 128 || dm.Override != in.StubdomDM {
		t.Errorf("device model %+v", dm)
	}
	want := "-qubes-net:client_ip=10.137.0.4,dns_0=10.139.1.1,dns_1=10.139.1.2,gw=10.137.255.254,netmask=255.255.255.255"
	if len(dm.Args) != 1 || dm.Args[0] != want {
		t.Errorf("dm args %q", dm.Args)
	}
	last := cfg.Disks[len(cfg.Disks)-1]
	if !last.CDROM || last.Target != "/iso/install.iso" || last.Vdev != CDROMVdev || len(cfg.Disks) != 4 {
		t.Errorf("disks %+v", cfg.Disks)
	}
	// Disconnected HVM: no NIC, no -qubes-net.
	if err := s.SetProp("my-new-vm", "netvm", "none"); err != nil {
		t.Fatal(err)
	}
	cfg = build(t, s, "my-new-vm", in)
	if len(cfg.NICs) != 0 || len(cfg.DeviceModel.Args) != 0 {
		t.Errorf("netvm none: nics %v args %v", cfg.NICs, cfg.DeviceModel.Args)
	}
	// dom0 QEMU on request, UEFI with the uefi feature.
	d, _ := s.Lookup("my-new-vm")
	d.Features = map[string]string{FeatureDom0QEMU: "1", "uefi": "1"}
	cfg = build(t, s, "my-new-vm", in)
	if cfg.DeviceModel.Stubdomain || cfg.DeviceModel.Override != "" || cfg.HVM.Firmware != xl.OVMF {
		t.Errorf("dom0 qemu/uefi: %+v %+v", cfg.DeviceModel, cfg.HVM)
	}
}

// TestCDROMServedByVM builds an HVM whose CD-ROM another VM serves: a
// qdisk disk in that VM (what libxl takes for an HVM's CD-ROM) on the
// loop device the VM made, and the disc for qvm-stubdom-dm among the
// stubdomain device model's arguments. A dry run (no loop device yet)
// shows the VM's path; a dom0 QEMU, or libxl's own device model for the
// stubdomain, is refused.
func TestCDROMServedByVM(t *testing.T) {
	s, in := setup(t)
	in.StubdomDM = "/usr/bin/qvm-stubdom-dm"
	in.CDROMServer, in.CDROMSource = "pvvm", "/home/user/installcd.iso"
	in.CDROMServed = &blkback.DriverDisc{Vdev: CDROMVdev, Backend: 5, Major: 7, Minor: 2, Dev: "/dev/loop2", Source: in.CDROMSource}
	cfg := build(t, s, "my-new-vm", in)
	last := cfg.Disks[len(cfg.Disks)-1]
	if want := (xl.Disk{Target: "/dev/loop2", Vdev: CDROMVdev, CDROM: true, Backend: xl.BackendQdisk, BackendDomain: "pvvm"}); last != want || len(cfg.Disks) != 4 {
		t.Errorf("disks %+v, want the last %+v", cfg.Disks, want)
	}
	if got := cfg.DeviceModel.StubdomainDMArgs; len(got) != 2 || got[0] != "-qvm-disc" || got[1] != "xvdd:5:7:2:/dev/loop2:/home/user/installcd.iso" {
		t.Errorf("stubdomain device model args %q", got)
	}
	in.CDROMServed = nil
	cfg = build(t, s, "my-new-vm", in)
	if last := cfg.Disks[len(cfg.Disks)-1]; last.Target != in.CDROMSource || last.BackendDomain != "pvvm" || len(cfg.DeviceModel.StubdomainDMArgs) != 0 {
		t.Errorf("dry run: disk %+v, dm args %q", last, cfg.DeviceModel.StubdomainDMArgs)
	}
	for _, tc := range []struct {
		name string
		set  func()
	}{
		{"libxl's stubdomain device model", func() { in.StubdomDM = "" }},
		{"dom0 QEMU", func() {
			d, _ := s.Lookup("my-new-vm")
			d.Features = map[string]string{FeatureDom0QEMU: "1"}
		}},
	} {
		tc.set()
		v, _ := s.View("my-new-vm")
		if _, err := Build(v, in); !errors.Is(err, ErrServedDisc) {
			t.Errorf("%s: %v, want ErrServedDisc", tc.name, err)
		}
	}
	in.CDROMServed = &blkback.DriverDisc{Vdev: CDROMVdev, Backend: 5, Dev: "/dev/loop2"}
	v, _ := s.View("pvvm")
	if _, err := Build(v, in); err == nil || !strings.Contains(err.Error(), "a CD-ROM needs virt_mode hvm") {
		t.Errorf("a PV VM with a served CD-ROM: %v", err)
	}
}

func TestTemplateHVMAndAppVMOnIt(t *testing.T) {
	s, in := setup(t)
	for _, name := range []string{"win-tpl", "win-app"} {
		cfg := build(t, s, name, in)
		if cfg.Type != xl.HVM || !cfg.DeviceModel.Stubdomain || cfg.Kernel != "" {
			t.Errorf("%s: %+v", name, cfg)
		}
		// stubdom_mem unset: qvm's default, not libxl's (128 MiB plus
		// the video RAM).
		if got := cfg.DeviceModel.StubdomainMemoryMiB; got != StubdomMemoryMiB {
			t.Errorf("%s: stubdomain memory %d MiB, want %d", name, got, StubdomMemoryMiB)
		}
	}
}

func TestPVAndPCI(t *testing.T) {
	s, in := setup(t)
	cfg := build(t, s, "pvvm", in)
	if cfg.Type != xl.PV || !strings.HasSuffix(cfg.Cmdline, " quiet") {
		t.Errorf("pv: %+v", cfg)
	}
	cfg = build(t, s, "usb", in)
	if cfg.Type != xl.HVM || len(cfg.PCIDevices) != 1 || !cfg.PCIDevices[0].Permissive || !cfg.PCIDevices[0].NoStrictReset || cfg.MaxMemoryMiB != 0 {
		t.Errorf("pci vm: %+v", cfg)
	}
	if err := s.SetProp("usb", "virt_mode", "pv"); err != nil {
		t.Fatal(err)
	}
	if err := s.SetProp("usb", "kernel", "6.1.0"); err != nil {
		t.Fatal(err)
	}
	if cfg = build(t, s, "usb", in); !cfg.E820Host {
		t.Errorf("pv with PCI without e820_host")
	}
}

func TestRefusals(t *testing.T) {
	s, in := setup(t)
	if err := s.SetProp("pvvm", "kernel", ""); err != nil {
		t.Fatal(err)
	}
	v, _ := s.View("pvvm")
	if _, err := Build(v, in); !errors.Is(err, ErrNoKernel) {
		t.Errorf("pv without kernel: %v", err)
	}
	if err := s.SetProp("my-new-vm", "kernel", "6.1.0"); err != nil {
		t.Fatal(err)
	}
	v, _ = s.View("my-new-vm")
	if _, err := Build(v, in); !errors.Is(err, ErrStubdomKernel) || !strings.Contains(err.Error(), "qvm-prefs my-new-vm kernel ''") {
		t.Errorf("hvm with a dom0 kernel and a stubdomain: %v", err)
	}
	// With qvm's device model and the disc copies, it boots: the
	// stubdomain gets the kernel and initramfs as read-only disks.
	qin := in
	qin.StubdomDM, qin.BootKernel, qin.BootInitramfs = "/usr/lib/qvm/qvm-stubdom-dm", "/k/disc-vmlinuz", "/k/disc-initramfs"
	if cfg, err := Build(v, qin); err != nil {
		t.Errorf("hvm with a dom0 kernel in qvm's stubdomain: %v", err)
	} else {
		var got []string
		for _, d := range cfg.Disks {
			if d.Vdev == BootKernelVdev || d.Vdev == BootInitramfsVdev {
				got = append(got, fmt.Sprintf("%s=%s rw=%v", d.Vdev, d.Target, d.ReadWrite))
			}
		}
		if want := "xvde=/k/disc-vmlinuz rw=false xvdf=/k/disc-initramfs rw=false"; strings.Join(got, " ") != want || !strings.HasSuffix(cfg.Kernel, "/vmlinuz") || cfg.Cmdline == "" {
			t.Errorf("boot discs %q (want %q), kernel %q, cmdline %q", got, want, cfg.Kernel, cfg.Cmdline)
		}
	}
	d, _ := s.Lookup("my-new-vm")
	d.Features = map[string]string{FeatureDom0QEMU: "1"}
	v, _ = s.View("my-new-vm")
	if cfg, err := Build(v, in); err != nil || cfg.Kernel == "" || cfg.DeviceModel.Stubdomain {
		t.Errorf("hvm with a dom0 kernel and QEMU in dom0: %v %+v", err, cfg)
	}
	in.CDROM = "/x.iso"
	v, _ = s.View("work")
	if _, err := Build(v, in); err == nil || !strings.Contains(err.Error(), "CD-ROM needs virt_mode hvm") {
		t.Errorf("cdrom on pvh: %v", err)
	}
	in.CDROM = ""
	os.Remove(filepath.Join(in.KernelsDir, "6.1.0", KernelFile))
	if _, err := Build(v, in); err == nil || !strings.Contains(err.Error(), "kernel 6.1.0") {
		t.Errorf("missing kernel file: %v", err)
	}
}

// TestLibxlAcceptsEveryConfig has libxl's own JSON generator take each
// seed VM's config.
func TestLibxlAcceptsEveryConfig(t *testing.T) {
	s, in := setup(t)
	for _, name := range []string{"work", "pvvm", "my-new-vm", "win-tpl", "win-app", "usb"} {
		cfg := build(t, s, name, in)
		js, err := xl.JSON(cfg)
		if errors.Is(err, xl.ErrNoLibxl) {
			t.Skip("built without cgo")
		}
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if !strings.Contains(js, `"name": "`+name+`"`) {
			t.Errorf("%s json lacks its name:\n%s", name, js)
		}
		if !strings.Contains(xl.XLConfig(cfg), `name = "`+name+`"`) {
			t.Errorf("%s xl.cfg:\n%s", name, xl.XLConfig(cfg))
		}
	}
}

// props makes property assignments from name, value pairs.
func props(kv ...string) []vm.Prop {
	var out []vm.Prop
	for i := 0; i+1 < len(kv); i += 2 {
		out = append(out, vm.Prop{Name: kv[i], Value: kv[i+1]})
	}
	return out
}

// TestUnpackedKernel: a PV or PVH guest boots the kernel's unpacked image
// when one matches the kernel (package vmkernel), an HVM keeps the bzImage
// QEMU wants, and a stale image is not used.
func TestUnpackedKernel(t *testing.T) {
	s, in := setup(t)
	kernel := filepath.Join(in.KernelsDir, "6.1.0", KernelFile)
	if err := os.WriteFile(kernel, vmkerneltest.BzImage(vmkerneltest.Gzip(vmkerneltest.ELF("kernel ", 100))), 0o644); err != nil {
		t.Fatal(err)
	}
	unpacked, err := vmkernel.Ensure(context.Background(), kernel)
	if err != nil {
		t.Fatal(err)
	}
	if cfg := build(t, s, "work", in); cfg.Kernel != unpacked {
		t.Errorf("pvh boots %s, want %s", cfg.Kernel, unpacked)
	}
	d, _ := s.Lookup("my-new-vm")
	d.Features = map[string]string{FeatureDom0QEMU: "1"}
	if err := s.SetProp("my-new-vm", "kernel", "6.1.0"); err != nil {
		t.Fatal(err)
	}
	if cfg := build(t, s, "my-new-vm", in); cfg.Kernel != kernel {
		t.Errorf("hvm boots %s, want the bzImage %s", cfg.Kernel, kernel)
	}
	// Another kernel in its place, with the same modification time.
	fi, _ := os.Stat(kernel)
	if err := os.WriteFile(kernel, vmkerneltest.BzImage(vmkerneltest.Gzip(vmkerneltest.ELF("newer kernel ", 100))), 0o644); err != nil {
		t.Fatal(err)
	}
	os.Chtimes(kernel, fi.ModTime(), fi.ModTime())
	if cfg := build(t, s, "work", in); cfg.Kernel != kernel {
		t.Errorf("pvh boots the stale %s", cfg.Kernel)
	}
}
