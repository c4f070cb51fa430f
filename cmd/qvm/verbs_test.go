package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/qvm-project/qvm/pcihost"
)

// expect runs a command and checks its exit code and exact output.
func (e *env) expect(code int, stdout, stderr string, argv ...string) {
	e.t.Helper()
	r := e.run(argv...)
	if r.code != code || r.stdout != stdout || r.stderr != stderr {
		e.t.Errorf("%s:\n got: exit %d, stdout %q, stderr %q\nwant: exit %d, stdout %q, stderr %q",
			strings.Join(argv, " "), r.code, r.stdout, r.stderr, code, stdout, stderr)
	}
}

// TestDispVMFromOfflineTemplate: the case, through the commands:
// a disposable of an offline DispVM template is offline too, and has its
// template's features and tags.
func TestDispVMFromOfflineTemplate(t *testing.T) {
	e := paritySetup(t)
	e.ok("qvm-tags", "dvm", "add", "offline")
	e.ok("qvm-features", "dvm", "service.cups", "1")
	e.ok("qvm-create", "--class", "DispVM", "--template", "dvm", "--label", "orange", "disp2")
	e.expect(0, "", "", "qvm-prefs", "disp2", "netvm")
	// As Qubes: an empty text prints an empty line, a VM that is none
	// nothing.
	e.expect(0, "\n", "", "qvm-prefs", "disp2", "ip")
	e.expect(0, "dvm\n", "", "qvm-prefs", "disp2", "default_dispvm")
	e.expect(0, "", "", "qvm-prefs", "--hide-default", "disp2", "default_dispvm")
	if got := e.ok("qvm-prefs", "--hide-default", "disp2"); !strings.Contains(got, "\nnetvm               -  None\n") ||
		!strings.HasPrefix(got, "backup_timestamp    U\ndispid              -  2\n") {
		t.Errorf("disp2's set properties:\n%s", got)
	}
	e.expect(0, "offline\n", "", "qvm-tags", "disp2")
	e.expect(0, "service.cups  1\n", "", "qvm-features", "disp2")
	e.expect(1, "", "qvm-check: None of qubes: networked\n", "qvm-check", "--networked", "disp2")
	e.expect(0, "", "qvm-check: work: networked\n", "qvm-check", "--networked", "work")
}

func TestPrefsParity(t *testing.T) {
	e := paritySetup(t)
	// "none" in any case is no VM for the VM references.
	e.ok("qvm-prefs", "work", "netvm", "NONE")
	e.expect(0, "", "", "qvm-prefs", "work", "netvm")
	e.ok("qvm-prefs", "work", "netvm", "sys-firewall")
	e.ok("qvm-prefs", "work", "default-dispvm", "dvm")
	e.expect(0, "dvm\n", "", "qvm-prefs", "work", "default_dispvm")
	e.ok("qvm-prefs", "-D", "work", "default_dispvm")
	e.expect(0, "", "", "qvm-prefs", "work", "default_dispvm")
	e.expect(0, "", "", "qvm-prefs", "--hide-default", "work", "vcpus")
	e.expect(0, "1000\n", "", "qvm-prefs", "--hide-default", "work", "maxmem")
	e.expect(0, "1000\n", "", "qvm-prefs", "wor?", "maxmem")
	e.expect(0, "5\n", "", "qvm-prefs", "-g", "work", "qid")
	e.ok("qvm-prefs", "-s", "work", "vcpus", "3")
	e.expect(0, "3\n", "", "qvm-prefs", "work", "vcpus")
	e.expect(2, "", "qvm-prefs: error: no such property: 'bogus'\n", "qvm-prefs", "work", "bogus")
	e.expect(2, "", "qvm-prefs: error: no such domain: 'nope'\n", "qvm-prefs", "nope")
	help := e.ok("qvm-prefs", "--help-properties", "work")
	for _, want := range []string{
		"  autostart             Start the VM when the host boots\n",
		"  gateway6              IPv6 gateway for VMs using this one as netvm (read-only)\n",
		"  visible_gateway6      IPv6 default gateway of the VM (read-only)\n",
	} {
		if !strings.Contains(help, want) {
			t.Errorf("--help-properties lacks %q:\n%s", want, help)
		}
	}
	if !strings.Contains(help, "\n  template_for_dispvms  This AppVM can be a DispVM template\n") {
		t.Errorf("--help-properties of an AppVM:\n%s", help)
	}
	// Qubes' textwrap: a long description continues under itself.
	if got := e.ok("qvm-prefs", "--help-properties", "fedora-41"); !strings.Contains(got,
		"  stubdom_mem         Memory of the HVM's stubdomain in MiB, besides the guest's\n                        video RAM (unset: 112)\n") {
		t.Errorf("--help-properties wraps:\n%s", got)
	}
}

