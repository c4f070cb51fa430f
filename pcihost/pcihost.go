// Package pcihost describes the host's PCI devices as dom0's kernel sees
// them in sysfs, and says which of them can be given to a VM: not a host
// bridge (the machine's own), and not one a dom0 driver is using (unless
// the user insists).
package pcihost

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
)

// SysfsDevices is where the kernel lists PCI devices.
const SysfsDevices = "/sys/bus/pci/devices"

// Device is one PCI device of the host.
type Device struct {
	// BDF is its address as bus:dev.func (PCI domain 0), e.g. "00:1f.2".
	BDF string
	// Class is the 24-bit class code (class, subclass, prog-if).
	Class uint32
	// Vendor and ID are the vendor and device ids.
	Vendor, ID uint16
	// Driver is the dom0 driver bound to it, "" when none.
	Driver string
}

// ErrNoDevice is returned (wrapped) for an address the host has no device at.
var ErrNoDevice = errors.New("no such PCI device on this host")

// ErrNotAssignable is returned (wrapped) for a device a VM must not get
// without --force: a host bridge, or one a dom0 driver uses.
var ErrNotAssignable = errors.New("device not assignable")

// Lookup reads the device at bdf from sysfs.
func Lookup(bdf string) (Device, error) {
	dir := filepath.Join(SysfsDevices, "0000:"+bdf)
	if _, err := os.Stat(dir); err != nil {
		return Device{}, fmt.Errorf("device %s: %w (%v): see lspci for the devices there", bdf, ErrNoDevice, err)
	}
	d := Device{BDF: bdf}
	var err error
	if d.Class, err = readHex(dir, "class", 24); err != nil {
		return d, err
	}
	v, err := readHex(dir, "vendor", 16)
	if err != nil {
		return d, err
	}
	id, err := readHex(dir, "device", 16)
	if err != nil {
		return d, err
	}
	d.Vendor, d.ID = uint16(v), uint16(id)
	if link, err := os.Readlink(filepath.Join(dir, "driver")); err == nil {
		d.Driver = filepath.Base(link)
	}
	return d, nil
}

// List reads every device of PCI domain 0 from sysfs, sorted by address
// (qvm names devices as BB:DD.F, without the domain).
func List() ([]Device, error) {
	ents, err := os.ReadDir(SysfsDevices)
	if err != nil {
		return nil, fmt.Errorf("list PCI devices: %w", err)
	}
	var out []Device
	for _, e := range ents {
		bdf, ok := strings.CutPrefix(e.Name(), "0000:")
		if !ok || !bdfRE.MatchString(bdf) {
			continue
		}
		d, err := Lookup(bdf)
		if err != nil {
			return nil, err
		}
		out = append(out, d)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].BDF < out[j].BDF })
	return out, nil
}

var bdfRE = regexp.MustCompile(`\A[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]\z`)

func readHex(dir, name string, bits int) (uint32, error) {
	b, err := os.ReadFile(filepath.Join(dir, name))
	if err != nil {
		return 0, fmt.Errorf("PCI device %s: %w", filepath.Base(dir), err)
	}
	n, err := strconv.ParseUint(strings.TrimPrefix(strings.TrimSpace(string(b)), "0x"), 16, bits)
	if err != nil {
		return 0, fmt.Errorf("PCI device %s: %s %q: %w", filepath.Base(dir), name, b, err)
	}
	return uint32(n), nil
}

// PCI class codes (the upper 16 bits of Class).
const (
	classHostBridge = 0x0600
)

// pciback's driver names: a device bound to it is held for passthrough.
var passthroughDrivers = map[string]bool{"pciback": true, "xen-pciback": true}

// Assignable says whether the device can be given to a VM: a host bridge
// never can (it is the machine's own, and its config space is the
// chipset's), a device a dom0 driver has bound only with force (dom0 would
// lose it while running).
func (d Device) Assignable(force bool) error {
	if d.Class>>8 == classHostBridge {
		return fmt.Errorf("device %s is a host bridge (class %06x): it is the machine's own and cannot be given to a VM: %w", d.BDF, d.Class, ErrNotAssignable)
	}
	if d.Driver != "" && !passthroughDrivers[d.Driver] && !force {
		return fmt.Errorf("device %s is in use by dom0 (driver %s): detach it from dom0 first (or add --force to assign it anyway; dom0 loses it when the VM starts): %w", d.BDF, d.Driver, ErrNotAssignable)
	}
	return nil
}
