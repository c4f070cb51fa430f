package vm

import (
	"errors"
	"fmt"
	"sort"
	"strconv"
)

// The global settings (qubes-prefs) that VM defaults follow, besides the
// ones named in system.go.
const (
	GlobalDefaultQrexecTimeout   = "default_qrexec_timeout"
	GlobalDefaultShutdownTimeout = "default_shutdown_timeout"
	GlobalDefaultPool            = "default_pool"
	GlobalDefaultPoolKernel      = "default_pool_kernel"
	GlobalDefaultPoolPrivate     = "default_pool_private"
	GlobalDefaultPoolRoot        = "default_pool_root"
	GlobalDefaultPoolVolatile    = "default_pool_volatile"
)

// The storage pools qvm has: one for VM images, one for VM kernels (their
// names are Qubes' for the same pools).
const (
	ImagePool  = "varlibqubes"
	KernelPool = "linux-kernel"
)

// ErrNoSuchGlobal is returned (wrapped) for a global setting that does not
// exist.
var ErrNoSuchGlobal = errors.New("no such global property")

// global describes one system-wide setting.
type global struct {
	name string
	kind Kind
	doc  string
	// def is the value when the setting is not set.
	def func(s *System) string
	// check validates and canonicalises a value to set.
	check func(s *System, value string) (string, error)
}

// globals is the table of qubes-prefs settings.
var globals = []*global{
	{name: GlobalDefaultDispVM, kind: KindVM, doc: "Default DispVM template for the VMs' disposables",
		def:   func(*System) string { return "" },
		check: func(s *System, v string) (string, error) { return checkDispVMTemplateRef(s.blankView(), v) }},
	{name: GlobalDefaultKernel, kind: KindString, doc: "Kernel VMs use by default",
		def:   func(s *System) string { return s.newestKernel() },
		check: func(s *System, v string) (string, error) { return checkKernel(s.blankView(), v) }},
	{name: GlobalDefaultNetVM, kind: KindVM, doc: "VM that provides network to VMs by default (qvm: dom0 when not set)",
		def: func(*System) string { return Dom0Name }, check: checkGlobalNetVM},
	{name: GlobalDefaultPool, kind: KindString, doc: "Storage pool of new volumes",
		def: func(*System) string { return ImagePool }, check: checkPool(ImagePool)},
	{name: GlobalDefaultPoolKernel, kind: KindString, doc: "Storage pool of kernel volumes",
		def: func(*System) string { return KernelPool }, check: checkPool(KernelPool)},
	{name: GlobalDefaultPoolPrivate, kind: KindString, doc: "Storage pool of new private volumes (default: default_pool)",
		def: poolDefault, check: checkPool(ImagePool)},
	{name: GlobalDefaultPoolRoot, kind: KindString, doc: "Storage pool of new root volumes (default: default_pool)",
		def: poolDefault, check: checkPool(ImagePool)},
	{name: GlobalDefaultPoolVolatile, kind: KindString, doc: "Storage pool of new volatile volumes (default: default_pool)",
		def: poolDefault, check: checkPool(ImagePool)},
	{name: GlobalDefaultQrexecTimeout, kind: KindInt, doc: "Default seconds to wait for a VM's agent at start (VMs' qrexec_timeout)",
		def: func(*System) string { return "60" }, check: checkGlobalInt(1, 86400)},
	{name: GlobalDefaultShutdownTimeout, kind: KindInt, doc: "Default seconds to wait for a VM's clean shutdown (VMs' shutdown_timeout)",
		def: func(*System) string { return "60" }, check: checkGlobalInt(1, 86400)},
	{name: GlobalDefaultTemplate, kind: KindVM, doc: "TemplateVM of new AppVMs by default",
		def: func(*System) string { return "" }, check: checkGlobalTemplate},
	{name: GlobalManagementDispVM, kind: KindVM, doc: "DispVM template that manages VMs by default",
		def:   func(*System) string { return defaultManagementDispVM },
		check: func(s *System, v string) (string, error) { return checkDispVMTemplateRef(s.blankView(), v) }},
}

// globalIndex finds a global setting by name; filled at init, then only read.
var globalIndex map[string]*global

func init() {
	globalIndex = make(map[string]*global, len(globals))
	for _, g := range globals {
		globalIndex[g.name] = g
	}
}

// blankView is a view of no VM, for the checks globals share with properties.
func (s *System) blankView() *View { return &View{sys: s, d: &Definition{}} }

func poolDefault(s *System) string { return s.globalValue(GlobalDefaultPool) }

