package vm

import (
	"errors"
	"fmt"
	"sort"
	"strings"
)

// Prop is one property assignment, as given on a command line.
type Prop struct {
	Name  string
	Value string
}

// CreateSpec describes a VM to create.
type CreateSpec struct {
	Name  string
	Class Class
	Label string
	// Template is the template of an AppVM or DispVM (empty: the system's
	// default_template), or for a StandaloneVM or TemplateVM the
	// TemplateVM to copy (its settings here, its images by the caller).
	Template string
	// Props are set in order after the defaults, each checked.
	Props []Prop
	// UUID is the new VM's UUID (the caller generates it).
	UUID string
}

// ErrRunning is returned for changes that need the VM halted.
var ErrRunning = errors.New("VM is running")

// Create adds a new VM to the system after checking every rule. On error
// the system is unchanged.
func (s *System) Create(spec CreateSpec) (*Definition, error) {
	if err := ValidateName(spec.Name); err != nil {
		return nil, err
	}
	if _, ok := s.Lookup(spec.Name); ok {
		return nil, fmt.Errorf("a VM named %q already exists: choose another name (or remove it with qvm-remove)", spec.Name)
	}
	if spec.Class == AdminVM {
		return nil, fmt.Errorf("class AdminVM cannot be created: dom0 always exists")
	}
	if _, err := ParseClass(string(spec.Class)); err != nil {
		return nil, err
	}
	if spec.Label == "" {
		return nil, fmt.Errorf("a label is required: add --label COLOUR (one of red, orange, yellow, green, gray, blue, purple, black)")
	}
	label, err := LookupLabel(spec.Label)
	if err != nil {
		return nil, err
	}
	if !uuidRE.MatchString(spec.UUID) {
		return nil, fmt.Errorf("internal error: UUID %q for new VM %s is not a lower-case UUID", spec.UUID, spec.Name)
	}
	d := &Definition{Name: spec.Name, Class: spec.Class, UUID: spec.UUID,
		Props: map[string]string{"label": label.Name}}

	src, err := s.createSource(spec)
	if err != nil {
		return nil, err
	}
	switch {
	case spec.Class == DispVM:
		// A disposable takes over what its DispVM template has set: its
		// properties (an offline template makes offline disposables), its
		// features (but the template's own preload settings) and its tags.
		d.Props["template"] = src.d.Name
		for k, val := range src.d.Props {
			if p, ok := propertyIndex[k]; ok && p.appliesTo(DispVM) && !p.readOnly && copiedProp(k) {
				d.Props[k] = val
			}
		}
		for k, val := range src.d.Features {
			if !strings.HasPrefix(k, "preload-dispvm") {
				if d.Features == nil {
					d.Features = map[string]string{}
				}
				d.Features[k] = val
			}
		}
		d.Tags = append([]string(nil), src.d.Tags...)
		if len(d.Tags) == 0 {
			d.Tags = nil
		}
	case spec.Class.NeedsTemplate():
		d.Props["template"] = src.d.Name
	case src != nil:
		// A standalone (or template) made from a template starts as its
		// copy: same settings, same features.
		for k, val := range src.d.Props {
			if copiedProp(k) {
				d.Props[k] = val
			}
		}
		d.Features = cloneMap(src.d.Features)
		d.Tags = append([]string(nil), src.d.Tags...)
		if len(d.Tags) == 0 {
			d.Tags = nil
		}
	}

	if d.QID, err = s.freeNumber(false); err != nil {
		return nil, err
	}
	if spec.Class == DispVM {
		if d.DispID, err = s.freeNumber(true); err != nil {
			return nil, err
		}
	}
	s.add(d)
	for _, p := range spec.Props {
		if err := s.SetProp(d.Name, p.Name, p.Value); err != nil {
			s.delete(d.Name)
			return nil, fmt.Errorf("--property %s=%s: %w", p.Name, p.Value, err)
		}
	}
	if err := s.Check(); err != nil {
		s.delete(d.Name)
		return nil, err
	}
	return d, nil
}

