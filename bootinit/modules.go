package bootinit

import (
	"fmt"

	"github.com/u-root/u-root/pkg/kmodule"
)

// Module is a kernel module to load, with its parameters
// (e.g. "unrestricted=1"), in the form insmod takes them.
type Module struct {
	Name   string
	Params string
}

// LoadModules loads each module and the modules it depends on, as listed in
// /lib/modules/$(uname -r)/modules.dep (the image build runs depmod).
// Modules already loaded or built into the kernel are skipped.
func LoadModules(mods []Module) error {
	p, err := kmodule.NewProber(kmodule.ProbeOpts{})
	if err != nil {
		return fmt.Errorf("load kernel modules: %w", err)
	}
	for _, m := range mods {
		if err := p.Probe(m.Name, m.Params); err != nil {
			return fmt.Errorf("load kernel module %s: %w", m.Name, err)
		}
	}
	return nil
}
