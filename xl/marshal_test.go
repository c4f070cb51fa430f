//go:build cgo

package xl

import (
	"encoding/json"
	"fmt"
	"reflect"
	"sort"
	"strings"
	"testing"
)

// These tests build the C libxl_domain_config from Go and have libxl's own
// JSON generator print it (no hypervisor needed), then check it field by
// field against what the Go config says. libxl leaves fields that hold
// their default value out of its JSON; the expected documents below do
// the same.

type obj = map[string]any

func tf(b bool) string {
	if b {
		return "True"
	}
	return "False"
}

// libxlAction is libxl's JSON spelling of an action.
func libxlAction(a Action) string {
	return strings.ReplaceAll(map[Action]string{
		ActionRestart: "restart", ActionRenameRestart: "restart_rename", ActionPreserve: "preserve",
		ActionCoredumpDestroy: "coredump_destroy", ActionCoredumpRestart: "coredump_restart", ActionSoftReset: "soft_reset",
	}[a], "-", "_")
}

// expectedDisk is the libxl JSON of a disk (as xl's disk parser builds it).
func expectedDisk(d Disk) obj {
	o := obj{"vdev": d.Vdev, "pdev_path": d.Target}
	switch {
	case d.CDROM && d.Target == "":
		o["format"] = "empty"
	case d.Format == FormatQCOW2:
		o["format"] = "qcow2"
	default:
		o["format"] = "raw"
	}
	if d.Backend != "" {
		o["backend"] = string(d.Backend)
	}
	if d.BackendDomain != "" {
		o["backend_domname"] = d.BackendDomain
	}
	if d.Script != "" {
		o["script"] = d.Script
	}
	if d.ReadWrite {
		o["readwrite"] = 1.0
	}
	if d.CDROM {
		o["is_cdrom"] = 1.0
		o["removable"] = 1.0
	}
	return o
}

func expectedNIC(n NIC, devid int) obj {
	o := obj{"devid": float64(devid)}
	if n.MAC != nil {
		o["mac"] = n.MAC.String()
	}
	if len(n.IPs) > 0 {
		var ips []string
		for _, ip := range n.IPs {
			ips = append(ips, ip.String())
		}
		o["ip"] = strings.Join(ips, " ")
	}
	for k, v := range map[string]string{"backend_domname": n.BackendDomain, "script": n.Script, "bridge": n.Bridge, "ifname": n.Name, "model": n.Model} {
		if v != "" {
			o[k] = v
		}
	}
	switch n.Type {
	case NICVif:
		o["nictype"] = "vif"
	case NICIoemu:
		o["nictype"] = "vif_ioemu"
	}
	return o
}

func expectedPCI(p PCIDevice) obj {
	o := obj{"vfunc_mask": 1.0}
	for k, v := range map[string]float64{"domain": float64(p.Addr.Domain), "bus": float64(p.Addr.Bus), "dev": float64(p.Addr.Device), "func": float64(p.Addr.Function)} {
		if v != 0 {
			o[k] = v
		}
	}
	for k, v := range map[string]bool{"permissive": p.Permissive, "power_mgmt": p.PowerMgmt, "seize": p.Seize} {
		if v {
			o[k] = true
		}
	}
	return o
}