func TestGlobalPrefsParity(t *testing.T) {
	e := paritySetup(t)
	want := `default_dispvm            D  None
default_kernel            D  
default_netvm             D  dom0
default_pool              D  varlibqubes
default_pool_kernel       D  linux-kernel
default_pool_private      D  varlibqubes
default_pool_root         D  varlibqubes
default_pool_volatile     D  varlibqubes
default_qrexec_timeout    D  60
default_shutdown_timeout  D  60
default_template          D  None
management_dispvm         D  default-mgmt-dvm
`
	e.expect(0, want, "", "qubes-prefs")
	e.ok("qubes-prefs", "default_shutdown_timeout", "30")
	e.ok("qubes-prefs", "--set", "default-qrexec-timeout", "90")
	e.ok("qubes-prefs", "default_dispvm", "dvm")
	e.ok("qubes-prefs", "default_template", "None")
	e.expect(0, "default_dispvm            -  dvm\ndefault_qrexec_timeout    -  90\ndefault_shutdown_timeout  -  30\ndefault_template          -  None\n", "",
		"qubes-prefs", "--hide-default")
	// VMs follow the global defaults (through their templates).
	e.expect(0, "30\n", "", "qvm-prefs", "work", "shutdown_timeout")
	e.expect(0, "90\n", "", "qvm-prefs", "fedora-41", "qrexec_timeout")
	e.expect(0, "dvm\n", "", "qvm-prefs", "work", "default_dispvm")
	e.expect(0, "dvm\n", "", "qubes-prefs", "--get", "default_dispvm")
	e.expect(0, "", "", "qubes-prefs", "--hide-default", "default_pool")
	e.ok("qubes-prefs", "-D", "default_shutdown_timeout")
	e.expect(0, "60\n", "", "qvm-prefs", "work", "shutdown_timeout")
	e.expect(2, "", "qubes-prefs: error: no such property: 'bogus'\n", "qubes-prefs", "bogus", "1")
	help := e.ok("qubes-prefs", "--help-properties")
	if !strings.HasPrefix(help, "  default_dispvm            Default DispVM template for the VMs' disposables\n") ||
		!strings.Contains(help, "  default_netvm             VM that provides network to VMs by default (qvm:\n                              dom0 when not set)\n") {
		t.Errorf("qubes-prefs --help-properties:\n%s", help)
	}
}

func TestFeaturesServicesTags(t *testing.T) {
	e := paritySetup(t)
	e.expect(0, "cool               \nupdates-available  1\n", "", "qvm-features", "sys-net")
	e.expect(1, "", "", "qvm-features", "sys-net", "nope")
	e.expect(0, "\n", "", "qvm-features", "sys-net", "cool")
	e.ok("qvm-features", "--unset", "sys-net", "nope")
	e.ok("qvm-features", "--delete", "sys-net", "cool")
	e.expect(0, "updates-available  1\n", "", "qvm-features", "sys-net")

	// Services: service.NAME features, on "1", off "".
	e.expect(0, "", "", "qvm-service", "work")
	e.ok("qvm-service", "work", "cups", "on")
	e.ok("qvm-service", "--disable", "work", "crond")
	e.ok("qvm-service", "work", "-e", "sshd")
	e.ok("qvm-service", "work", "meminfo-writer", "false")
	e.expect(0, "crond           off\ncups            on\nmeminfo-writer  off\nsshd            on\n", "", "qvm-service", "-l", "work")
	e.expect(0, "internal                1\nservice.crond           \nservice.cups            1\nservice.meminfo-writer  \nservice.sshd            1\n", "",
		"qvm-features", "work")
	e.expect(0, "on\n", "", "qvm-service", "work", "cups")
	e.expect(0, "off\n", "", "qvm-service", "work", "crond")
	e.expect(1, "", "", "qvm-service", "work", "nope")
	e.ok("qvm-service", "--default", "work", "cups")
	e.ok("qvm-service", "-D", "work", "nope")
	e.expect(1, "", "", "qvm-service", "work", "cups")
	e.expect(1, "", "qvm-service: error: Invalid literal for boolean value: 'maybe'\n", "qvm-service", "work", "x", "maybe")

	// Tags.
	e.expect(0, "net\npersonal\n", "", "qvm-tags", "work")
	e.expect(0, "net\npersonal\n", "", "qvm-tags", "work", "ls")
	e.expect(0, "net\n", "", "qvm-tags", "work", "list", "net")
	e.expect(1, "", "", "qvm-tags", "work", "l", "other")
	e.ok("qvm-tags", "work", "a", "b-tag", "a_tag")
	e.ok("qvm-tags", "work", "del", "net")
	e.ok("qvm-tags", "work", "unset", "not-there")
	e.expect(0, "a_tag\nb-tag\npersonal\n", "", "qvm-tags", "work")
	e.expect(0, "", "", "qvm-tags", "sys-net", "list")
}

