package vm

import (
	"fmt"
	"strings"
	"testing"
)

// newTestSystem has a TemplateVM debian-12 and a netvm sys-firewall with
// IPv6, like the seeds' setups.
func newTestSystem(t *testing.T) *System {
	t.Helper()
	s := NewSystem()
	s.Host = Host{MemoryMiB: 16000, Kernels: map[string]KernelInfo{"6.1.0-28-amd64": {}, "5.15.0": {DefaultOpts: "nopat"}}}
	mustCreate(t, s, CreateSpec{Name: "debian-12", Class: TemplateVM, Label: "black"})
	mustCreate(t, s, CreateSpec{Name: "sys-firewall", Class: AppVM, Label: "green", Template: "debian-12",
		Props: []Prop{{"provides_network", "True"}}})
	s.VMs[len(s.VMs)-1].Features = map[string]string{"ipv6": "1"}
	return s
}

var uuidN int

func mustCreate(t *testing.T, s *System, spec CreateSpec) *Definition {
	t.Helper()
	uuidN++
	spec.UUID = fmt.Sprintf("00000000-0000-4000-8000-%012d", uuidN)
	d, err := s.Create(spec)
	if err != nil {
		t.Fatalf("create %s: %v", spec.Name, err)
	}
	return d
}

func get(t *testing.T, s *System, vmName, prop string) Value {
	t.Helper()
	v, err := s.View(vmName)
	if err != nil {
		t.Fatal(err)
	}
	val, err := v.Get(prop)
	if err != nil {
		t.Fatalf("%s.%s: %v", vmName, prop, err)
	}
	return val
}

func TestDerivedAddressesMatchSeed(t *testing.T) {
	// Seed 001: qid 122 -> 10.137.0.122 and fd09:24ef:4179::a89:7a.
	if got := DerivedIP(122, false); got != "10.137.0.122" {
		t.Errorf("DerivedIP(122) = %s", got)
	}
	if got := DerivedIP6(122, false); got != "fd09:24ef:4179::a89:7a" {
		t.Errorf("DerivedIP6(122) = %s", got)
	}
	if got := DerivedIP6(137, false); got != "fd09:24ef:4179::a89:89" {
		t.Errorf("DerivedIP6(137) = %s", got)
	}
	if got := DerivedIP(300, false); got != "10.137.1.44" {
		t.Errorf("DerivedIP(300) = %s", got)
	}
	if got := DerivedIP(5, true); got != "10.138.0.5" {
		t.Errorf("DerivedIP(5, disp) = %s", got)
	}
	if a, b := DerivedMAC(122), DerivedMAC(137); a == b || a != "00:16:3e:5e:6c:7a" {
		t.Errorf("DerivedMAC(122) = %s, DerivedMAC(137) = %s", a, b)
	}
}

func TestNames(t *testing.T) {
	good := []string{"a", "my-new-vm", "win10", "A.b_c-d", strings.Repeat("x", 31)}
	bad := []string{"", "1vm", "-x", "my vm", "x/y", strings.Repeat("x", 32), "none", "None", "default", "Domain-0", "dom0", "foo-dm", "é"}
	for _, n := range good {
		if err := ValidateName(n); err != nil {
			t.Errorf("ValidateName(%q) = %v, want ok", n, err)
		}
	}
	for _, n := range bad {
		if err := ValidateName(n); err == nil {
			t.Errorf("ValidateName(%q) accepted", n)
		}
	}
}

