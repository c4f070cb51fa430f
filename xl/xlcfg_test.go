//go:build cgo

package xl

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/qvm-project/qvm/internal/testenv"
)

// xlKeys is what xl must read for each scalar key of cfg's xl.cfg text:
// a string for string values, an int64 for numbers; nil for keys that
// must be absent.
func xlKeys(c *DomainConfig) map[string]any {
	opt := func(s string) any {
		if s == "" {
			return nil
		}
		return s
	}
	b01 := func(b bool) any {
		if b {
			return int64(1)
		}
		return int64(0)
	}
	act := func(a Action) any {
		if a == "" {
			return "destroy"
		}
		return string(a)
	}
	maxMem := c.MaxMemoryMiB
	if maxMem == 0 {
		maxMem = c.MemoryMiB
	}
	k := map[string]any{
		"name": c.Name, "uuid": c.UUID.String(), "type": string(c.Type),
		"vcpus": int64(c.VCPUs), "memory": int64(c.MemoryMiB), "maxmem": int64(maxMem),
		"kernel": opt(c.Kernel), "ramdisk": opt(c.Ramdisk), "cmdline": opt(c.Cmdline),
		"on_poweroff": act(c.OnPoweroff), "on_reboot": act(c.OnReboot), "on_crash": act(c.OnCrash),
		"e820_host": nil,
	}
	if c.E820Host {
		k["e820_host"] = int64(1)
	}
	if c.Type != HVM {
		for _, key := range []string{"bios", "boot", "acpi", "apic", "pae", "viridian", "nestedhvm", "serial", "vga", "videoram", "usb", "keymap", "vnc", "sdl", "device_model_version", "device_model_stubdomain_override", "stubdomain_kernel", "stubdomain_memory"} {
			k[key] = nil
		}
		return k
	}
	h, dm := c.HVM, c.DeviceModel
	fw := "seabios"
	if h.Firmware == OVMF {
		fw = "ovmf"
	}
	vga := opt(string(h.VGA))
	if h.VGA == VGAStd {
		vga = "stdvga"
	}
	var videoram, stubMem any
	if h.VideoMemMiB != 0 {
		videoram = int64(h.VideoMemMiB)
	}
	if dm.StubdomainMemoryMiB != 0 {
		stubMem = int64(dm.StubdomainMemoryMiB)
	}
	for key, v := range map[string]any{
		"bios": fw, "boot": opt(h.Boot), "acpi": b01(h.ACPI), "apic": b01(h.APIC), "pae": b01(h.PAE),
		"viridian": b01(h.Viridian), "nestedhvm": b01(h.NestedHVM), "serial": opt(h.Serial), "vga": vga,
		"videoram": videoram, "usb": b01(h.USBTablet), "keymap": opt(h.Keymap), "vnc": int64(0), "sdl": int64(0),
		"device_model_version": "qemu-xen", "device_model_override": opt(dm.Override),
		"device_model_stubdomain_override": b01(dm.Stubdomain), "stubdomain_kernel": opt(dm.StubdomainKernel),
		"stubdomain_ramdisk": opt(dm.StubdomainRamdisk), "stubdomain_cmdline": opt(dm.StubdomainCmdline),
		"stubdomain_memory": stubMem,
	} {
		k[key] = v
	}
	return k
}

// vifTokens splits a vif spec the way xl does (strtok on ',', leading
// spaces dropped) into key=value pairs.
func vifTokens(spec string) map[string]string {
	out := map[string]string{}
	for _, tok := range strings.Split(spec, ",") {
		tok = strings.TrimLeft(tok, " ")
		if tok == "" {
			continue
		}
		k, v, _ := strings.Cut(tok, "=")
		out[k] = v
	}
	return out
}

func expectedVif(n NIC) map[string]string {
	out := map[string]string{}
	if n.MAC != nil {
		out["mac"] = n.MAC.String()
	}
	if len(n.IPs) > 0 {
		out["ip"] = ipList(n.IPs)
	}
	for k, v := range map[string]string{"backend": n.BackendDomain, "script": n.Script, "bridge": n.Bridge, "vifname": n.Name, "type": string(n.Type), "model": n.Model} {
		if v != "" {
			out[k] = v
		}
	}
	return out
}

