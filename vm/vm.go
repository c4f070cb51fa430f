// Package vm is the VM model of qvm: the classes, properties, defaults,
// read-only rules and derivations (qid, uuid, IP, MAC, gateway, ...) that
// Qubes OS applies, over plain definitions that the store persists.
//
// A Definition holds only what was set explicitly; everything else is
// derived on demand by a View, so a default always follows the VM's
// template, netvm and the system's global settings.
package vm

import (
	"fmt"
	"strings"
)

// Class is a VM class, as Qubes names it.
type Class string

// The VM classes.
const (
	AdminVM      Class = "AdminVM"
	AppVM        Class = "AppVM"
	TemplateVM   Class = "TemplateVM"
	StandaloneVM Class = "StandaloneVM"
	DispVM       Class = "DispVM"
)

// Classes lists the classes a user can create, in the order help shows them.
var creatableClasses = []Class{AppVM, DispVM, StandaloneVM, TemplateVM}

// CreatableClasses returns the classes qvm-create accepts.
func CreatableClasses() []Class { return append([]Class(nil), creatableClasses...) }

// ParseClass returns the class named s (exact, as Qubes spells it, or in any
// letter case).
func ParseClass(s string) (Class, error) {
	for _, c := range append([]Class{AdminVM}, creatableClasses...) {
		if strings.EqualFold(string(c), s) {
			if c == AdminVM {
				return "", fmt.Errorf("class AdminVM cannot be created: dom0 always exists")
			}
			return c, nil
		}
	}
	return "", fmt.Errorf("unknown class %q: use one of AppVM, DispVM, StandaloneVM, TemplateVM", s)
}

// HasOwnRoot reports whether VMs of the class have their own root image
// (as opposed to a snapshot of their template's root).
func (c Class) HasOwnRoot() bool { return c == TemplateVM || c == StandaloneVM }

// NeedsTemplate reports whether VMs of the class are based on a template.
func (c Class) NeedsTemplate() bool { return c == AppVM || c == DispVM }

// VirtMode is how a VM is virtualised (its virt_mode property).
type VirtMode string

// The virtualisation modes Xen offers.
const (
	// HVM is full virtualisation with an emulated machine (QEMU).
	HVM VirtMode = "hvm"
	// PV is paravirtualisation: no hardware virtualisation, no emulator.
	PV VirtMode = "pv"
	// PVH is a PV guest in a hardware container, without an emulator.
	PVH VirtMode = "pvh"
)

// ParseVirtMode reads a virt_mode value in any letter case.
func ParseVirtMode(s string) (VirtMode, error) {
	switch m := VirtMode(strings.ToLower(strings.TrimSpace(s))); m {
	case HVM, PV, PVH:
		return m, nil
	}
	return "", fmt.Errorf("invalid virt_mode %q: use hvm, pv or pvh", s)
}

// PCIDevice is a PCI device assigned to a VM, in Qubes' dom0:BB_DD.F form.
type PCIDevice struct {
	// BDF is the device address as bus:dev.func, e.g. "00:1f.2".
	BDF string `json:"bdf"`
	// Permissive disables config-space write filtering.
	Permissive bool `json:"permissive,omitempty"`
	// NoStrictReset allows a device that cannot be reset on its own.
	NoStrictReset bool `json:"no_strict_reset,omitempty"`
}

// Definition is what the store keeps of one VM: its identity and the
// properties set explicitly. Everything else is derived (see View).
type Definition struct {
	Name  string `json:"name"`
	Class Class  `json:"class"`
	QID   int    `json:"qid"`
	UUID  string `json:"uuid"`
	// DispID numbers a DispVM among DispVMs (its IP comes from it).
	DispID int `json:"dispid,omitempty"`
	// Props are the explicitly set properties, in canonical string form.
	Props map[string]string `json:"props,omitempty"`
	// Features are free-form key/value settings (qvm-features).
	Features map[string]string `json:"features,omitempty"`
	// PCI lists the persistently assigned PCI devices.
	PCI []PCIDevice `json:"pci,omitempty"`
	// Tags are the VM's tags (qvm-tags), sorted.
	Tags []string `json:"tags,omitempty"`
}

// Clone returns a deep copy of d.
func (d *Definition) Clone() *Definition {
	c := *d
	c.Props = cloneMap(d.Props)
	c.Features = cloneMap(d.Features)
	c.PCI = append([]PCIDevice(nil), d.PCI...)
	c.Tags = append([]string(nil), d.Tags...)
	if len(c.Tags) == 0 {
		c.Tags = nil
	}
	return &c
}

func cloneMap(m map[string]string) map[string]string {
	if m == nil {
		return nil
	}
	c := make(map[string]string, len(m))
	for k, v := range m {
		c[k] = v
	}
	return c
}
