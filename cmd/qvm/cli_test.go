package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// seedSetup makes the VMs around seed 001: a template, a netvm with IPv6,
// and my-new-vm as the seed shows it.
func seedSetup(t *testing.T) *env {
	e := newEnv(t)
	e.ok("qvm-create", "--class", "TemplateVM", "fedora", "-l", "black")
	e.ok("qvm-create", "sys-firewall", "--template", "fedora", "-l", "green", "--property", "provides_network=True")
	e.ok("qvm-features", "sys-firewall", "ipv6", "1")
	e.ok("qvm-create", "--class", "StandaloneVM", "--label", "red", "--property", "virt_mode=hvm",
		"--property", "kernel=", "--prop=memory=1000", "--prop", "netvm=sys-firewall",
		"--property=include_in_backups=False", "--property", "provides_network=False", "my-new-vm")
	return e
}

var uuidRE = regexp.MustCompile(`[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}`)

func TestPrefsListingLikeSeed001(t *testing.T) {
	e := seedSetup(t)
	got := e.ok("qvm-prefs", "my-new-vm")
	want := `autostart           D  False
backup_timestamp    U
debug               D  False
default_dispvm      D  None
default_user        D  user
dns                 D  10.139.1.1 10.139.1.2
gateway             D  
gateway6            D  
icon                D  standalonevm-red
include_in_backups  -  False
installed_by_rpm    D  False
ip                  D  10.137.0.3
ip6                 D  fd09:24ef:4179::a89:3
kernel              -  
kernelopts          D  
keyboard_layout     D  us++
klass               D  StandaloneVM
label               -  red
mac                 D  00:16:3e:5e:6c:03
management_dispvm   D  default-mgmt-dvm
maxmem              D  0
memory              -  1000
name                -  my-new-vm
netvm               -  sys-firewall
provides_network    -  False
qid                 -  3
qrexec_timeout      D  60
shutdown_timeout    D  60
start_time          D  
stubdom_mem         U
stubdom_xid         D  -1
updateable          D  True
uuid                -  UUID
vcpus               D  2
virt_mode           -  hvm
visible_gateway     D  10.137.0.2
visible_gateway6    D  fd09:24ef:4179::a89:2
visible_ip          D  10.137.0.3
visible_ip6         D  fd09:24ef:4179::a89:3
visible_netmask     D  255.255.255.255
xid                 D  -1
`
	if g := uuidRE.ReplaceAllString(got, "UUID"); g != want {
		t.Errorf("qvm-prefs my-new-vm:\n%s\nwant:\n%s", g, want)
	}
	if got := e.ok("qvm-prefs", "my-new-vm", "memory"); got != "1000\n" {
		t.Errorf("memory = %q", got)
	}
	if got := e.ok("qvm-prefs", "--hide-default", "my-new-vm"); strings.Contains(got, " D ") || !strings.Contains(got, "memory              -  1000") {
		t.Errorf("--hide-default:\n%s", got)
	}
}