// createSource resolves the template of a new VM.
func (s *System) createSource(spec CreateSpec) (*View, error) {
	name := spec.Template
	if name == "" {
		if !spec.Class.NeedsTemplate() {
			return nil, nil
		}
		if spec.Class == AppVM {
			name = s.global(GlobalDefaultTemplate)
		} else {
			name = s.global(GlobalDefaultDispVM)
		}
		if name == "" {
			return nil, fmt.Errorf("a %s needs a template: add --template NAME (or set a default with `qubes-prefs %s NAME`)",
				spec.Class, map[Class]string{AppVM: GlobalDefaultTemplate, DispVM: GlobalDefaultDispVM}[spec.Class])
		}
	}
	t, err := s.View(name)
	if err != nil {
		return nil, fmt.Errorf("template: %w", err)
	}
	switch spec.Class {
	case DispVM:
		if t.d.Class != AppVM || !t.Bool("template_for_dispvms") {
			return nil, fmt.Errorf("%s is not a DispVM template: use an AppVM with template_for_dispvms True", name)
		}
	default:
		if t.d.Class != TemplateVM {
			return nil, fmt.Errorf("%s is a %s, not a TemplateVM: --template must name a TemplateVM", name, t.d.Class)
		}
	}
	return t, nil
}

// copiedProp reports whether a set property is carried over to a copy
// (clone, or standalone from template). Identity and addresses are not:
// the copy gets its own qid, IP and MAC.
func copiedProp(name string) bool {
	switch name {
	case "ip", "ip6", "mac", "label", "template", "template_for_dispvms", "installed_by_rpm", "backup_timestamp":
		return false
	}
	return true
}

// freeNumber returns the lowest free qid (or dispid) whose derived IP no
// VM holds.
func (s *System) freeNumber(disp bool) (int, error) {
	used := make(map[int]bool, len(s.VMs))
	addrs := make(map[string]bool, len(s.VMs))
	for _, d := range s.VMs {
		if disp {
			if d.Class == DispVM {
				used[d.DispID] = true
			}
		} else {
			used[d.QID] = true
		}
		addrs[addressOf(d)] = true
	}
	for n := 1; n <= MaxQID; n++ {
		if !used[n] && !addrs[DerivedIP(n, disp)] {
			return n, nil
		}
	}
	what := "qid"
	if disp {
		what = "dispid"
	}
	return 0, fmt.Errorf("no free %s: all %d are in use; remove unused VMs", what, MaxQID)
}

// Clone adds a copy of VM src named dst: same settings and features, its
// own qid, uuid, IP and MAC. The caller copies the images.
func (s *System) Clone(src, dst, uuid string) (*Definition, error) {
	sv, err := s.View(src)
	if err != nil {
		return nil, err
	}
	if sv.d.Class == AdminVM {
		return nil, fmt.Errorf("dom0 cannot be cloned")
	}
	if err := ValidateName(dst); err != nil {
		return nil, err
	}
	if _, ok := s.Lookup(dst); ok {
		return nil, fmt.Errorf("a VM named %q already exists: choose another name for the clone", dst)
	}
	if !uuidRE.MatchString(uuid) {
		return nil, fmt.Errorf("internal error: UUID %q for clone %s is not a lower-case UUID", uuid, dst)
	}
	d := &Definition{Name: dst, Class: sv.d.Class, UUID: uuid, Props: map[string]string{},
		Features: cloneMap(sv.d.Features), PCI: append([]PCIDevice(nil), sv.d.PCI...)}
	if len(sv.d.Tags) > 0 {
		d.Tags = append([]string(nil), sv.d.Tags...)
	}
	for k, v := range sv.d.Props {
		if copiedProp(k) || k == "label" || k == "template" || k == "template_for_dispvms" {
			d.Props[k] = v
		}
	}
	if d.QID, err = s.freeNumber(false); err != nil {
		return nil, err
	}
	if d.Class == DispVM {
		if d.DispID, err = s.freeNumber(true); err != nil {
			return nil, err
		}
	}
	s.add(d)
	if err := s.Check(); err != nil {
		s.delete(dst)
		return nil, err
	}
	return d, nil
}

// Remove deletes a VM that nothing depends on. The caller removes its
// images after the store change is durable. A VM in use fails with an
// *InUseError.
func (s *System) Remove(name string) (*Definition, error) {
	v, err := s.View(name)
	if err != nil {
		return nil, err
	}
	if v.d.Class == AdminVM {
		return nil, fmt.Errorf("dom0 cannot be removed")
	}
	if s.IsRunning(name) {
		return nil, fmt.Errorf("%s is running: shut it down first (qvm-shutdown --wait %s)", name, name)
	}
	if deps := s.Dependents(name); len(deps) > 0 {
		return nil, &InUseError{VM: name, Uses: deps}
	}
	s.delete(name)
	return v.d, nil
}

