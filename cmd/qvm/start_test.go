package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/qvm-project/qvm/internal/testenv"
	"github.com/qvm-project/qvm/pcihost"
)

// installKernel puts a VM kernel into the store's kernels directory.
func (e *env) installKernel(name string) {
	dir := filepath.Join(e.dir, "vm-kernels", name)
	os.MkdirAll(dir, 0o755)
	for _, f := range []string{"vmlinuz", "initramfs", "modules.img"} {
		os.WriteFile(filepath.Join(dir, f), []byte("x"), 0o644)
	}
}

// pciDevice is a PCI device this host has, as dom0:BB_DD.F: a host
// bridge if bridge, else any other device.
func pciDevice(t *testing.T, bridge bool) string {
	entries, _ := os.ReadDir(pcihost.SysfsDevices)
	for _, e := range entries {
		n := e.Name()
		if !strings.HasPrefix(n, "0000:") {
			continue
		}
		d, err := pcihost.Lookup(n[5:])
		if err != nil {
			t.Fatal(err)
		}
		if (d.Class>>8 == 0x0600) == bridge {
			return "dom0:" + strings.Replace(n[5:], ":", "_", 1)
		}
	}
	testenv.Missing(t, "this host has no PCI device of the kind the test needs (host bridge: %v)", bridge)
	return ""
}