func TestCloneGetsNewIdentityAndMAC(t *testing.T) {
	e := seedSetup(t)
	e.ok("qvm-clone", "my-new-vm", "my-new-vm-copy")
	orig := e.ok("qvm-prefs", "my-new-vm")
	clone := e.ok("qvm-prefs", "my-new-vm-copy")
	differ := map[string]bool{"ip": true, "ip6": true, "mac": true, "name": true, "qid": true, "uuid": true, "visible_ip": true, "visible_ip6": true}
	ol, cl := strings.Split(orig, "\n"), strings.Split(clone, "\n")
	if len(ol) != len(cl) {
		t.Fatalf("listings differ in length:\n%s\n%s", orig, clone)
	}
	for i := range ol {
		name := strings.Fields(ol[i] + " x")[0]
		if differ[name] == (ol[i] == cl[i]) {
			t.Errorf("property %s: source %q clone %q", name, ol[i], cl[i])
		}
	}
	// The clone's images are copies of the source's.
	for _, vol := range []string{"root", "private", "volatile"} {
		a, err := os.Stat(filepath.Join(e.dir, "appvms/my-new-vm", vol+".img"))
		if err != nil {
			t.Fatal(err)
		}
		b, err := os.Stat(filepath.Join(e.dir, "appvms/my-new-vm-copy", vol+".img"))
		if err != nil {
			t.Fatal(err)
		}
		if a.Size() != b.Size() {
			t.Errorf("%s: size %d, clone %d", vol, a.Size(), b.Size())
		}
	}
	// Setting the MAC, R4 and R3 style, and back to the default.
	e.ok("qvm-prefs", "my-new-vm-copy", "mac", "00:16:3E:5E:6C:05")
	if got := e.ok("qvm-prefs", "my-new-vm-copy", "mac"); got != "00:16:3e:5e:6c:05\n" {
		t.Errorf("mac = %q", got)
	}
	e.ok("qvm-prefs", "--default", "my-new-vm-copy", "mac")
	e.ok("qvm-prefs", "my-new-vm-copy", "-s", "mac", "00:16:3E:5E:6C:06")
	if got := e.ok("qvm-prefs", "my-new-vm-copy"); !strings.Contains(got, "mac                 -  00:16:3e:5e:6c:06\n") {
		t.Errorf("after -s mac:\n%s", got)
	}
	e.ok("qvm-prefs", "-D", "my-new-vm-copy", "mac")
	if got := e.ok("qvm-prefs", "my-new-vm-copy"); !strings.Contains(got, "mac                 D  00:16:3e:5e:6c:04\n") {
		t.Errorf("after --default mac:\n%s", got)
	}

	got := e.ok("qvm-ls", "-n")
	want := `NAME            STATE    NETVM         IP          IPBACK      GATEWAY
dom0            Running  -             -           -           -
fedora          Halted   -             -           -           -
my-new-vm       Halted   sys-firewall  10.137.0.3  -           10.137.0.2
my-new-vm-copy  Halted   sys-firewall  10.137.0.4  -           10.137.0.2
sys-firewall    Halted   dom0          10.137.0.2  10.137.0.2  10.137.255.254
`
	if got != want {
		t.Errorf("qvm-ls -n:\n%s\nwant:\n%s", got, want)
	}
	e.ok("qvm-remove", "-f", "my-new-vm-copy")
	if _, err := os.Stat(filepath.Join(e.dir, "appvms/my-new-vm-copy")); !os.IsNotExist(err) {
		t.Errorf("images of removed VM remain: %v", err)
	}
	if got := e.ok("qvm-ls", "--raw-list"); got != "dom0\nfedora\nmy-new-vm\nsys-firewall\n" {
		t.Errorf("after remove: %q", got)
	}
}

func TestLsFormats(t *testing.T) {
	e := seedSetup(t)
	got := e.ok("qvm-ls")
	want := `NAME          STATE    CLASS         LABEL  TEMPLATE  NETVM
dom0          Running  AdminVM       black  -         -
fedora        Halted   TemplateVM    black  -         -
my-new-vm     Halted   StandaloneVM  red    -         sys-firewall
sys-firewall  Halted   AppVM         green  fedora    dom0
`
	if got != want {
		t.Errorf("qvm-ls:\n%s\nwant:\n%s", got, want)
	}
	if got := e.ok("qvm-ls", "--raw-data", "--fields", "name,ip,flags", "my-new-vm", "sys-firewall"); got != "my-new-vm|10.137.0.3|S-U-----\nsys-firewall|10.137.0.2|a--N----\n" {
		t.Errorf("raw-data: %q", got)
	}
	var list []struct {
		Name       string         `json:"name"`
		State      string         `json:"state"`
		Class      string         `json:"class"`
		IP         *string        `json:"ip"`
		Gateway    *string        `json:"gateway"`
		Properties map[string]any `json:"properties"`
		Marks      map[string]string
	}
	if err := json.Unmarshal([]byte(e.ok("qvm-ls", "--format", "json")), &list); err != nil {
		t.Fatal(err)
	}
	if len(list) != 4 || list[2].Name != "my-new-vm" {
		t.Fatalf("json: %+v", list)
	}
	m := list[2]
	if m.State != "Halted" || m.Class != "StandaloneVM" || *m.IP != "10.137.0.3" || *m.Gateway != "10.137.0.2" {
		t.Errorf("json my-new-vm: %+v", m)
	}
	if m.Properties["memory"] != float64(1000) || m.Properties["include_in_backups"] != false || m.Properties["stubdom_mem"] != nil || m.Marks["memory"] != "-" || m.Marks["vcpus"] != "D" {
		t.Errorf("json properties: %v %v", m.Properties, m.Marks)
	}
	if list[0].IP != nil {
		t.Errorf("dom0 ip %v", *list[0].IP)
	}
}