func checkPool(only string) func(*System, string) (string, error) {
	return func(_ *System, v string) (string, error) {
		if v != only {
			return "", fmt.Errorf("pool %q does not exist: qvm has one pool for these volumes, %q", v, only)
		}
		return v, nil
	}
}

func checkGlobalInt(min, max int) func(*System, string) (string, error) {
	return func(s *System, v string) (string, error) { return checkIntRange(min, max)(s.blankView(), v) }
}

func checkGlobalNetVM(s *System, value string) (string, error) {
	if isNone(value) {
		return "", nil
	}
	v, err := s.View(value)
	if err != nil {
		return "", err
	}
	if !v.ProvidesNetwork() {
		return "", fmt.Errorf("%s does not provide network: set `qvm-prefs %s provides_network True` first", value, value)
	}
	return v.d.Name, nil
}

func checkGlobalTemplate(s *System, value string) (string, error) {
	if isNone(value) {
		return "", nil
	}
	v, err := s.View(value)
	if err != nil {
		return "", err
	}
	if v.d.Class != TemplateVM {
		return "", fmt.Errorf("%s is a %s, not a TemplateVM", value, v.d.Class)
	}
	return v.d.Name, nil
}

func lookupGlobal(name string) (*global, error) {
	g, ok := globalIndex[name]
	if !ok {
		return nil, fmt.Errorf("%w %q (qubes-prefs --help-properties lists them)", ErrNoSuchGlobal, name)
	}
	return g, nil
}

// GlobalNames lists the global settings, sorted.
func GlobalNames() []string {
	names := make([]string, 0, len(globals))
	for _, g := range globals {
		names = append(names, g.name)
	}
	sort.Strings(names)
	return names
}

// GlobalDocs describes the global settings for --help-properties, sorted.
func GlobalDocs() []PropertyDoc {
	out := make([]PropertyDoc, 0, len(globals))
	for _, g := range globals {
		out = append(out, PropertyDoc{Name: g.name, Doc: g.doc})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// GetGlobal returns a global setting with its mark (D when not set).
func (s *System) GetGlobal(name string) (Value, error) {
	g, err := lookupGlobal(name)
	if err != nil {
		return Value{}, err
	}
	if val, ok := s.Global[name]; ok {
		return Value{Text: val, Mark: MarkSet, Kind: g.kind}, nil
	}
	return Value{Text: g.def(s), Mark: MarkDefault, Kind: g.kind}, nil
}

// globalValue is a global setting's effective value ("" for none).
func (s *System) globalValue(name string) string {
	val, err := s.GetGlobal(name)
	if err != nil {
		panic(fmt.Sprintf("vm: no global %q", name))
	}
	return val.Text
}

// SetGlobal checks and sets a global setting.
func (s *System) SetGlobal(name, value string) error {
	g, err := lookupGlobal(name)
	if err != nil {
		return err
	}
	canon, err := g.check(s, value)
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	old, had := s.Global[name]
	if s.Global == nil {
		s.Global = map[string]string{}
	}
	s.Global[name] = canon
	if err := s.Check(); err != nil {
		if had {
			s.Global[name] = old
		} else {
			delete(s.Global, name)
		}
		return err
	}
	return nil
}

// ResetGlobal returns a global setting to its default.
func (s *System) ResetGlobal(name string) error {
	if _, err := lookupGlobal(name); err != nil {
		return err
	}
	old, had := s.Global[name]
	delete(s.Global, name)
	if err := s.Check(); err != nil {
		if had {
			s.Global[name] = old
		}
		return err
	}
	return nil
}

// validateGlobals checks the stored global settings as a store loads them:
// known names, printable bounded values, numbers that parse. References
// to VMs are checked by Check; the kernel is not (it depends on the host).
func (s *System) validateGlobals() error {
	for name, val := range s.Global {
		g, err := lookupGlobal(name)
		if err != nil {
			return err
		}
		if len(val) > maxStoredValue {
			return fmt.Errorf("global %s is %d bytes long: at most %d", name, len(val), maxStoredValue)
		}
		for i := 0; i < len(val); i++ {
			if c := val[i]; c < 0x20 || c > 0x7e {
				return fmt.Errorf("global %s has a control or non-ASCII byte 0x%02x", name, c)
			}
		}
		if g.kind == KindInt {
			if _, err := strconv.Atoi(val); err != nil {
				return fmt.Errorf("global %s: %q is not a whole number", name, val)
			}
		}
	}
	return nil
}

// defaultNetVM is the netvm VMs get by default: the global setting, else
// dom0 (qvm: in a single-host setup dom0 is the network backend).
func (s *System) defaultNetVM() string { return s.globalValue(GlobalDefaultNetVM) }