func TestCheckParity(t *testing.T) {
	e := paritySetup(t)
	e.expect(0, "", "qvm-check: work: exists\n", "qvm-check", "work")
	e.expect(0, "", "qvm-check: fedora-41: exists\nqvm-check: work: exists\n", "qvm-check", "work", "fedora-41")
	e.expect(0, "", "", "qvm-check", "-q", "work")
	e.expect(1, "", "qvm-check: nope: non-existent!\n", "qvm-check", "nope")
	e.expect(1, "", "nope: non-existent!\n", "qvm-check", "--quiet", "nope")
	e.expect(1, "", "qvm-check: work: exists\nqvm-check: nope: non-existent!\n", "qvm-check", "work", "nope")
	e.expect(0, "", "qvm-check: fedora-41: template\n", "qvm-check", "--template", "fedora-41")
	e.expect(3, "", "qvm-check: fedora-41: template\n", "qvm-check", "--template", "fedora-41", "work")
	e.expect(1, "", "qvm-check: None of qubes: template\n", "qvm-check", "--template", "work")
	e.expect(3, "", "qvm-check: debian-12: template\nqvm-check: fedora-41: template\n", "qvm-check", "--template", "--all")
	e.expect(0, "", "qvm-check: sys-firewall: networked\nqvm-check: sys-net: networked\n",
		"qvm-check", "--networked", "sys-net", "sys-firewall")
	e.expect(1, "", "qvm-check: None of qubes: template, networked\n", "qvm-check", "--template", "--networked", "fedora-41", "work")
	e.expect(2, "", "qvm-check: error: --exclude can only be used with --all\n", "qvm-check", "--exclude", "work", "work")
}