// TestXLConfigLibxlutil parses each matrix case's xl.cfg text with
// libxlutil (xl's own parser library) and checks that it says what the Go
// config says: every scalar key, every disk (through xlu_disk_parse, whose
// libxl_device_disk must equal ours), every PCI device (through
// xlu_pci_parse_spec_string) and every vif.
func TestXLConfigLibxlutil(t *testing.T) {
	for _, tc := range testMatrix() {
		t.Run(tc.name, func(t *testing.T) {
			c := tc.cfg
			text := XLConfig(c)
			x, err := parseXLConfig(text)
			if err != nil {
				t.Fatalf("%v\n%s", err, text)
			}
			defer x.Close()

			for key, want := range xlKeys(c) {
				switch w := want.(type) {
				case nil:
					if s, ok := x.str(key); ok {
						t.Errorf("%s = %q, want it absent", key, s)
					}
				case string:
					if got, ok := x.str(key); !ok || got != w {
						t.Errorf("%s = %q (present %v), want %q", key, got, ok, w)
					}
				case int64:
					if got, ok := x.long(key); !ok || got != w {
						t.Errorf("%s = %d (present %v), want %d", key, got, ok, w)
					}
				}
			}
			wantList := func(key string, want []string) {
				got, ok := x.list(key)
				if len(want) == 0 {
					if ok {
						t.Errorf("%s = %q, want it absent", key, got)
					}
					return
				}
				if !ok || strings.Join(got, "\x00") != strings.Join(want, "\x00") {
					t.Errorf("%s = %q, want %q", key, got, want)
				}
			}
			if c.Type == HVM {
				wantList("device_model_args_hvm", c.DeviceModel.Args)
				wantList("device_model_args_pv", c.DeviceModel.StubdomainDMArgs)
				var usb []string
				if c.HVM.USBTablet {
					usb = []string{"tablet"}
				}
				wantList("usbdevice", usb)
			}

			ours := decode(t, mustJSON(t, c))
			disks, _ := x.list("disk")
			if len(disks) != len(c.Disks) {
				t.Fatalf("disk = %q, want %d entries", disks, len(c.Disks))
			}
			for i, spec := range disks {
				js, err := x.diskJSON(spec)
				if err != nil {
					t.Fatal(err)
				}
				if d := diff("disk"+strconv.Itoa(i), decode(t, js), ours["disks"].([]any)[i]); len(d) > 0 {
					t.Errorf("xl reads disk spec %q as a different disk:\n  %s", spec, strings.Join(d, "\n  "))
				}
			}
			pcis, _ := x.list("pci")
			if len(pcis) != len(c.PCIDevices) {
				t.Fatalf("pci = %q, want %d entries", pcis, len(c.PCIDevices))
			}
			for i, spec := range pcis {
				js, err := x.pciJSON(spec)
				if err != nil {
					t.Fatal(err)
				}
				if d := diff("pci"+strconv.Itoa(i), decode(t, js), ours["pcidevs"].([]any)[i]); len(d) > 0 {
					t.Errorf("xl reads pci spec %q as a different device:\n  %s", spec, strings.Join(d, "\n  "))
				}
			}
			vifs, _ := x.list("vif")
			if len(vifs) != len(c.NICs) {
				t.Fatalf("vif = %q, want %d entries", vifs, len(c.NICs))
			}
			for i, spec := range vifs {
				got, want := vifTokens(spec), expectedVif(c.NICs[i])
				if !equalMaps(got, want) {
					t.Errorf("vif %d = %q: reads as %v, want %v", i, spec, got, want)
				}
			}
			for _, p := range c.PCIDevices {
				if p.NoStrictReset && !strings.Contains(text, "# "+p.Addr.String()+": no-strict-reset") {
					t.Errorf("no note of no-strict-reset for %s in\n%s", p.Addr, text)
				}
			}
		})
	}
}

