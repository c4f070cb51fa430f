package vm

import (
	"errors"
	"fmt"
	"regexp"
	"sort"
	"strconv"
	"strings"
)

// property describes one VM property: its type, the classes that have it,
// how its default is derived and how a value to set is checked.
type property struct {
	name    string
	kind    Kind
	doc     string
	classes []Class // nil: every class but AdminVM
	// readOnly properties are listed but refused by set and reset.
	readOnly bool
	// compute gives the value of identity and derived properties.
	compute func(v *View) (string, Mark)
	// def gives the default; ok false means unset.
	def func(v *View) (string, bool)
	// check validates and canonicalises a value to set.
	check func(v *View, s string) (string, error)
}

func (p *property) appliesTo(c Class) bool {
	if p.classes == nil {
		return c != AdminVM
	}
	for _, x := range p.classes {
		if x == c {
			return true
		}
	}
	return false
}

var allClasses = []Class{AdminVM, AppVM, TemplateVM, StandaloneVM, DispVM}

// properties is the table of every VM property.
var properties = []*property{
	{name: "autostart", kind: KindBool, doc: "Start the VM when the host boots", def: constant("False"), check: checkBool},
	{name: "auto_cleanup", kind: KindBool, doc: "Remove the DispVM when it halts", classes: []Class{DispVM}, def: constant("False"), check: checkBool},
	{name: "backup_timestamp", kind: KindInt, doc: "Time of the last backup (seconds since the epoch)", check: checkIntRange(0, 1<<62)},
	{name: "debug", kind: KindBool, doc: "Debug mode: verbose console, no auto-restart", def: constant("False"), check: checkBool},
	{name: "default_dispvm", kind: KindVM, doc: "Default DispVM template for this VM's disposables", classes: allClasses,
		def: defaultDispVM, check: checkDispVMTemplateRef},
	{name: "default_user", kind: KindString, doc: "Default user in the VM", def: fromTemplate("default_user", "user"), check: checkUser},
	{name: "dispid", kind: KindInt, doc: "Number of the DispVM (its IP comes from it)", classes: []Class{DispVM}, readOnly: true,
		compute: func(v *View) (string, Mark) { return strconv.Itoa(v.d.DispID), MarkSet }},
	{name: "dns", kind: KindString, doc: "DNS servers the VM uses", readOnly: true, compute: derived(func(v *View) string {
		if !v.Networked() {
			return ""
		}
		return PrimaryDNS + " " + SecondaryDNS
	})},
	{name: "gateway", kind: KindString, doc: "Gateway for VMs using this one as netvm", readOnly: true, compute: derived(func(v *View) string {
		if !v.Bool("provides_network") {
			return ""
		}
		return v.Str("visible_ip")
	})},
	{name: "gateway6", kind: KindString, doc: "IPv6 gateway for VMs using this one as netvm", readOnly: true, compute: derived(func(v *View) string {
		if !v.Bool("provides_network") || !v.IPv6() {
			return ""
		}
		return v.Str("visible_ip6")
	})},
	{name: "icon", kind: KindString, doc: "Icon name (class and label)", classes: allClasses, readOnly: true, compute: derived(iconOf)},
	{name: "include_in_backups", kind: KindBool, doc: "Include the VM in backups", def: func(v *View) (string, bool) {
		// A DispVM that goes when it halts is not worth a backup.
		return boolText(!(v.d.Class == DispVM && v.Bool("auto_cleanup"))), true
	}, check: checkBool},
	{name: "installed_by_rpm", kind: KindBool, doc: "The VM was installed by a package", def: constant("False"), check: checkBool},
	{name: "ip", kind: KindString, doc: "IPv4 address of the VM", def: func(v *View) (string, bool) {
		if !v.Networked() {
			return "", true
		}
		return DerivedIP(v.addrNumber(), v.d.Class == DispVM), true
	}, check: checkIP},
	{name: "ip6", kind: KindString, doc: "IPv6 address of the VM (with the ipv6 feature)", def: func(v *View) (string, bool) {
		if !v.IPv6() {
			return "", true
		}
		return DerivedIP6(v.addrNumber(), v.d.Class == DispVM), true
	}, check: func(v *View, s string) (string, error) { return ParseIPv6(s) }},
	{name: "kernel", kind: KindString, doc: "Kernel used by PV/PVH VMs ('' boots from the VM's own disk)", def: defaultKernel, check: checkKernel},
	{name: "kernelopts", kind: KindString, doc: "Kernel command line options", def: defaultKernelOpts, check: checkKernelOpts},
	{name: "keyboard_layout", kind: KindString, doc: "Keyboard layout (layout+variant+options)", classes: allClasses, def: fromTemplate("keyboard_layout", "us++"), check: checkKeyboard},
	{name: "klass", kind: KindString, doc: "Class of the VM", classes: allClasses, readOnly: true,
		compute: func(v *View) (string, Mark) { return string(v.d.Class), MarkDefault }},
	{name: "label", kind: KindLabel, doc: "Colour label", classes: allClasses, check: checkLabel},
	{name: "mac", kind: KindString, doc: "MAC address of the VM's network interface", def: func(v *View) (string, bool) {
		return DerivedMAC(v.d.QID), true
	}, check: func(v *View, s string) (string, error) { return ParseMAC(s) }},
	{name: "management_dispvm", kind: KindVM, doc: "DispVM template used to manage this VM", def: func(v *View) (string, bool) {
		return v.sys.globalValue(GlobalManagementDispVM), true
	}, check: checkDispVMTemplateRef},
	{name: "maxmem", kind: KindInt, doc: "Maximum memory in MiB (0 disables memory balancing)", def: defaultMaxmem, check: checkMaxmem},
	{name: "memory", kind: KindInt, doc: "Initial memory in MiB", def: fromTemplate("memory", "400"), check: checkMemory},
	{name: "name", kind: KindString, doc: "Name of the VM", classes: allClasses, readOnly: true,
		compute: func(v *View) (string, Mark) { return v.d.Name, MarkSet }},
	{name: "netvm", kind: KindVM, doc: "VM that provides network to this one (none: disconnected)", def: func(v *View) (string, bool) {
		g := v.sys.defaultNetVM()
		if g == v.d.Name || v.d.Class == TemplateVM {
			// Templates are offline by default (they update through a proxy).
			return "", true
		}
		return g, true
	}, check: checkNetVM},
	{name: "provides_network", kind: KindBool, doc: "Other VMs can use this one as netvm", def: constant("False"), check: checkProvidesNetwork},
	{name: "qid", kind: KindInt, doc: "Internal number of the VM", classes: allClasses, readOnly: true,
		compute: func(v *View) (string, Mark) { return strconv.Itoa(v.d.QID), MarkSet }},
	{name: "qrexec_timeout", kind: KindInt, doc: "Seconds to wait for the VM's agent at start", def: fromTemplateOrGlobal("qrexec_timeout", GlobalDefaultQrexecTimeout), check: checkIntRange(1, 86400)},
	{name: "shutdown_timeout", kind: KindInt, doc: "Seconds to wait for a clean shutdown", def: fromTemplateOrGlobal("shutdown_timeout", GlobalDefaultShutdownTimeout), check: checkIntRange(1, 86400)},
	{name: "start_time", kind: KindString, doc: "When the VM was started (runtime)", readOnly: true,
		compute: derived(func(v *View) string { return v.Runtime().StartTime })},
	{name: "stubdom_mem", kind: KindInt, doc: "Memory of the HVM's stubdomain in MiB, besides the guest's video RAM (unset: 112)", check: checkIntRange(1, 1<<20)},
	{name: "stubdom_xid", kind: KindInt, doc: "Domain id of the HVM's stubdomain (-1 when none)", readOnly: true,
		compute: derived(func(v *View) string { return strconv.Itoa(v.Runtime().StubdomXID) })},
	{name: "template", kind: KindVM, doc: "Template the VM is based on", classes: []Class{AppVM, DispVM}, check: checkTemplate},
	{name: "template_for_dispvms", kind: KindBool, doc: "This AppVM can be a DispVM template", classes: []Class{AppVM}, def: constant("False"), check: checkTemplateForDispVMs},
	{name: "updateable", kind: KindBool, doc: "The VM keeps changes to its root (has no template)", readOnly: true,
		compute: derived(func(v *View) string { return boolText(!v.d.Class.NeedsTemplate()) })},
	{name: "uuid", kind: KindString, doc: "UUID of the VM", classes: allClasses, readOnly: true,
		compute: func(v *View) (string, Mark) { return v.d.UUID, MarkSet }},
	{name: "vcpus", kind: KindInt, doc: "Number of virtual CPUs", def: fromTemplate("vcpus", "2"), check: checkIntRange(1, 512)},
	{name: "virt_mode", kind: KindString, doc: "Virtualisation mode: hvm, pv or pvh", def: defaultVirtMode, check: checkVirtMode},
	{name: "visible_gateway", kind: KindString, doc: "Default gateway of the VM", readOnly: true, compute: derived(func(v *View) string {
		if n := v.NetVM(); n != nil {
			return n.gatewayForClients()
		}
		return ""
	})},
	{name: "visible_gateway6", kind: KindString, doc: "IPv6 default gateway of the VM", readOnly: true, compute: derived(func(v *View) string {
		if n := v.NetVM(); n != nil && v.IPv6() {
			return n.gateway6ForClients()
		}
		return ""
	})},
	{name: "visible_ip", kind: KindString, doc: "IPv4 address the VM sees", readOnly: true, compute: derived(func(v *View) string { return v.Str("ip") })},
	{name: "visible_ip6", kind: KindString, doc: "IPv6 address the VM sees", readOnly: true, compute: derived(func(v *View) string { return v.Str("ip6") })},
	{name: "visible_netmask", kind: KindString, doc: "Netmask the VM sees", readOnly: true, compute: derived(func(v *View) string {
		if !v.Networked() {
			return ""
		}
		return VisibleNetmask
	})},
	{name: "xid", kind: KindInt, doc: "Xen domain id (-1 when halted)", classes: allClasses, readOnly: true,
		compute: derived(func(v *View) string { return strconv.Itoa(v.Runtime().XID) })},
}