func TestVolumeParity(t *testing.T) {
	e := newEnv(t)
	e.installKernel("6.1.0")
	e.ok("qvm-create", "--class", "TemplateVM", "tpl", "-l", "black")
	e.ok("qvm-create", "a1", "-t", "tpl", "-l", "red")
	e.ok("qvm-create", "a2", "-t", "tpl", "-l", "red", "--prop", "kernel=")
	// As Qubes: sorted by pool and volume; a shared volume (the kernel)
	// names its last user first. No action lists.
	got := e.ok("qvm-volume")
	wantRows := [][]string{
		{"POOL:VOLUME", "VMNAME", "VOLUME_NAME", "REVERT_POSSIBLE"},
		{"linux-kernel:6.1.0", "tpl", "kernel", "No"},
		{"linux-kernel:6.1.0", "a1", "kernel", "No"},
		{"varlibqubes:appvms/a1/private", "a1", "private", "No"},
		{"varlibqubes:appvms/a1/root", "a1", "root", "No"},
		{"varlibqubes:appvms/a1/volatile", "a1", "volatile", "No"},
		{"varlibqubes:appvms/a2/private", "a2", "private", "No"},
		{"varlibqubes:appvms/a2/root", "a2", "root", "No"},
		{"varlibqubes:appvms/a2/volatile", "a2", "volatile", "No"},
		{"varlibqubes:vm-templates/tpl/private", "tpl", "private", "No"},
		{"varlibqubes:vm-templates/tpl/root", "tpl", "root", "No"},
		{"varlibqubes:vm-templates/tpl/volatile", "tpl", "volatile", "No"},
	}
	var b strings.Builder
	writeTable(&b, wantRows)
	if got != b.String() {
		t.Errorf("qvm-volume:\n%s\nwant:\n%s", got, b.String())
	}
	if got := e.ok("qvm-volume", "ls", "-p", "linux-kernel", "a1"); got != "POOL:VOLUME         VMNAME  VOLUME_NAME  REVERT_POSSIBLE\nlinux-kernel:6.1.0  a1      kernel       No\n" {
		t.Errorf("qvm-volume ls -p linux-kernel a1:\n%s", got)
	}
	if got := e.ok("qvm-volume", "list", "--all", "--exclude", "tpl", "--exclude", "a1", "-p", "varlibqubes", "--full"); got !=
		"POOL:VOLUME                     VMNAME  VOLUME_NAME  REVERT_POSSIBLE\n"+
			"varlibqubes:appvms/a2/private   a2      private      No\n"+
			"varlibqubes:appvms/a2/root      a2      root         No\n"+
			"varlibqubes:appvms/a2/volatile  a2      volatile     No\n" {
		t.Errorf("qvm-volume list --all --exclude:\n%s", got)
	}
	e.expect(0, "\n", "", "qvm-volume", "info", "tpl:root", "source")
	e.expect(0, "", "", "qvm-volume", "i", "tpl:root", "revisions")
	e.expect(0, "vm-templates/tpl/root\n", "", "qvm-volume", "info", "a1:root", "source")
	e.ok("qvm-volume", "config", "a1:private", "rw", "true")
	e.ok("qvm-volume", "set", "a1:private", "revisions_to_keep", "0")

	// Import: the file's data and size by default; --size; --no-resize
	// keeps the volume's; standard input with a size.
	src := filepath.Join(t.TempDir(), "data.img")
	writeImage(t, src, 1<<20)
	e.ok("qvm-volume", "import", "a1:private", src)
	e.expect(0, "1048576\n", "", "qvm-volume", "info", "a1:private", "size")
	e.ok("qvm-volume", "import", "--size", "4194304", "a1:private", src)
	e.expect(0, "4194304\n", "", "qvm-volume", "info", "a1:private", "size")
	e.ok("qvm-volume", "import", "--no-resize", "a1:private", src)
	e.expect(0, "4194304\n", "", "qvm-volume", "info", "a1:private", "size")
	r := e.runWith(strings.NewReader("from stdin"), "qvm-volume", "import", "--size", "512", "tpl:private", "-")
	if r.code != 0 {
		t.Fatalf("import from stdin: %+v", r)
	}
	if b, _ := os.ReadFile(filepath.Join(e.dir, "vm-templates", "tpl", "private.img")); string(b[:10]) != "from stdin" || len(b) != 512 {
		t.Errorf("tpl private after the import: %d bytes, %q", len(b), b[:10])
	}
	if b, _ := os.ReadFile(filepath.Join(e.dir, "appvms", "a1", "private.img")); string(b[:9]) != "qvm-image" {
		t.Errorf("a1 private after the import: %q", b[:9])
	}
	if _, err := os.Stat(src); err != nil {
		t.Errorf("the imported file went: %v", err)
	}
	// Clone and clear (-f: no question).
	e.ok("qvm-volume", "clone", "-f", "tpl:private", "a2:private")
	if b, _ := os.ReadFile(filepath.Join(e.dir, "appvms", "a2", "private.img")); string(b[:10]) != "from stdin" || len(b) != 512 {
		t.Errorf("a2 private after the clone: %d bytes", len(b))
	}
	e.ok("qvm-volume", "clear", "--force", "a2:private")
	if b, _ := os.ReadFile(filepath.Join(e.dir, "appvms", "a2", "private.img")); len(b) != 512 || strings.Trim(string(b), "\x00") != "" {
		t.Errorf("a2 private after the clear: %d bytes %q", len(b), b[:10])
	}
	r = e.runWith(terminal(t, "n\n"), "qvm-volume", "clear", "a1:private")
	if r.code != 0 || r.stdout != "This will empty the volume!\n(Data may be preserved in a revision.)\nAre you sure? [y/N] Clear cancelled.\n" {
		t.Errorf("clear answered n: %+v", r)
	}
	if b, _ := os.ReadFile(filepath.Join(e.dir, "appvms", "a1", "private.img")); string(b[:9]) != "qvm-image" {
		t.Errorf("a1 private after a cancelled clear: %q", b[:9])
	}
}

