package vm

import (
	"errors"
	"reflect"
	"testing"
)

// TestDispVMTakesTemplateSettings: a DispVM starts with what its DispVM
// template has set (an offline template makes offline disposables), its
// features but the preload ones, and its tags; what the create itself sets
// wins; defaults still follow the template.
func TestDispVMTakesTemplateSettings(t *testing.T) {
	s := newTestSystem(t)
	mustCreate(t, s, CreateSpec{Name: "dvm", Class: AppVM, Label: "red", Template: "debian-12",
		Props: []Prop{{"template_for_dispvms", "True"}, {"netvm", ""}, {"memory", "800"}, {"vcpus", "3"}, {"mac", "00:16:3e:5e:6c:99"}}})
	if err := s.SetFeature("dvm", "service.cups", "1"); err != nil {
		t.Fatal(err)
	}
	if err := s.SetFeature("dvm", "preload-dispvm-max", "2"); err != nil {
		t.Fatal(err)
	}
	if err := s.AddTag("dvm", "offline"); err != nil {
		t.Fatal(err)
	}
	d := mustCreate(t, s, CreateSpec{Name: "disp1", Class: DispVM, Label: "orange", Template: "dvm", Props: []Prop{{"vcpus", "1"}}})
	for prop, want := range map[string]Value{
		"netvm":              {Text: "", Mark: MarkSet, Kind: KindVM},
		"memory":             {Text: "800", Mark: MarkSet, Kind: KindInt},
		"vcpus":              {Text: "1", Mark: MarkSet, Kind: KindInt},
		"label":              {Text: "orange", Mark: MarkSet, Kind: KindLabel},
		"ip":                 {Text: "", Mark: MarkDefault},
		"mac":                {Text: DerivedMAC(d.QID), Mark: MarkDefault},
		"default_dispvm":     {Text: "dvm", Mark: MarkDefault, Kind: KindVM},
		"kernel":             {Text: "6.1.0-28-amd64", Mark: MarkDefault},
		"include_in_backups": {Text: "True", Mark: MarkDefault, Kind: KindBool},
	} {
		if got := get(t, s, "disp1", prop); got != want {
			t.Errorf("disp1 %s = %+v, want %+v", prop, got, want)
		}
	}
	if !reflect.DeepEqual(d.Features, map[string]string{"service.cups": "1"}) {
		t.Errorf("features %v", d.Features)
	}
	if !reflect.DeepEqual(d.Tags, []string{"offline"}) {
		t.Errorf("tags %v", d.Tags)
	}
	if v, _ := s.View("disp1"); v.Networked() {
		t.Errorf("disp1 of an offline template is networked")
	}
	if err := s.SetProp("disp1", "auto_cleanup", "True"); err != nil {
		t.Fatal(err)
	}
	if got := get(t, s, "disp1", "include_in_backups"); got.Text != "False" {
		t.Errorf("include_in_backups of an auto_cleanup DispVM = %+v", got)
	}
	// The template is in use by its disposable, once (its default_dispvm
	// default is not counted again).
	if _, err := s.Remove("dvm"); !errors.As(err, new(*InUseError)) || err.Error() != "dvm is in use: template of disp1; change those first" {
		t.Errorf("remove dvm: %v", err)
	}
}

func TestTags(t *testing.T) {
	s := newTestSystem(t)
	for _, tag := range []string{"b-tag", "a_tag", "b-tag"} {
		if err := s.AddTag("sys-firewall", tag); err != nil {
			t.Fatal(err)
		}
	}
	d, _ := s.Get("sys-firewall")
	if !reflect.DeepEqual(d.Tags, []string{"a_tag", "b-tag"}) {
		t.Errorf("tags %v", d.Tags)
	}
	for _, bad := range []string{"", "a b", "x/y", "é"} {
		if err := s.AddTag("sys-firewall", bad); err == nil {
			t.Errorf("tag %q accepted", bad)
		}
	}
	if err := s.RemoveTag("sys-firewall", "nope"); err != nil {
		t.Errorf("removing an absent tag: %v", err)
	}
	c, err := s.Clone("sys-firewall", "copy", "00000000-0000-4000-8000-999999999999")
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(c.Tags, d.Tags) {
		t.Errorf("clone tags %v", c.Tags)
	}
	s.RemoveTag("sys-firewall", "a_tag")
	s.RemoveTag("sys-firewall", "b-tag")
	if d.Tags != nil {
		t.Errorf("tags after removing all: %#v", d.Tags)
	}
	d.Tags = []string{"b", "a"}
	if err := s.Validate(); err == nil {
		t.Errorf("unsorted tags validated")
	}
}

func TestGlobalTimeoutsAreDefaults(t *testing.T) {
	s := newTestSystem(t)
	if got := get(t, s, "debian-12", "qrexec_timeout"); got.Text != "60" || got.Mark != MarkDefault {
		t.Errorf("qrexec_timeout %+v", got)
	}
	if err := s.SetGlobal(GlobalDefaultQrexecTimeout, "120"); err != nil {
		t.Fatal(err)
	}
	if err := s.SetGlobal(GlobalDefaultShutdownTimeout, "30"); err != nil {
		t.Fatal(err)
	}
	// The template follows the global; the AppVM its template.
	for _, vm := range []string{"debian-12", "sys-firewall"} {
		if got := get(t, s, vm, "qrexec_timeout"); got.Text != "120" {
			t.Errorf("%s qrexec_timeout %+v", vm, got)
		}
		if got := get(t, s, vm, "shutdown_timeout"); got.Text != "30" {
			t.Errorf("%s shutdown_timeout %+v", vm, got)
		}
	}
	for name, val := range map[string]string{GlobalDefaultQrexecTimeout: "0", GlobalDefaultPool: "lvm", GlobalDefaultPoolRoot: "x", "bogus": "1"} {
		if err := s.SetGlobal(name, val); err == nil {
			t.Errorf("qubes-prefs %s %s accepted", name, val)
		}
	}
	if err := s.SetGlobal(GlobalDefaultPool, ImagePool); err != nil {
		t.Error(err)
	}
	if got, _ := s.GetGlobal(GlobalDefaultPoolPrivate); got.Text != ImagePool || got.Mark != MarkDefault {
		t.Errorf("default_pool_private %+v", got)
	}
	s.Global[GlobalDefaultShutdownTimeout] = "x"
	if err := s.Validate(); err == nil {
		t.Errorf("a stored non-number timeout validated")
	}
}