// Dependency is one place a VM is referred to: a property of another VM
// (Holder names it) or a global setting (Holder is "").
type Dependency struct {
	Holder string
	Prop   string
}

// String says it in words, e.g. "template of work", "global default_netvm".
func (d Dependency) String() string {
	if d.Holder == "" {
		return fmt.Sprintf("global %s (qubes-prefs)", d.Prop)
	}
	return fmt.Sprintf("%s of %s", d.Prop, d.Holder)
}

// InUseError is the error of removing a VM that others refer to.
type InUseError struct {
	VM   string
	Uses []Dependency
}

func (e *InUseError) Error() string {
	words := make([]string, len(e.Uses))
	for i, d := range e.Uses {
		words[i] = d.String()
	}
	return fmt.Sprintf("%s is in use: %s; change those first", e.VM, strings.Join(words, "; "))
}

// refProps are the VM properties that refer to another VM.
var refProps = []string{"template", "netvm", "default_dispvm", "management_dispvm"}

// Dependents lists what refers to the VM, with their effective values (a
// default counts, as in Qubes): the global settings first, then each
// VM's properties, by VM name.
func (s *System) Dependents(name string) []Dependency {
	var deps []Dependency
	for _, g := range GlobalNames() {
		if val, _ := s.GetGlobal(g); val.Kind == KindVM && val.Text == name {
			deps = append(deps, Dependency{Prop: g})
		}
	}
	for _, other := range s.Names() {
		if other == name {
			continue
		}
		v, _ := s.View(other)
		for _, p := range refProps {
			if prop := propertyIndex[p]; prop.appliesTo(v.d.Class) && v.Str(p) == name {
				if _, set := v.d.Props[p]; p == "default_dispvm" && v.d.Class == DispVM && !set {
					// A DispVM's default is its template, counted already.
					continue
				}
				deps = append(deps, Dependency{Holder: other, Prop: p})
			}
		}
	}
	return deps
}

func (s *System) dispVMTemplateUsers(name string) []string {
	var users []string
	for _, d := range s.VMs {
		if d.Name == name {
			continue
		}
		if (d.Class == DispVM && d.Props["template"] == name) || d.Props["default_dispvm"] == name || d.Props["management_dispvm"] == name {
			users = append(users, d.Name)
		}
	}
	for _, g := range []string{GlobalDefaultDispVM, GlobalManagementDispVM} {
		if s.Global[g] == name {
			users = append(users, "qubes-prefs "+g)
		}
	}
	sort.Strings(users)
	return users
}

// SetProp checks and sets a property. On error the system is unchanged.
func (s *System) SetProp(name, prop, value string) error {
	v, err := s.View(name)
	if err != nil {
		return err
	}
	p, err := lookupProperty(v.d.Class, prop)
	if err != nil {
		return err
	}
	if p.readOnly || p.check == nil {
		return fmt.Errorf("property %s is read-only", prop)
	}
	if err := s.needsHalted(v, prop); err != nil {
		return err
	}
	canon, err := p.check(v, value)
	if err != nil {
		return fmt.Errorf("%s: %w", prop, err)
	}
	return s.change(v.d, func() {
		if v.d.Props == nil {
			v.d.Props = map[string]string{}
		}
		v.d.Props[prop] = canon
	})
}

// ResetProp returns a property to its default. On error the system is
// unchanged.
func (s *System) ResetProp(name, prop string) error {
	v, err := s.View(name)
	if err != nil {
		return err
	}
	p, err := lookupProperty(v.d.Class, prop)
	if err != nil {
		return err
	}
	if p.readOnly || p.check == nil {
		return fmt.Errorf("property %s is read-only", prop)
	}
	if p.def == nil && (prop == "label" || prop == "template") {
		return fmt.Errorf("property %s has no default: set a value instead", prop)
	}
	if err := s.needsHalted(v, prop); err != nil {
		return err
	}
	return s.change(v.d, func() { delete(v.d.Props, prop) })
}