// TestStartDryRunForSeedVMs prints the libxl configuration of each kind of
// VM the seeds create, checked through libxl's own JSON.
func TestStartDryRunForSeedVMs(t *testing.T) {
	e := newEnv(t)
	e.installKernel("6.1.0-28-amd64")
	e.ok("qvm-create", "--class", "TemplateVM", "debian-12", "-l", "black")
	e.ok("qvm-create", "--class", "StandaloneVM", "--label", "green", "--property", "virt_mode=hvm", "--property", "kernel=", "my-new-vm")
	e.ok("qvm-create", "--class", "TemplateVM", "win-tpl", "--property", "virt_mode=HVM", "--property", "kernel=", "-l", "green")
	e.ok("qvm-create", "--template", "win-tpl", "-l", "green", "win-app")
	e.ok("qvm-create", "--template", "debian-12", "-l", "blue", "work")
	e.ok("qvm-create", "--standalone", "--property", "virt_mode=pv", "-l", "red", "pvvm")
	e.ok("qvm-create", "--standalone", "-l", "red", "--property", "kernel=", "sys-usb")
	// The host's devices are all in use by dom0 (or bridges): --force.
	e.ok("qvm-pci", "attach", "--persistent", "--force", "sys-usb", pciDevice(t, false), "-o", "permissive=True", "-o", "no-strict-reset=True")

	type jsonCfg struct {
		CInfo struct {
			Type string `json:"type"`
			Name string `json:"name"`
		} `json:"c_info"`
		BInfo struct {
			Kernel string `json:"kernel"`
			Type   struct {
				Hvm *struct {
					Boot string `json:"boot"`
				} `json:"hvm"`
			} `json:"type.hvm"`
			DeviceModelStubdomain string `json:"device_model_stubdomain"`
		} `json:"b_info"`
		Disks []struct {
			Vdev    string `json:"vdev"`
			IsCdrom string `json:"is_cdrom"`
		} `json:"disks"`
		Nics []struct {
			Mac string `json:"mac"`
			IP  string `json:"ip"`
		} `json:"nics"`
		Pcidevs []map[string]any `json:"pcidevs"`
	}
	for name, want := range map[string]struct {
		typ, stub string
		pci       int
	}{
		"my-new-vm": {"hvm", "True", 0},
		"win-tpl":   {"hvm", "True", 0},
		"win-app":   {"hvm", "True", 0},
		"work":      {"pvh", "", 0},
		"pvvm":      {"pv", "", 0},
		"sys-usb":   {"hvm", "True", 1},
	} {
		out := e.ok("qvm-start", "--dry-run", name)
		if !strings.Contains(out, `name = "`+name+`"`) || !strings.Contains(out, "# "+name+": libxl domain config (JSON)") {
			t.Errorf("%s dry run:\n%s", name, out)
			continue
		}
		js := out[strings.Index(out, "(JSON)\n")+len("(JSON)\n"):]
		var cfg jsonCfg
		if err := json.Unmarshal([]byte(js), &cfg); err != nil {
			t.Errorf("%s: libxl JSON: %v\n%s", name, err, js)
			continue
		}
		if cfg.CInfo.Name != name || cfg.CInfo.Type != want.typ || cfg.BInfo.DeviceModelStubdomain != want.stub || len(cfg.Pcidevs) != want.pci {
			t.Errorf("%s: %+v", name, cfg)
		}
		if name == "win-tpl" {
			// Templates are offline by default.
			if len(cfg.Nics) != 0 {
				t.Errorf("%s: nics %+v", name, cfg.Nics)
			}
		} else if len(cfg.Nics) != 1 || cfg.Nics[0].IP == "" {
			t.Errorf("%s: nics %+v", name, cfg.Nics)
		}
		if want.typ != "hvm" && !strings.HasSuffix(cfg.BInfo.Kernel, "6.1.0-28-amd64/vmlinuz") {
			t.Errorf("%s: kernel %q", name, cfg.BInfo.Kernel)
		}
	}
	// With --cdrom the HVM gets the image as a CD-ROM.
	iso := filepath.Join(t.TempDir(), "installer.iso")
	f, _ := os.Create(iso)
	f.WriteAt([]byte("\x01CD001\x01"), 16*2048)
	f.Truncate(1 << 20)
	f.Close()
	out := e.ok("qvm-start", "--dry-run", "--cdrom=dom0:"+iso, "my-new-vm")
	if !strings.Contains(out, iso) || !strings.Contains(out, "cdrom") {
		t.Errorf("--cdrom dry run:\n%s", out)
	}
	// A disc in a VM: the dry run shows the VM and the path in it.
	out = e.ok("qvm-start", "--dry-run", "--cdrom=sys-usb:/home/user/installcd.iso", "my-new-vm")
	if !strings.Contains(out, "/home/user/installcd.iso") || !strings.Contains(out, "backend=sys-usb") {
		t.Errorf("--cdrom=VM:PATH dry run:\n%s", out)
	}
	for _, c := range []struct {
		argv []string
		want string
	}{
		{[]string{"qvm-start", "--dry-run", "--cdrom=dom0:/nonexistent.iso", "my-new-vm"}, "no such file"},
		{[]string{"qvm-start", "--dry-run", "--cdrom=nosuchvm:/home/user/x.iso", "my-new-vm"}, "nosuchvm"},
		{[]string{"qvm-start", "--dry-run", "--cdrom=my-new-vm:/home/user/x.iso", "my-new-vm"}, "a disc of its own"},
		{[]string{"qvm-start", "--dry-run", "--cdrom=sys-usb:x.iso", "my-new-vm"}, "absolute path in sys-usb"},
		{[]string{"qvm-block", "attach", "--devtype=cdrom", "my-new-vm", "sys-usb:/home/user/x.iso"}, "served only for a start"},
		{[]string{"qvm-start", "--dry-run", "--cdrom=dom0:" + e.dir + "/qvm.json", "my-new-vm"}, "not an ISO 9660"},
		{[]string{"qvm-start", "--dry-run", "--cdrom=dom0:" + iso, "work"}, "CD-ROM needs virt_mode hvm"},
		{[]string{"qvm-pci", "attach", "--persistent", "work", "dom0:ff_1f.7"}, "no such PCI device"},
		{[]string{"qvm-pci", "attach", "work", pciDevice(t, false)}, "--persistent"},
		{[]string{"qvm-pci", "attach", "--persistent", "--force", "work", pciDevice(t, true)}, "host bridge"},
		{[]string{"qvm-prefs", "sys-usb", "virt_mode", "pvh"}, "not possible with PCI devices"},
	} {
		before := e.snapshot()
		r := e.run(c.argv...)
		if r.code == 0 || !strings.Contains(r.stderr, c.want) {
			t.Errorf("%v: exit %d stderr %q, want %q", c.argv, r.code, r.stderr, c.want)
		}
		if e.snapshot() != before {
			t.Errorf("%v changed the state", c.argv)
		}
	}
	// A device a dom0 driver uses needs --force.
	dev := pciDevice(t, false)
	if d, err := pcihost.Lookup(strings.Replace(strings.TrimPrefix(dev, "dom0:"), "_", ":", 1)); err == nil && d.Driver != "" {
		if r := e.run("qvm-pci", "attach", "--persistent", "work", dev); r.code == 0 || !strings.Contains(r.stderr, "in use by dom0 (driver "+d.Driver+")") {
			t.Errorf("attach of a device dom0 uses, without --force: %+v", r)
		}
	}
	if out := e.ok("qvm-pci", "ls", "-s"); !strings.Contains(out, "*sys-usb (required: permissive=True, no-strict-reset=True)\n") {
		t.Errorf("qvm-pci ls:\n%s", out)
	}
}
