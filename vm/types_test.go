package vm

import (
	"errors"
	"strings"
	"testing"
)

// TestStrPanicsOnUnknownProperty: a typo in a property name is a loud
// programming error, while a property another class has reads as "".
func TestStrPanicsOnUnknownProperty(t *testing.T) {
	s := newTestSystem(t)
	dom0, err := s.View(Dom0Name)
	if err != nil {
		t.Fatal(err)
	}
	if got := dom0.Str("kernel"); got != "" {
		t.Errorf("dom0's kernel = %q, want empty (dom0 has no kernel property)", got)
	}
	if dom0.VirtMode() != "" {
		t.Errorf("dom0's virt mode = %q", dom0.VirtMode())
	}
	defer func() {
		if r := recover(); r == nil || !strings.Contains(r.(string), "kernl") {
			t.Errorf("Str of an unknown name: recovered %v, want a panic naming it", r)
		}
	}()
	dom0.Str("kernl")
}

// TestTypedStateAndMode: the live state and the virt mode are typed, and
// an unknown VM is ErrNoSuchVM.
func TestTypedStateAndMode(t *testing.T) {
	s := newTestSystem(t)
	if st := s.RuntimeOf("debian-12").State; st != Halted || s.IsRunning("debian-12") {
		t.Errorf("a VM the hypervisor does not know: %q", st)
	}
	if st := s.RuntimeOf(Dom0Name).State; st != Running {
		t.Errorf("dom0: %q", st)
	}
	s.Runtime = func(n string) (Runtime, bool) { return Runtime{State: Paused, XID: 3}, n == "sys-firewall" }
	if !s.IsRunning("sys-firewall") || Paused.Lower() != "paused" {
		t.Errorf("a paused VM counts as running (has a domain)")
	}
	v, _ := s.View("sys-firewall")
	if v.VirtMode() != PVH {
		t.Errorf("default virt mode %q, want pvh", v.VirtMode())
	}
	for in, want := range map[string]VirtMode{"HVM": HVM, " pv ": PV, "pvh": PVH} {
		if m, err := ParseVirtMode(in); err != nil || m != want {
			t.Errorf("ParseVirtMode(%q) = %q, %v", in, m, err)
		}
	}
	if _, err := ParseVirtMode("kvm"); err == nil || !strings.Contains(err.Error(), "invalid virt_mode") {
		t.Errorf("ParseVirtMode(kvm): %v", err)
	}
	if _, err := s.Get("nope"); !errors.Is(err, ErrNoSuchVM) || !strings.Contains(err.Error(), `"nope"`) {
		t.Errorf("Get(nope): %v", err)
	}
}

// TestFeatures: set, get, unset through the model, with names and values
// that can safely reach a terminal and xenstore.
func TestFeatures(t *testing.T) {
	s := newTestSystem(t)
	if err := s.SetFeature("debian-12", "service.cups", "1"); err != nil {
		t.Fatal(err)
	}
	if v, err := s.Feature("debian-12", "service.cups"); err != nil || v != "1" {
		t.Errorf("Feature = %q, %v", v, err)
	}
	if err := s.UnsetFeature("debian-12", "service.cups"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Feature("debian-12", "service.cups"); !errors.Is(err, ErrNoSuchFeature) {
		t.Errorf("unset feature: %v", err)
	}
	if err := s.UnsetFeature("debian-12", "never-set"); err != nil {
		t.Errorf("unset of a feature never set: %v", err)
	}
	for _, c := range []struct{ name, value, want string }{
		{"", "1", "empty"},
		{"bad name", "1", "invalid feature name"},
		{"x/y", "1", "invalid feature name"},
		{"ok", "line\nbreak", "control"},
		{"ok", "\x1b[31mred", "control"},
		{"ok", "caf\xc3\xa9", "non-ASCII"},
		{"ok", strings.Repeat("a", MaxFeatureLen+1), "at most"},
	} {
		if err := s.SetFeature("debian-12", c.name, c.value); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("SetFeature(%q, %q): %v, want an error saying %q", c.name, c.value, err, c.want)
		}
	}
	if err := s.SetFeature("nope", "a", "1"); !errors.Is(err, ErrNoSuchVM) {
		t.Errorf("feature of an unknown VM: %v", err)
	}
}

// TestKernelOptsRefusals: kernel options are one printable line of at most
// MaxKernelOpts bytes.
func TestKernelOptsRefusals(t *testing.T) {
	s := newTestSystem(t)
	mustCreate(t, s, CreateSpec{Name: "work", Class: AppVM, Label: "red", Template: "debian-12"})
	if err := s.SetProp("work", "kernelopts", "nopat swiotlb=2048"); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ val, want string }{
		{strings.Repeat("a", MaxKernelOpts+1), "at most 512"},
		{"quiet\x1b[2J", "control"},
		{"quiet\tsplash", "control"},
		{"caf\xc3\xa9", "non-ASCII"},
		{"a\nb", "one line"},
	} {
		if err := s.SetProp("work", "kernelopts", c.val); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("kernelopts %q: %v, want an error saying %q", c.val, err, c.want)
		}
	}
}