// TestSeedCommands runs each command of the issue as typed, R4 and R3.
func TestSeedCommands(t *testing.T) {
	e := newEnv(t)
	e.ok("qvm-create", "--class", "TemplateVM", "debian-12", "-l", "black")
	e.ok("qvm-create", "--class", "StandaloneVM", "--label", "green", "--property", "virt_mode=hvm", "my-new-vm")
	e.ok("qvm-create", "my-new-vm2", "--class", "StandaloneVM", "--property", "virt_mode=hvm", "--property", "kernel=", "--label=green")
	e.ok("qvm-create", "--class", "StandaloneVM", "--label", "red", "--property", "virt_mode=hvm", "--template", "debian-12", "dev")
	e.ok("qvm-create", "--class", "TemplateVM", "win-tpl", "--property", "virt_mode=HVM", "--property", "kernel=", "-l", "green")
	img := filepath.Join(t.TempDir(), "win10-root.img")
	writeImage(t, img, 1<<20)
	e.ok("qvm-create", "--property=virt_mode=hvm", "--property=memory=4096", "--property=kernel=", "--label", "red", "--standalone", "--root-move-from", img, "win10")
	if _, err := os.Stat(img); !os.IsNotExist(err) {
		t.Errorf("--root-move-from left the source: %v", err)
	}
	writeImage(t, img, 1<<20)
	e.ok("qvm-create", "--hvm", "win11", "--label", "red", "--mem=4096", "--root-move-from", img)

	for vm, want := range map[string]map[string]string{
		"my-new-vm":  {"klass": "StandaloneVM", "virt_mode": "hvm", "label": "green"},
		"my-new-vm2": {"kernel": "", "virt_mode": "hvm"},
		"dev":        {"klass": "StandaloneVM", "label": "red"},
		"win-tpl":    {"klass": "TemplateVM", "virt_mode": "hvm", "kernel": ""},
		"win10":      {"klass": "StandaloneVM", "memory": "4096", "kernel": "", "virt_mode": "hvm", "label": "red"},
		"win11":      {"klass": "StandaloneVM", "memory": "4096", "kernel": "", "virt_mode": "hvm", "label": "red"},
	} {
		for prop, val := range want {
			if got := e.ok("qvm-prefs", vm, prop); got != val+"\n" {
				t.Errorf("%s %s = %q, want %q", vm, prop, got, val)
			}
		}
	}
	// The imported root keeps its data and its size, as Qubes' qvm-create
	// imports it (admin.vm.volume.ImportWithSize with the file's size).
	for _, vm := range []string{"win10", "win11"} {
		p := filepath.Join(e.dir, "appvms", vm, "root.img")
		fi, err := os.Stat(p)
		if err != nil || fi.Size() != 1<<20 {
			t.Errorf("%s root: %v %v", vm, fi, err)
		}
		b := make([]byte, 512)
		f, _ := os.Open(p)
		f.ReadAt(b, 0)
		f.Close()
		if string(b[:9]) != "qvm-image" {
			t.Errorf("%s root lost its data: %q", vm, b[:9])
		}
	}
	// The standalone from a template has copies of its images.
	for _, vol := range []string{"root.img", "private.img"} {
		if _, err := os.Stat(filepath.Join(e.dir, "appvms/dev", vol)); err != nil {
			t.Error(err)
		}
	}
}

func writeImage(t *testing.T, path string, size int64) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString("qvm-image")
	f.Truncate(size)
	f.Close()
}