// propertyIndex finds a property by name. It is filled once, at init,
// and only read afterwards.
var propertyIndex map[string]*property

func init() {
	propertyIndex = make(map[string]*property, len(properties))
	for _, p := range properties {
		propertyIndex[p.name] = p
	}
}

// ErrNoSuchProperty is returned (wrapped) for a property the VM's class
// does not have.
var ErrNoSuchProperty = errors.New("no such property")

func lookupProperty(c Class, name string) (*property, error) {
	p, ok := propertyIndex[name]
	if !ok || !p.appliesTo(c) {
		return nil, fmt.Errorf("%w %q for a %s (qvm-prefs --help-properties lists them)", ErrNoSuchProperty, name, c)
	}
	return p, nil
}

// PropertyDoc describes a property for --help-properties.
type PropertyDoc struct {
	Name     string
	Doc      string
	ReadOnly bool
}

// PropertyDocs lists the properties of a class with their descriptions.
func PropertyDocs(c Class) []PropertyDoc {
	var out []PropertyDoc
	for _, p := range properties {
		if p.appliesTo(c) {
			out = append(out, PropertyDoc{p.name, p.doc, p.readOnly})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// PropertyKind returns the kind of a property of a class.
func PropertyKind(c Class, name string) (Kind, bool) {
	p, err := lookupProperty(c, name)
	if err != nil {
		return 0, false
	}
	return p.kind, true
}

func constant(s string) func(*View) (string, bool) {
	return func(*View) (string, bool) { return s, true }
}

func derived(f func(v *View) string) func(v *View) (string, Mark) {
	return func(v *View) (string, Mark) { return f(v), MarkDefault }
}

// fromTemplateOrGlobal defaults to the template's value, else to a global
// setting.
func fromTemplateOrGlobal(name, global string) func(v *View) (string, bool) {
	return func(v *View) (string, bool) {
		if t := v.Template(); t != nil {
			return t.Str(name), true
		}
		return v.sys.globalValue(global), true
	}
}

// fromTemplate defaults to the template's value, else fallback.
func fromTemplate(name, fallback string) func(v *View) (string, bool) {
	return func(v *View) (string, bool) {
		if t := v.Template(); t != nil {
			return t.Str(name), true
		}
		return fallback, true
	}
}

func boolText(b bool) string {
	if b {
		return "True"
	}
	return "False"
}

// addrNumber is what the VM's addresses derive from: qid, or dispid.
func (v *View) addrNumber() int {
	if v.d.Class == DispVM {
		return v.d.DispID
	}
	return v.d.QID
}

func (v *View) gatewayForClients() string {
	if v.d.Class == AdminVM {
		return Dom0Gateway
	}
	return v.Str("gateway")
}

func (v *View) gateway6ForClients() string {
	if v.d.Class == AdminVM {
		return Dom0Gateway6
	}
	return v.Str("gateway6")
}

func iconOf(v *View) string {
	prefix := map[Class]string{AdminVM: "adminvm", AppVM: "appvm", TemplateVM: "templatevm",
		StandaloneVM: "standalonevm", DispVM: "dispvm"}[v.d.Class]
	if v.d.Class != AdminVM && v.Bool("provides_network") {
		prefix = "servicevm"
	}
	return prefix + "-" + v.Str("label")
}

// defaultDispVM: a DispVM's disposables come from its own DispVM template
// (so that they cannot take another network path); other VMs follow the
// global setting.
func defaultDispVM(v *View) (string, bool) {
	if v.d.Class == DispVM {
		return v.d.Props["template"], true
	}
	return v.sys.globalValue(GlobalDefaultDispVM), true
}

func defaultKernel(v *View) (string, bool) {
	if t := v.Template(); t != nil {
		return t.Str("kernel"), true
	}
	return v.sys.globalValue(GlobalDefaultKernel), true
}

// newestKernel picks the installed kernel with the highest version-like name.
func (s *System) newestKernel() string {
	best := ""
	for name := range s.Host.Kernels {
		if best == "" || versionLess(best, name) {
			best = name
		}
	}
	return best
}

// versionLess compares dotted version strings numerically where possible.
func versionLess(a, b string) bool {
	as, bs := strings.FieldsFunc(a, isVersionSep), strings.FieldsFunc(b, isVersionSep)
	for i := 0; i < len(as) && i < len(bs); i++ {
		x, errx := strconv.Atoi(as[i])
		y, erry := strconv.Atoi(bs[i])
		switch {
		case errx == nil && erry == nil && x != y:
			return x < y
		case (errx != nil || erry != nil) && as[i] != bs[i]:
			return as[i] < bs[i]
		}
	}
	return len(as) < len(bs)
}

func isVersionSep(r rune) bool { return r == '.' || r == '-' || r == '_' }

// DefaultKernelOpts is used when the kernel has no default of its own.
const DefaultKernelOpts = "swiotlb=2048"

func defaultKernelOpts(v *View) (string, bool) {
	kernel := v.Str("kernel")
	if kernel == "" {
		return "", true
	}
	if t := v.Template(); t != nil {
		return t.Str("kernelopts"), true
	}
	if k, ok := v.sys.Host.Kernels[kernel]; ok && k.DefaultOpts != "" {
		return k.DefaultOpts, true
	}
	return DefaultKernelOpts, true
}

func defaultVirtMode(v *View) (string, bool) {
	if v.HasPCI() {
		return string(HVM), true
	}
	if t := v.Template(); t != nil {
		return t.Str("virt_mode"), true
	}
	return string(PVH), true
}

// memoryBalancing reports whether qmemman-style balancing can apply:
// not with PCI devices, not for HVMs (they announce no memory hotplug).
func (v *View) memoryBalancing() bool {
	return !v.HasPCI() && v.VirtMode() != HVM
}

func defaultMaxmem(v *View) (string, bool) {
	if !v.memoryBalancing() {
		return "0", true
	}
	mem := v.Int("memory")
	// A VM given a kernel runs Linux: Linux balloons up to 10x its
	// initial memory; other systems get 4000 MiB.
	maxmem := 4000
	if v.Str("kernel") != "" {
		maxmem = 10 * mem
	}
	if v.sys.Host.MemoryMiB > 0 && maxmem > v.sys.Host.MemoryMiB/2 {
		maxmem = v.sys.Host.MemoryMiB / 2
	}
	if t := v.Template(); t != nil {
		if s, ok := t.d.Props["maxmem"]; ok {
			n, _ := parseInt(s)
			maxmem = n
		}
	}
	if maxmem != 0 && maxmem < mem {
		maxmem = mem
	}
	return strconv.Itoa(maxmem), true
}

// ---- checks ----

func parseInt(s string) (int, error) {
	n, err := strconv.ParseInt(strings.TrimSpace(s), 10, 64)
	if err != nil {
		return 0, err
	}
	return int(n), nil
}

func checkIntRange(min, max int) func(*View, string) (string, error) {
	return func(v *View, s string) (string, error) {
		n, err := parseInt(s)
		if err != nil {
			return "", fmt.Errorf("%q is not a whole number", s)
		}
		if n < min || n > max {
			return "", fmt.Errorf("%d is out of range: use %d to %d", n, min, max)
		}
		return strconv.Itoa(n), nil
	}
}

// ParseBool reads a boolean the way Qubes does.
func ParseBool(s string) (bool, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "1", "yes", "true", "on":
		return true, nil
	case "0", "no", "false", "off":
		return false, nil
	}
	return false, fmt.Errorf("%q is not a boolean: use True or False", s)
}

func checkBool(v *View, s string) (string, error) {
	b, err := ParseBool(s)
	if err != nil {
		return "", err
	}
	return boolText(b), nil
}

var userRE = regexp.MustCompile(`\A[a-z_][a-z0-9_-]{0,31}\z`)

func checkUser(v *View, s string) (string, error) {
	if !userRE.MatchString(s) {
		return "", fmt.Errorf("invalid user name %q: lower-case letters, digits, '_' and '-', starting with a letter or '_'", s)
	}
	return s, nil
}

var kbdRE = regexp.MustCompile(`\A[a-zA-Z0-9_(),-]*\+[a-zA-Z0-9_(),-]*\+[a-zA-Z0-9_(),:-]*\z`)

func checkKeyboard(v *View, s string) (string, error) {
	if !kbdRE.MatchString(s) {
		return "", fmt.Errorf("invalid keyboard layout %q: use LAYOUT+VARIANT+OPTIONS, e.g. us++ or de+nodeadkeys+", s)
	}
	return s, nil
}

func checkLabel(v *View, s string) (string, error) {
	l, err := LookupLabel(s)
	if err != nil {
		return "", err
	}
	return l.Name, nil
}

func checkKernel(v *View, s string) (string, error) {
	if s == "" {
		return "", nil
	}
	if strings.ContainsAny(s, "/\x00") || s == "." || s == ".." {
		return "", fmt.Errorf("invalid kernel name %q: give the name of an installed kernel, or '' to boot from the VM's own disk", s)
	}
	if _, ok := v.sys.Host.Kernels[s]; !ok {
		return "", fmt.Errorf("kernel %q is not installed (installed: %s): install it into the kernels directory or use '' to boot from the VM's own disk", s, kernelList(v.sys.Host.Kernels))
	}
	return s, nil
}

func kernelList(m map[string]KernelInfo) string {
	if len(m) == 0 {
		return "none"
	}
	names := make([]string, 0, len(m))
	for k := range m {
		names = append(names, k)
	}
	sort.Strings(names)
	return strings.Join(names, ", ")
}

// MaxKernelOpts bounds kernelopts, in bytes (Linux's command line on x86
// takes 2048 with qvm's common options).
const MaxKernelOpts = 512

func checkKernelOpts(v *View, s string) (string, error) {
	if strings.ContainsAny(s, "\x00\n") {
		return "", fmt.Errorf("kernel options must be one line")
	}
	if len(s) > MaxKernelOpts {
		return "", fmt.Errorf("kernel options are %d bytes long: use at most %d", len(s), MaxKernelOpts)
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c > 0x7e {
			return "", fmt.Errorf("kernel options have a control or non-ASCII byte 0x%02x at offset %d: use printable ASCII", c, i)
		}
	}
	return s, nil
}

func checkVirtMode(v *View, s string) (string, error) {
	m, err := ParseVirtMode(s)
	if err != nil {
		return "", err
	}
	if m == PVH && v.HasPCI() {
		return "", fmt.Errorf("virt_mode pvh is not possible with PCI devices assigned: use hvm (or pv), or detach the devices with qvm-pci")
	}
	return string(m), nil
}

func checkMemory(v *View, s string) (string, error) {
	out, err := checkIntRange(1, 1<<30)(v, s)
	if err != nil {
		return "", err
	}
	if mm, ok := v.d.Props["maxmem"]; ok {
		n, _ := parseInt(out)
		max, _ := parseInt(mm)
		if max != 0 && n > max {
			return "", fmt.Errorf("memory %d MiB is more than maxmem %d MiB: raise maxmem first (or set it to 0)", n, max)
		}
	}
	return out, nil
}

func checkMaxmem(v *View, s string) (string, error) {
	out, err := checkIntRange(0, 1<<30)(v, s)
	if err != nil {
		return "", err
	}
	n, _ := parseInt(out)
	if mem := v.Int("memory"); n != 0 && n < mem {
		return "", fmt.Errorf("maxmem %d MiB is less than memory %d MiB: use at least %d, or 0 to disable memory balancing", n, mem, mem)
	}
	return out, nil
}

func checkIP(v *View, s string) (string, error) {
	ip, err := ParseIPv4(s)
	if err != nil {
		return "", err
	}
	for _, d := range v.sys.VMs {
		if d != v.d && addressOf(d) == ip {
			return "", fmt.Errorf("IP %s is already %s's address: choose another", ip, d.Name)
		}
	}
	return ip, nil
}

// isNone reports a VM reference meaning "no VM".
func isNone(s string) bool {
	return s == "" || s == "none" || s == "None"
}

func checkNetVM(v *View, s string) (string, error) {
	if isNone(s) {
		return "", nil
	}
	n, err := v.sys.View(s)
	if err != nil {
		return "", err
	}
	if n.d == v.d {
		return "", fmt.Errorf("a VM cannot be its own netvm")
	}
	if !n.ProvidesNetwork() {
		return "", fmt.Errorf("VM %s does not provide network: set `qvm-prefs %s provides_network True` first, or choose another netvm", s, s)
	}
	// No loops: walking up from the new netvm must not reach this VM.
	seen := map[string]bool{}
	for cur := n; cur != nil; cur = cur.NetVM() {
		if cur.d == v.d {
			return "", fmt.Errorf("netvm %s would make a loop: %s already gets its network through %s", s, s, v.d.Name)
		}
		if seen[cur.d.Name] {
			break
		}
		seen[cur.d.Name] = true
	}
	return n.d.Name, nil
}

func checkProvidesNetwork(v *View, s string) (string, error) {
	out, err := checkBool(v, s)
	if err != nil || out == "True" {
		return out, err
	}
	if users := v.sys.netVMUsers(v.d.Name); len(users) > 0 {
		return "", fmt.Errorf("VMs %s use %s as netvm: change their netvm first", strings.Join(users, ", "), v.d.Name)
	}
	if v.sys.global(GlobalDefaultNetVM) == v.d.Name {
		return "", fmt.Errorf("%s is the default netvm: change it with `qubes-prefs default_netvm VM` first", v.d.Name)
	}
	return out, nil
}

// netVMUsers lists the VMs whose effective netvm is name.
func (s *System) netVMUsers(name string) []string {
	var users []string
	for _, d := range s.VMs {
		if d.Name != name && s.viewOf(d).Str("netvm") == name {
			users = append(users, d.Name)
		}
	}
	sort.Strings(users)
	return users
}

func checkTemplate(v *View, s string) (string, error) {
	t, err := v.sys.View(s)
	if err != nil {
		return "", fmt.Errorf("template: %w", err)
	}
	switch v.d.Class {
	case AppVM:
		if t.d.Class != TemplateVM {
			return "", fmt.Errorf("%s is a %s, not a TemplateVM: an AppVM's template must be a TemplateVM", s, t.d.Class)
		}
	case DispVM:
		if t.d.Class != AppVM || !t.Bool("template_for_dispvms") {
			return "", fmt.Errorf("%s is not a DispVM template: use an AppVM with template_for_dispvms True", s)
		}
	}
	return t.d.Name, nil
}

func checkDispVMTemplateRef(v *View, s string) (string, error) {
	if isNone(s) {
		return "", nil
	}
	t, err := v.sys.View(s)
	if err != nil {
		return "", err
	}
	if t.d.Class != AppVM || !t.Bool("template_for_dispvms") {
		return "", fmt.Errorf("%s is not a DispVM template: use an AppVM with template_for_dispvms True", s)
	}
	return t.d.Name, nil
}

func checkTemplateForDispVMs(v *View, s string) (string, error) {
	out, err := checkBool(v, s)
	if err != nil || out == "True" {
		return out, err
	}
	if users := v.sys.dispVMTemplateUsers(v.d.Name); len(users) > 0 {
		return "", fmt.Errorf("%s is used as DispVM template by %s: change that first", v.d.Name, strings.Join(users, ", "))
	}
	return out, nil
}