func TestDefaultsFollowTemplateAndNetVM(t *testing.T) {
	s := newTestSystem(t)
	if err := s.SetProp("debian-12", "memory", "1234"); err != nil {
		t.Fatal(err)
	}
	if err := s.SetProp("debian-12", "kernel", "5.15.0"); err != nil {
		t.Fatal(err)
	}
	mustCreate(t, s, CreateSpec{Name: "work", Class: AppVM, Label: "blue", Template: "debian-12",
		Props: []Prop{{"netvm", "sys-firewall"}}})
	for prop, want := range map[string]Value{
		"memory":          {Text: "1234", Mark: MarkDefault, Kind: KindInt},
		"kernel":          {Text: "5.15.0", Mark: MarkDefault},
		"kernelopts":      {Text: "nopat", Mark: MarkDefault},
		"virt_mode":       {Text: "pvh", Mark: MarkDefault},
		"netvm":           {Text: "sys-firewall", Mark: MarkSet, Kind: KindVM},
		"visible_gateway": {Text: "10.137.0.2", Mark: MarkDefault},
		"ip":              {Text: "10.137.0.3", Mark: MarkDefault},
		"ip6":             {Text: "fd09:24ef:4179::a89:3", Mark: MarkDefault},
		"visible_netmask": {Text: "255.255.255.255", Mark: MarkDefault},
		"updateable":      {Text: "False", Mark: MarkDefault, Kind: KindBool},
		"template":        {Text: "debian-12", Mark: MarkSet, Kind: KindVM},
		"maxmem":          {Text: "8000", Mark: MarkDefault, Kind: KindInt}, // 10x1234 capped at half of 16000
		"stubdom_mem":     {Mark: MarkUnset, Kind: KindInt},
		"gateway":         {Text: "", Mark: MarkDefault},
	} {
		if got := get(t, s, "work", prop); got != want {
			t.Errorf("work.%s = %+v, want %+v", prop, got, want)
		}
	}
	// The netvm's own gateway is its IP; IPv6 follows its feature.
	if got := get(t, s, "sys-firewall", "gateway").Text; got != "10.137.0.2" {
		t.Errorf("sys-firewall gateway = %q", got)
	}
	if got := get(t, s, "sys-firewall", "gateway6").Text; got != "fd09:24ef:4179::a89:2" {
		t.Errorf("sys-firewall gateway6 = %q", got)
	}
	// Disconnected: no addresses.
	if err := s.SetProp("work", "netvm", "none"); err != nil {
		t.Fatal(err)
	}
	if got := get(t, s, "work", "ip"); got.Text != "" || got.String() != "" {
		t.Errorf("disconnected ip = %+v", got)
	}
	if got := get(t, s, "work", "netvm"); got.String() != "None" || got.Mark != MarkSet {
		t.Errorf("netvm none = %+v (%s)", got, got.String())
	}
}

func TestVirtModeAndPCI(t *testing.T) {
	s := newTestSystem(t)
	mustCreate(t, s, CreateSpec{Name: "usb", Class: StandaloneVM, Label: "red"})
	if got := get(t, s, "usb", "virt_mode").Text; got != "pvh" {
		t.Fatalf("virt_mode = %s", got)
	}
	d, _ := s.Lookup("usb")
	d.PCI = []PCIDevice{{BDF: "00:14.0"}}
	if got := get(t, s, "usb", "virt_mode").Text; got != "hvm" {
		t.Errorf("virt_mode with PCI = %s, want hvm", got)
	}
	if got := get(t, s, "usb", "maxmem").Text; got != "0" {
		t.Errorf("maxmem with PCI = %s, want 0", got)
	}
	if err := s.SetProp("usb", "virt_mode", "PVH"); err == nil {
		t.Error("pvh accepted with a PCI device")
	}
	if err := s.SetProp("usb", "virt_mode", "PV"); err != nil {
		t.Error(err)
	}
	if got := get(t, s, "usb", "virt_mode"); got.Text != "pv" || got.Mark != MarkSet {
		t.Errorf("virt_mode = %+v", got)
	}
}

func TestSetRefusals(t *testing.T) {
	s := newTestSystem(t)
	mustCreate(t, s, CreateSpec{Name: "a", Class: StandaloneVM, Label: "red"})
	mustCreate(t, s, CreateSpec{Name: "net2", Class: StandaloneVM, Label: "red", Props: []Prop{{"provides_network", "True"}}})
	cases := []struct{ vm, prop, value, want string }{
		{"a", "memory", "0", "out of range"},
		{"a", "memory", "lots", "not a whole number"},
		{"a", "vcpus", "0", "out of range"},
		{"a", "mac", "00:16:3e:5e:6c", "invalid MAC"},
		{"a", "mac", "01:16:3e:5e:6c:00", "multicast"},
		{"a", "ip", "10.137.0.300", "invalid IPv4"},
		{"a", "ip", "10.137.0.1", "already debian-12's address"},
		{"a", "label", "pink", "unknown label"},
		{"a", "virt_mode", "kvm", "invalid virt_mode"},
		{"a", "kernel", "9.9", "not installed"},
		{"a", "netvm", "debian-12", "does not provide network"},
		{"a", "netvm", "a", "own netvm"},
		{"a", "netvm", "nosuch", "no such VM"},
		{"a", "qid", "7", "read-only"},
		{"a", "name", "b", "read-only"},
		{"a", "uuid", "x", "read-only"},
		{"a", "visible_ip", "10.0.0.1", "read-only"},
		{"a", "nosuchprop", "1", "no such property"},
		{"a", "template", "debian-12", "no such property"},
		{"a", "debug", "maybe", "not a boolean"},
		{"sys-firewall", "template", "a", "not a TemplateVM"},
		{"debian-12", "provides_network", "x", "not a boolean"},
	}
	for _, c := range cases {
		before := fmt.Sprint(s.VMs)
		err := s.SetProp(c.vm, c.prop, c.value)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("set %s %s=%q: err %v, want %q", c.vm, c.prop, c.value, err, c.want)
		}
		if after := fmt.Sprint(s.VMs); after != before {
			t.Errorf("set %s %s=%q changed the system", c.vm, c.prop, c.value)
		}
	}
	// maxmem below memory, and memory above an explicit maxmem.
	if err := s.SetProp("a", "maxmem", "100"); err == nil || !strings.Contains(err.Error(), "less than memory") {
		t.Errorf("maxmem 100 < memory 400: %v", err)
	}
	if err := s.SetProp("a", "maxmem", "0"); err != nil {
		t.Errorf("maxmem 0: %v", err)
	}
	if err := s.SetProp("a", "maxmem", "800"); err != nil {
		t.Fatal(err)
	}
	if err := s.SetProp("a", "memory", "900"); err == nil || !strings.Contains(err.Error(), "more than maxmem") {
		t.Errorf("memory 900 > maxmem 800: %v", err)
	}
	// netvm loops: net2 -> sys-firewall -> net2 is refused.
	if err := s.SetProp("sys-firewall", "netvm", "net2"); err != nil {
		t.Fatal(err)
	}
	if err := s.SetProp("net2", "netvm", "sys-firewall"); err == nil || !strings.Contains(err.Error(), "loop") {
		t.Errorf("netvm loop: %v", err)
	}
	// A netvm in use cannot stop providing network.
	if err := s.SetProp("net2", "provides_network", "False"); err == nil {
		t.Error("net2 stopped providing network while sys-firewall uses it")
	}
}