// expectedJSON is the libxl JSON document cfg must produce.
func expectedJSON(c *DomainConfig) obj {
	avail := []any{}
	for i := 0; i < c.VCPUs; i++ {
		avail = append(avail, float64(i))
	}
	maxMem := c.MaxMemoryMiB
	if maxMem == 0 {
		maxMem = c.MemoryMiB
	}
	b := obj{
		"max_vcpus":    float64(c.VCPUs),
		"avail_vcpus":  avail,
		"target_memkb": float64(c.MemoryMiB * 1024),
		"max_memkb":    float64(maxMem * 1024),
	}
	for k, v := range map[string]string{"kernel": c.Kernel, "ramdisk": c.Ramdisk, "cmdline": c.Cmdline} {
		if v != "" {
			b[k] = v
		}
	}
	switch c.Type {
	case PV:
		if c.E820Host {
			b["type.pv"] = obj{"e820_host": "True"}
		}
	case HVM:
		h, dm := c.HVM, c.DeviceModel
		b["device_model_version"] = "qemu_xen"
		b["device_model_stubdomain"] = tf(dm.Stubdomain)
		b["acpi"] = tf(h.ACPI)
		b["apic"] = tf(h.APIC)
		b["nested_hvm"] = tf(h.NestedHVM)
		if h.VideoMemMiB != 0 {
			b["video_memkb"] = float64(h.VideoMemMiB * 1024)
		}
		for k, v := range map[string]string{"stubdomain_kernel": dm.StubdomainKernel, "stubdomain_ramdisk": dm.StubdomainRamdisk, "stubdomain_cmdline": dm.StubdomainCmdline, "device_model": dm.Override} {
			if v != "" {
				b[k] = v
			}
		}
		if dm.StubdomainMemoryMiB != 0 {
			b["stubdomain_memkb"] = float64(dm.StubdomainMemoryMiB * 1024)
		}
		if len(dm.Args) > 0 {
			var args []any
			for _, a := range dm.Args {
				args = append(args, a)
			}
			b["extra_hvm"] = args
		}
		if len(dm.StubdomainDMArgs) > 0 {
			var args []any
			for _, a := range dm.StubdomainDMArgs {
				args = append(args, a)
			}
			b["extra_pv"] = args
		}
		fw := "seabios"
		if h.Firmware == OVMF {
			fw = "ovmf"
		}
		u := obj{
			"bios":     fw,
			"pae":      tf(h.PAE),
			"viridian": tf(h.Viridian),
			"usb":      tf(h.USBTablet),
			"vnc":      obj{"enable": "False"},
			"sdl":      obj{"enable": "False"},
		}
		if h.VGA != "" {
			u["vga"] = obj{"kind": string(h.VGA)}
		}
		if h.USBTablet {
			u["usbdevice_list"] = []any{"tablet"}
		}
		for k, v := range map[string]string{"boot": h.Boot, "serial": h.Serial, "keymap": h.Keymap} {
			if v != "" {
				u[k] = v
			}
		}
		b["type.hvm"] = u
	}
	doc := obj{
		"c_info":        obj{"type": string(c.Type), "name": c.Name, "uuid": c.UUID.String()},
		"b_info":        b,
		"on_soft_reset": "soft_reset",
	}
	for k, a := range map[string]Action{"on_poweroff": c.OnPoweroff, "on_reboot": c.OnReboot, "on_crash": c.OnCrash} {
		if a != "" && a != ActionDestroy {
			doc[k] = libxlAction(a)
		}
	}
	if len(c.Disks) > 0 {
		var l []any
		for _, d := range c.Disks {
			l = append(l, expectedDisk(d))
		}
		doc["disks"] = l
	}
	if len(c.NICs) > 0 {
		var l []any
		for i, n := range c.NICs {
			l = append(l, expectedNIC(n, i))
		}
		doc["nics"] = l
	}
	if len(c.PCIDevices) > 0 {
		var l []any
		for _, p := range c.PCIDevices {
			l = append(l, expectedPCI(p))
		}
		doc["pcidevs"] = l
	}
	return doc
}

// prune drops empty objects, which libxl prints for sub-structs left at
// their defaults.
func prune(v any) any {
	switch x := v.(type) {
	case map[string]any:
		out := map[string]any{}
		for k, e := range x {
			p := prune(e)
			if m, ok := p.(map[string]any); ok && len(m) == 0 {
				continue
			}
			out[k] = p
		}
		return out
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = prune(e)
		}
		return out
	}
	return v
}

func decode(t *testing.T, s string) obj {
	t.Helper()
	var o obj
	if err := json.Unmarshal([]byte(s), &o); err != nil {
		t.Fatalf("libxl JSON does not parse: %v\n%s", err, s)
	}
	return prune(o).(obj)
}

// diff lists the paths where got and want differ.
func diff(path string, got, want any) []string {
	gm, gok := got.(map[string]any)
	wm, wok := want.(map[string]any)
	if gok && wok {
		keys := map[string]bool{}
		for k := range gm {
			keys[k] = true
		}
		for k := range wm {
			keys[k] = true
		}
		var sorted []string
		for k := range keys {
			sorted = append(sorted, k)
		}
		sort.Strings(sorted)
		var out []string
		for _, k := range sorted {
			out = append(out, diff(path+"."+k, gm[k], wm[k])...)
		}
		return out
	}
	gl, glok := got.([]any)
	wl, wlok := want.([]any)
	if glok && wlok && len(gl) == len(wl) {
		var out []string
		for i := range gl {
			out = append(out, diff(fmt.Sprintf("%s[%d]", path, i), gl[i], wl[i])...)
		}
		return out
	}
	if !reflect.DeepEqual(got, want) {
		return []string{fmt.Sprintf("%s: got %v, want %v", path, jsonText(got), jsonText(want))}
	}
	return nil
}

func jsonText(v any) string {
	if v == nil {
		return "(absent)"
	}
	b, _ := json.Marshal(v)
	return string(b)
}

func TestJSONMatrix(t *testing.T) {
	cases := testMatrix()
	if len(cases) < 300 {
		t.Fatalf("matrix has only %d cases", len(cases))
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s, err := JSON(tc.cfg)
			if err != nil {
				t.Fatal(err)
			}
			if d := diff("", decode(t, s), expectedJSON(tc.cfg)); len(d) > 0 {
				t.Errorf("libxl JSON differs from the Go config:\n  %s\n%s", strings.Join(d, "\n  "), s)
			}
		})
	}
}

// TestJSONRejectsInvalid checks that JSON validates before touching C.
func TestJSONRejectsInvalid(t *testing.T) {
	cfg := validHVM()
	cfg.VCPUs = 0
	if _, err := JSON(cfg); err == nil || !strings.Contains(err.Error(), "vcpus") {
		t.Fatalf("JSON of a config without vcpus: err = %v, want a vcpus error", err)
	}
}