// needsHalted refuses changes a running VM cannot take.
func (s *System) needsHalted(v *View, prop string) error {
	switch prop {
	case "template", "netvm", "virt_mode", "ip", "mac":
		if s.IsRunning(v.d.Name) {
			return fmt.Errorf("cannot change %s of %s while it runs: %w; shut it down first", prop, v.d.Name, ErrRunning)
		}
	}
	return nil
}

// change applies f to d and keeps it only if the system stays consistent.
func (s *System) change(d *Definition, f func()) error {
	saved := d.Clone()
	f()
	if err := s.Check(); err != nil {
		*d = *saved
		return err
	}
	return nil
}

// Check verifies the rules that span VMs: unique names, qids and
// addresses, existing templates and netvms, no netvm loops, memory
// limits.
func (s *System) Check() error {
	names := map[string]bool{}
	qids := map[int]string{}
	addrs := map[string]string{}
	for _, d := range s.VMs {
		if names[d.Name] {
			return fmt.Errorf("two VMs are named %q", d.Name)
		}
		names[d.Name] = true
		if other, ok := qids[d.QID]; ok {
			return fmt.Errorf("VMs %s and %s have the same qid %d", other, d.Name, d.QID)
		}
		qids[d.QID] = d.Name
		a := addressOf(d)
		if other, ok := addrs[a]; ok {
			return fmt.Errorf("VMs %s and %s would have the same IP %s: set another ip", other, d.Name, a)
		}
		addrs[a] = d.Name
	}
	for _, d := range s.VMs {
		v := s.viewOf(d)
		if d.Class.NeedsTemplate() {
			if t := v.Template(); t == nil {
				return fmt.Errorf("VM %s: its template %q does not exist", d.Name, d.Props["template"])
			}
		}
		if n := v.Str("netvm"); n != "" {
			nv := v.NetVM()
			if nv == nil {
				return fmt.Errorf("VM %s: its netvm %q does not exist", d.Name, n)
			}
			if !nv.ProvidesNetwork() {
				return fmt.Errorf("VM %s: its netvm %s does not provide network", d.Name, n)
			}
			seen := map[string]bool{d.Name: true}
			for cur := nv; cur != nil; cur = cur.NetVM() {
				if seen[cur.d.Name] {
					return fmt.Errorf("VM %s: netvm loop through %s", d.Name, cur.d.Name)
				}
				seen[cur.d.Name] = true
			}
		}
		if d.Class == AdminVM {
			continue
		}
		if mm := v.Int("maxmem"); mm != 0 && mm < v.Int("memory") {
			return fmt.Errorf("VM %s: maxmem %d MiB is less than memory %d MiB: raise maxmem (or set it to 0)", d.Name, mm, v.Int("memory"))
		}
		if v.HasPCI() && v.VirtMode() == PVH {
			return fmt.Errorf("VM %s: virt_mode pvh is not possible with PCI devices assigned", d.Name)
		}
	}
	return nil
}

// AttachPCI assigns a PCI device to a VM persistently. The VM's default
// virt_mode becomes hvm; an explicit pvh is refused.
func (s *System) AttachPCI(name string, dev PCIDevice) error {
	v, err := s.View(name)
	if err != nil {
		return err
	}
	if v.d.Class == AdminVM {
		return fmt.Errorf("PCI devices belong to dom0 already")
	}
	for _, p := range v.d.PCI {
		if p.BDF == dev.BDF {
			return fmt.Errorf("device dom0:%s is already assigned to %s (detach it first to change its options)", strings.Replace(dev.BDF, ":", "_", 1), name)
		}
	}
	if s.IsRunning(name) {
		return fmt.Errorf("%s is running: qvm assigns PCI devices for the next start; shut it down first", name)
	}
	return s.change(v.d, func() { v.d.PCI = append(v.d.PCI, dev) })
}

// DetachPCI removes a VM's PCI device assignment.
func (s *System) DetachPCI(name, bdf string) error {
	v, err := s.View(name)
	if err != nil {
		return err
	}
	if s.IsRunning(name) {
		return fmt.Errorf("%s is running: shut it down before detaching its PCI devices", name)
	}
	for i, p := range v.d.PCI {
		if p.BDF == bdf {
			return s.change(v.d, func() { v.d.PCI = append(v.d.PCI[:i:i], v.d.PCI[i+1:]...) })
		}
	}
	return fmt.Errorf("device dom0:%s is not assigned to %s", strings.Replace(bdf, ":", "_", 1), name)
}