func TestCreateRules(t *testing.T) {
	s := newTestSystem(t)
	bad := []struct {
		spec CreateSpec
		want string
	}{
		{CreateSpec{Name: "x", Class: AppVM, Label: "red"}, "needs a template"},
		{CreateSpec{Name: "x", Class: AppVM, Label: "red", Template: "sys-firewall"}, "not a TemplateVM"},
		{CreateSpec{Name: "x", Class: AppVM, Label: "red", Template: "nope"}, "no such VM"},
		{CreateSpec{Name: "x", Class: StandaloneVM, Label: "red", Template: "sys-firewall"}, "not a TemplateVM"},
		{CreateSpec{Name: "x", Class: DispVM, Label: "red", Template: "sys-firewall"}, "not a DispVM template"},
		{CreateSpec{Name: "x", Class: StandaloneVM}, "label is required"},
		{CreateSpec{Name: "x", Class: StandaloneVM, Label: "pink"}, "unknown label"},
		{CreateSpec{Name: "debian-12", Class: StandaloneVM, Label: "red"}, "already exists"},
		{CreateSpec{Name: "dom0", Class: StandaloneVM, Label: "red"}, "reserved"},
		{CreateSpec{Name: "x", Class: AdminVM, Label: "red"}, "AdminVM"},
		{CreateSpec{Name: "x", Class: "Bogus", Label: "red"}, "unknown class"},
		{CreateSpec{Name: "x", Class: StandaloneVM, Label: "red", Props: []Prop{{"memory", "-1"}}}, "memory"},
		{CreateSpec{Name: "x", Class: StandaloneVM, Label: "red", Props: []Prop{{"maxmem", "10"}}}, "less than memory"},
	}
	for _, b := range bad {
		n := len(s.VMs)
		b.spec.UUID = "11111111-1111-4111-8111-111111111111"
		if _, err := s.Create(b.spec); err == nil || !strings.Contains(err.Error(), b.want) {
			t.Errorf("create %+v: %v, want %q", b.spec, err, b.want)
		}
		if len(s.VMs) != n {
			t.Errorf("failed create %+v left a VM", b.spec)
		}
	}
	// A standalone from a template copies its settings.
	if err := s.SetProp("debian-12", "memory", "777"); err != nil {
		t.Fatal(err)
	}
	mustCreate(t, s, CreateSpec{Name: "dev", Class: StandaloneVM, Label: "red", Template: "debian-12", Props: []Prop{{"virt_mode", "hvm"}}})
	if got := get(t, s, "dev", "memory"); got.Text != "777" || got.Mark != MarkSet {
		t.Errorf("dev memory = %+v", got)
	}
	if _, err := get(t, s, "dev", "virt_mode"), s.SetProp("dev", "virt_mode", "pvh"); err != nil {
		t.Error(err)
	}
	// Lowest free qid: remove qid 1's dependants... free one in the middle.
	mustCreate(t, s, CreateSpec{Name: "gap", Class: StandaloneVM, Label: "red"})
	gapQID := get(t, s, "gap", "qid").Text
	if _, err := s.Remove("gap"); err != nil {
		t.Fatal(err)
	}
	d := mustCreate(t, s, CreateSpec{Name: "refill", Class: StandaloneVM, Label: "red"})
	if fmt.Sprint(d.QID) != gapQID {
		t.Errorf("qid %d, want the freed %s", d.QID, gapQID)
	}
	// A qid whose derived IP is taken by an explicit ip is skipped.
	next := fmt.Sprint(d.QID + 1)
	if err := s.SetProp("refill", "ip", "10.137.0."+next); err != nil {
		t.Fatal(err)
	}
	d2 := mustCreate(t, s, CreateSpec{Name: "after", Class: StandaloneVM, Label: "red"})
	if fmt.Sprint(d2.QID) == next {
		t.Errorf("qid %d reused the IP refill holds", d2.QID)
	}
}