// TestPCIParity: qvm-pci lists the host's devices with Qubes' description
// (no header off a terminal), and with -s the assignments.
func TestPCIParity(t *testing.T) {
	e := newEnv(t)
	devs, err := pcihost.List()
	if err != nil || len(devs) == 0 {
		t.Fatalf("this host's PCI devices: %v %v", devs, err)
	}
	db, err := pcihost.LoadDB()
	if err != nil {
		t.Fatal(err)
	}
	var rows, sbdf [][]string
	for _, d := range devs {
		id := "dom0:" + strings.Replace(d.BDF, ":", "_", 1)
		rows = append(rows, []string{id, db.Describe(d), ""})
		sbdf = append(sbdf, []string{id, "0000:" + d.BDF, db.Describe(d), ""})
	}
	var want, wantSBDF strings.Builder
	writeTable(&want, rows)
	writeTable(&wantSBDF, sbdf)
	e.expect(0, want.String(), "", "qvm-pci")
	e.expect(0, wantSBDF.String(), "", "qvm-pci", "list", "--with-sbdf")
	e.expect(0, "", "", "qvm-pci", "ls", "--all")
	e.ok("qvm-create", "--standalone", "-l", "red", "--property", "kernel=", "sys-usb")
	dev := pciDevice(t, false)
	e.ok("qvm-pci", "assign", "--required", "-f", "sys-usb", dev, "-o", "permissive=True")
	rows = append(rows, []string{dev, db.Describe(mustLookup(t, dev)), "*sys-usb (required: permissive=True)"})
	want.Reset()
	writeTable(&want, sortedRows(rows))
	e.expect(0, want.String(), "", "qvm-pci", "list", "-s")
	d := mustLookup(t, dev)
	info := db.Describe(d) + "\n" + "device ID: " + pciDeviceID(d) + "\nsbdf: 0000:" + d.BDF + "\n"
	if d.Driver != "" {
		info += "driver: " + d.Driver + "\n"
	}
	e.expect(0, info, "", "qvm-pci", "info", dev)
	e.ok("qvm-pci", "unassign", "sys-usb")
	e.expect(0, "", "", "qvm-prefs", "--hide-default", "sys-usb", "virt_mode")
	e.expect(0, "block\npci\n", "", "qvm-pci", "--list-device-classes")
}