func TestVolumeInfoAndResize(t *testing.T) {
	e := seedSetup(t)
	got := e.ok("qvm-volume", "info", "my-new-vm:root")
	want := `pool               varlibqubes
vid                appvms/my-new-vm/root
rw                 True
source             
save_on_stop       True
snap_on_start      False
size               10737418240
usage              0
revisions_to_keep  0
ephemeral          False
is_outdated        False
List of available revisions (for revert): none
`
	if got != want {
		t.Errorf("qvm-volume info:\n%s\nwant:\n%s", got, want)
	}
	if got := e.ok("qvm-volume", "info", "sys-firewall:root", "source"); got != "vm-templates/fedora/root\n" {
		t.Errorf("AppVM root source = %q", got)
	}
	// Grow, sparse: the size changes, the allocation does not.
	e.ok("qvm-volume", "resize", "my-new-vm:root", "40GiB")
	if got := e.ok("qvm-volume", "info", "my-new-vm:root", "size"); got != "42949672960\n" {
		t.Errorf("size after resize = %q", got)
	}
	if got := e.ok("qvm-volume", "info", "my-new-vm:root", "usage"); got != "0\n" {
		t.Errorf("usage after resize = %q", got)
	}
	for _, c := range []struct {
		argv []string
		want string
	}{
		{[]string{"qvm-volume", "resize", "my-new-vm:root", "1GiB"}, "refusing to shrink"},
		{[]string{"qvm-volume", "resize", "sys-firewall:root", "20GiB"}, "resize that instead: qvm-volume resize fedora:root"},
		{[]string{"qvm-volume", "resize", "my-new-vm:root", "lots"}, "size \"lots\""},
		{[]string{"qvm-volume", "resize", "my-new-vm:swap", "1GiB"}, "vm 'my-new-vm' has no volume 'swap'"},
		{[]string{"qvm-volume", "resize", "nope:root", "1GiB"}, "no vm 'nope'"},
		{[]string{"qvm-volume", "info", "my-new-vm:root", "colour"}, "No such property: colour"},
	} {
		before := e.snapshot()
		r := e.run(c.argv...)
		if r.code == 0 || !strings.Contains(r.stderr, c.want) {
			t.Errorf("%v: exit %d, stderr %q, want %q", c.argv, r.code, r.stderr, c.want)
		}
		if e.snapshot() != before {
			t.Errorf("%v changed the state", c.argv)
		}
	}
}

// TestActions: verbs with actions list them on --help, refuse an unknown
// one with a usage error, run their default, and take --dir before the
// action.
func TestActions(t *testing.T) {
	e := newEnv(t)
	for _, verb := range []string{"qvm-block", "qvm-pci", "qvm-volume"} {
		r := e.run(verb, "--help")
		if r.code != 0 || !strings.Contains(r.stdout, "actions:") || !strings.Contains(r.stdout, "attach") && !strings.Contains(r.stdout, "resize") {
			t.Errorf("%s --help: %+v", verb, r)
		}
		if r := e.run(verb, "frobnicate"); r.code != 2 || !strings.Contains(r.stderr, `unknown action "frobnicate"`) {
			t.Errorf("%s frobnicate: %+v", verb, r)
		}
	}
	if out := e.ok("qvm-volume"); out != "POOL:VOLUME  VMNAME  VOLUME_NAME  REVERT_POSSIBLE\n" {
		t.Errorf("qvm-volume lists by default: %q", out)
	}
	other := t.TempDir()
	e.ok("qvm-create", "--dir", other, "--class", "StandaloneVM", "-l", "red", "elsewhere")
	if out := e.ok("qvm-volume", "--dir", other, "list"); !strings.Contains(out, "elsewhere") {
		t.Errorf("qvm-volume --dir DIR list:\n%s", out)
	}
	if r := e.run("qvm-volume", "resize", "--help"); r.code != 0 || !strings.Contains(r.stdout, "usage: qvm-volume resize") {
		t.Errorf("qvm-volume resize --help: %+v", r)
	}
}

// TestWriteTable: columns padded to the widest cell, two spaces apart,
// the last cell unpadded.
func TestWriteTable(t *testing.T) {
	var b strings.Builder
	writeTable(&b, [][]string{{"NAME", "STATE", "NETVM"}, {"sys-firewall", "Running", "-"}, {"x", "Halted", ""}, {"short"}})
	want := "NAME          STATE    NETVM\n" +
		"sys-firewall  Running  -\n" +
		"x             Halted   \n" +
		"short\n"
	if b.String() != want {
		t.Errorf("got:\n%q\nwant:\n%q", b.String(), want)
	}
}