func TestCloneAndRemove(t *testing.T) {
	s := newTestSystem(t)
	mustCreate(t, s, CreateSpec{Name: "my-new-vm", Class: StandaloneVM, Label: "red",
		Props: []Prop{{"virt_mode", "hvm"}, {"memory", "1000"}, {"netvm", "sys-firewall"}, {"mac", "00:16:3e:5e:6c:05"}, {"ip", "10.137.5.5"}}})
	d, err := s.Clone("my-new-vm", "my-new-vm-copy", "22222222-2222-4222-8222-222222222222")
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"memory", "virt_mode", "netvm", "label"} {
		if a, b := get(t, s, "my-new-vm", p), get(t, s, "my-new-vm-copy", p); a != b {
			t.Errorf("clone %s = %+v, source %+v", p, b, a)
		}
	}
	for _, p := range []string{"qid", "uuid", "ip", "mac", "ip6"} {
		if a, b := get(t, s, "my-new-vm", p), get(t, s, "my-new-vm-copy", p); a.Text == b.Text {
			t.Errorf("clone has the same %s %q", p, a.Text)
		}
	}
	if d.QID == 0 {
		t.Error("clone qid 0")
	}
	if _, err := s.Clone("my-new-vm", "my-new-vm-copy", "x"); err == nil {
		t.Error("clone onto an existing name")
	}
	// Removing what others depend on is refused, with the reason.
	for name, want := range map[string]string{"debian-12": "template of sys-firewall", "sys-firewall": "netvm of my-new-vm", "dom0": "dom0 cannot"} {
		if _, err := s.Remove(name); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("remove %s: %v, want %q", name, err, want)
		}
	}
	if _, err := s.Remove("my-new-vm-copy"); err != nil {
		t.Fatal(err)
	}
	if _, ok := s.Lookup("my-new-vm-copy"); ok {
		t.Error("removed VM still there")
	}
	// A running VM is not removed.
	s.Runtime = func(n string) (Runtime, bool) {
		return Runtime{State: "Running", XID: 3, StubdomXID: -1}, n == "my-new-vm"
	}
	if _, err := s.Remove("my-new-vm"); err == nil || !strings.Contains(err.Error(), "running") {
		t.Errorf("remove running: %v", err)
	}
	if got := get(t, s, "my-new-vm", "xid").Text; got != "3" {
		t.Errorf("xid = %s", got)
	}
	if err := s.SetProp("my-new-vm", "netvm", "none"); err == nil {
		t.Error("netvm of a running VM changed")
	}
}

func TestDispVM(t *testing.T) {
	s := newTestSystem(t)
	mustCreate(t, s, CreateSpec{Name: "dvm", Class: AppVM, Label: "red", Template: "debian-12", Props: []Prop{{"template_for_dispvms", "True"}}})
	d := mustCreate(t, s, CreateSpec{Name: "disp1", Class: DispVM, Label: "red", Template: "dvm"})
	if d.DispID != 1 {
		t.Errorf("dispid %d", d.DispID)
	}
	if got := get(t, s, "disp1", "ip").Text; got != "10.138.0.1" {
		t.Errorf("disp ip %s", got)
	}
	if err := s.SetProp("dvm", "template_for_dispvms", "False"); err == nil {
		t.Error("dvm stopped being a DispVM template while disp1 uses it")
	}
}

func TestParseClassAndLabels(t *testing.T) {
	for in, want := range map[string]Class{"StandaloneVM": StandaloneVM, "standalonevm": StandaloneVM, "TemplateVM": TemplateVM} {
		if got, err := ParseClass(in); err != nil || got != want {
			t.Errorf("ParseClass(%q) = %v, %v", in, got, err)
		}
	}
	if l, err := LookupLabel("Green"); err != nil || l.ColorHex() != "0x73d216" {
		t.Errorf("green = %+v %v", l, err)
	}
}