func mustLookup(t *testing.T, id string) pcihost.Device {
	t.Helper()
	bdf, err := parseDevice(id)
	if err != nil {
		t.Fatal(err)
	}
	d, err := pcihost.Lookup(bdf)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func sortedRows(rows [][]string) [][]string {
	out := append([][]string(nil), rows...)
	for i := 1; i < len(out); i++ {
		for j := i; j > 0 && strings.Join(out[j], "\x00") < strings.Join(out[j-1], "\x00"); j-- {
			out[j], out[j-1] = out[j-1], out[j]
		}
	}
	return out
}

// TestRunningStateVerbsNeedXen: on a machine that is not a Xen dom0, the
// verbs that act on or ask for the running state say so and change
// nothing; --dry-run and existence checks do not need it.
func TestRunningStateVerbsNeedXen(t *testing.T) {
	if underXen() {
		t.Skip("this machine runs Xen: the bed tests these (e2e TestQvmPauseCheck)")
	}
	e := paritySetup(t)
	for _, argv := range [][]string{
		{"qvm-pause", "work"}, {"qvm-unpause", "work"}, {"qvm-pause", "--all"},
		{"qvm-check", "--running", "work"}, {"qvm-check", "--paused", "--all"},
		{"qvm-kill", "work"}, {"qvm-shutdown", "--wait", "work"}, {"qvm-start", "work"},
	} {
		before := e.snapshot()
		r := e.run(argv...)
		want := argv[0] + ": error: " + argv[0] + " needs the hypervisor: this machine is not the dom0 of a running Xen (no /proc/xen/capabilities); definitions can be managed here, VMs can only run under Xen\n"
		if r.code != 1 || r.stderr != want {
			t.Errorf("%s: %+v", strings.Join(argv, " "), r)
		}
		if e.snapshot() != before {
			t.Errorf("%s changed the state", strings.Join(argv, " "))
		}
	}
	e.expect(0, "", "", "qvm-shutdown", "--dry-run", "--all")
	e.expect(2, "", "qvm-pause: error: one of the arguments --all VMNAME is required\n", "qvm-pause")
	e.expect(2, "", "qvm-kill: error: no such domain: 'nope'\n", "qvm-kill", "nope")
}

// TestStartOptions: the disc options Qubes has, checked through the
// configuration a start would use; --all/--exclude pick the VMs.
func TestStartOptions(t *testing.T) {
	e := newEnv(t)
	e.ok("qvm-create", "--hvm", "-l", "red", "win")
	e.ok("qvm-create", "--hvm", "-l", "red", "win2")
	iso := filepath.Join(t.TempDir(), "install.iso")
	writeImage(t, iso, 1<<20)
	f, err := os.OpenFile(iso, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteAt([]byte("\x01CD001\x01"), 16*2048)
	f.Close()
	for _, argv := range [][]string{
		{"qvm-start", "--dry-run", "--cdrom", "dom0:" + iso, "win"},
		{"qvm-start", "--dry-run", "--drive", "cdrom:dom0:" + iso, "win"},
		{"qvm-start", "--dry-run", "--drive", iso, "win"},
	} {
		if out := e.ok(argv...); !strings.Contains(out, iso) {
			t.Errorf("%s: the disc is not in the configuration:\n%s", strings.Join(argv, " "), out)
		}
	}
	r := e.run("qvm-start", "--dry-run", "--install-windows-tools", "win")
	if r.code == 0 || !strings.Contains(r.stderr, windowsToolsISO) {
		t.Errorf("--install-windows-tools without the tools' disc: %+v", r)
	}
	out := e.ok("qvm-start", "--dry-run", "--all", "--exclude", "win")
	if !strings.Contains(out, "# win2: xl.cfg") || strings.Contains(out, "# win: xl.cfg") {
		t.Errorf("--all --exclude win:\n%s", out)
	}
	out = e.ok("qvm-start", "--dry-run", "w*")
	if !strings.Contains(out, "# win2: xl.cfg") || !strings.Contains(out, "# win: xl.cfg") {
		t.Errorf("w*:\n%s", out)
	}
}

// TestCommonOptions: every verb takes --version, --force-root (ignored),
// -v/-q, a unique prefix of a long option, and -h.
func TestCommonOptions(t *testing.T) {
	e := paritySetup(t)
	for _, v := range verbs() {
		if v.hidden || v.name == "dhcpd" {
			continue
		}
		name := v.linkName()
		r := e.run(name, "--version")
		if r.code != 0 || r.stdout != name+" (qvm) "+qvmVersion()+"\n" {
			t.Errorf("%s --version: %+v", name, r)
		}
		if r := e.run(name, "-h"); r.code != 0 || !strings.HasPrefix(r.stdout, "usage: "+name+" ") {
			t.Errorf("%s -h: %+v", name, r)
		}
	}
	e.expect(0, "1000\n", "", "qvm-prefs", "--force-root", "-v", "-q", "work", "maxmem")
	e.expect(0, "", "", "qvm-prefs", "--hide", "work", "vcpus")
	e.expect(0, "work\n", "", "qvm-ls", "--raw-l", "--tag", "net")
	for _, argv := range [][]string{{"qvm-block", "--help"}, {"qvm-block", "-v", "--help"}, {"qvm-block", "--dir", e.dir, "-h"}} {
		if r := e.run(argv...); r.code != 0 || !strings.HasPrefix(r.stdout, "usage: qvm-block ACTION [options] [ARGS]\n\nactions:\n  list, ls, l") {
			t.Errorf("%v: %+v", argv, r)
		}
	}
	if r := e.run("qvm-volume", "-h"); r.code != 0 || !strings.HasPrefix(r.stdout, "usage: qvm-volume ACTION [options] [ARGS]\n\nactions:\n  info, i") {
		t.Errorf("qvm-volume -h: %+v", r)
	}
}