func equalMaps(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

func mustJSON(t *testing.T, c *DomainConfig) string {
	t.Helper()
	s, err := JSON(c)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// The real `xl` binary (package xen-utils-4.17).
const xlBinary = "/usr/lib/xen-4.17/bin/xl"

var (
	fakeXCOnce sync.Once
	fakeXCPath string
	fakeXCErr  error
)

// fakeXC builds testdata/fakexc.c, which stands in for the hypervisor in
// `xl -N create` (see the file).
func fakeXC(t *testing.T) string {
	t.Helper()
	cc := testenv.LookPath(t, "gcc")
	fakeXCOnce.Do(func() {
		dir, err := os.MkdirTemp("", "qvm-xl-fakexc-")
		if err != nil {
			fakeXCErr = err
			return
		}
		fakeXCPath = filepath.Join(dir, "fakexc.so")
		out, err := exec.Command(cc, "-shared", "-fPIC", "-Wall", "-o", fakeXCPath, "testdata/fakexc.c").CombinedOutput()
		if err != nil {
			fakeXCErr = err
			fakeXCPath = string(out)
		}
	})
	if fakeXCErr != nil {
		t.Fatalf("build testdata/fakexc.c: %v\n%s", fakeXCErr, fakeXCPath)
	}
	return fakeXCPath
}

// TestXLCreateDryRun hands each matrix case's xl.cfg text to the real
// `xl -N create` (dry run: parse the config, print the libxl config as
// JSON, create nothing) and checks that xl builds exactly the
// libxl_domain_config we build: the same JSON, apart from the two
// settings xl adds from its own xl.conf (run_hotplug_scripts, claim_mode).
// Only the hypervisor is faked (testdata/fakexc.c).
func TestXLCreateDryRun(t *testing.T) {
	testenv.RequireFile(t, xlBinary)
	fake := fakeXC(t)
	dir := t.TempDir()
	for _, tc := range testMatrix() {
		t.Run(tc.name, func(t *testing.T) {
			c := tc.cfg
			path := filepath.Join(dir, c.Name+".cfg")
			if err := os.WriteFile(path, []byte(XLConfig(c)), 0o644); err != nil {
				t.Fatal(err)
			}
			cmd := exec.Command(xlBinary, "-N", "create", path)
			cmd.Env = append(os.Environ(), "LD_PRELOAD="+fake)
			var stdout, stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			if err := cmd.Run(); err != nil {
				t.Fatalf("xl -N create: %v\n%s\n%s", err, stderr.String(), XLConfig(c))
			}
			var xlDoc obj
			if err := json.Unmarshal(stdout.Bytes(), &xlDoc); err != nil {
				t.Fatalf("xl printed no JSON: %v\n%s\n%s", err, stdout.String(), stderr.String())
			}
			xlDoc = prune(xlDoc).(obj)
			delete(xlDoc["c_info"].(obj), "run_hotplug_scripts")
			delete(xlDoc["b_info"].(obj), "claim_mode")
			ours := decode(t, mustJSON(t, c))
			// For a PV domain xl copies each PCI device's rdm_policy from
			// the HVM part of the build info union, which reads as
			// "strict"; libxl turns an unset policy into "strict" itself
			// (libxl__device_pci_setdefault), so both mean the same.
			defaultRDMPolicy(xlDoc)
			defaultRDMPolicy(ours)
			if d := diff("", xlDoc, ours); len(d) > 0 {
				t.Errorf("xl builds a different domain from our xl.cfg than we do (got = xl, want = ours):\n  %s\n%s", strings.Join(d, "\n  "), XLConfig(c))
			}
			if strings.Contains(stderr.String(), "WARNING") {
				t.Errorf("xl warns about our xl.cfg:\n%s", stderr.String())
			}
		})
	}
}

// defaultRDMPolicy fills in libxl's default rdm_policy ("strict") for PCI
// devices that have none.
func defaultRDMPolicy(doc obj) {
	devs, _ := doc["pcidevs"].([]any)
	for _, d := range devs {
		if m := d.(obj); m["rdm_policy"] == nil {
			m["rdm_policy"] = "strict"
		}
	}
}

// FuzzXLQuote checks that any string without control characters (other
// than the lettered escapes) survives xl.cfg quoting through libxlutil.
func FuzzXLQuote(f *testing.F) {
	for _, s := range []string{"", "plain", `a "quoted" \ value`, "tab\there", "new\nline", "'single'", "\xff\xfe utf8 é", trickyCmdline} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		for i := 0; i < len(s); i++ {
			if c := s[i]; (c < 0x20 && !strings.ContainsRune("\a\b\f\n\r\t\v", rune(c))) || c == 0x7f {
				return // not representable in xl.cfg; Validate refuses these
			}
		}
		text := "v = " + xlQuote(s) + "\nl = " + xlList([]string{s, "x"}) + "\n"
		x, err := parseXLConfig(text)
		if err != nil {
			t.Fatalf("%q: %v\n%s", s, err, text)
		}
		defer x.Close()
		if got, ok := x.str("v"); !ok || got != s {
			t.Fatalf("string %q came back as %q", s, got)
		}
		if got, ok := x.list("l"); !ok || len(got) != 2 || got[0] != s {
			t.Fatalf("list item %q came back as %q", s, got)
		}
	})
}
