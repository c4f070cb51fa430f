package pcihost

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/qvm-project/qvm/internal/testenv"
)

// hostDevices reads every device of this host.
func hostDevices(t *testing.T) []Device {
	t.Helper()
	ents, err := os.ReadDir(SysfsDevices)
	if err != nil || len(ents) == 0 {
		testenv.Missing(t, "no PCI devices in %s: %v", SysfsDevices, err)
	}
	var out []Device
	for _, e := range ents {
		name := e.Name()
		if !strings.HasPrefix(name, "0000:") {
			continue
		}
		d, err := Lookup(name[5:])
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, d)
	}
	return out
}

// TestAssignable checks the host's real devices: a host bridge is never
// assignable, a device with a dom0 driver only with force; the facts come
// from sysfs as the kernel reports them.
func TestAssignable(t *testing.T) {
	checked := 0
	for _, d := range hostDevices(t) {
		link, _ := os.Readlink(filepath.Join(SysfsDevices, "0000:"+d.BDF, "driver"))
		if filepath.Base(link) != d.Driver && link != "" {
			t.Errorf("%s: driver %q, sysfs says %q", d.BDF, d.Driver, link)
		}
		switch {
		case d.Class>>8 == 0x0600:
			checked++
			for _, force := range []bool{false, true} {
				if err := d.Assignable(force); !errors.Is(err, ErrNotAssignable) || !strings.Contains(err.Error(), "host bridge") {
					t.Errorf("host bridge %s (force %v): %v", d.BDF, force, err)
				}
			}
		case d.Driver != "":
			checked++
			if err := d.Assignable(false); !errors.Is(err, ErrNotAssignable) || !strings.Contains(err.Error(), "driver "+d.Driver) {
				t.Errorf("%s with driver %s: %v", d.BDF, d.Driver, err)
			}
			if err := d.Assignable(true); err != nil {
				t.Errorf("%s with force: %v", d.BDF, err)
			}
		default:
			checked++
			if err := d.Assignable(false); err != nil {
				t.Errorf("%s (no driver, class %06x): %v", d.BDF, d.Class, err)
			}
		}
	}
	if checked == 0 {
		testenv.Missing(t, "this host has no PCI device to check")
	}
	if _, err := Lookup("ff:1f.7"); !errors.Is(err, ErrNoDevice) {
		t.Errorf("Lookup of an absent device: %v", err)
	}
	// The rules, on made-up devices.
	if err := (Device{BDF: "00:14.0", Class: 0x0c0330, Driver: "pciback"}).Assignable(false); err != nil {
		t.Errorf("a device held by pciback: %v", err)
	}
}
