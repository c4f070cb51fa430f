package lifecycle

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/qvm-project/qvm/domconfig"
	"github.com/qvm-project/qvm/loopdev"
	"github.com/qvm-project/qvm/qubesdb"
	"github.com/qvm-project/qvm/vm"
	"github.com/qvm-project/qvm/vmkernel"
	"github.com/qvm-project/qvm/volume"
	"github.com/qvm-project/qvm/xl"
)

// StartOptions are the choices of one start.
type StartOptions struct {
	// CDROM is a dom0 path of an ISO image or block device attached to
	// an HVM as its CD-ROM for this run.
	CDROM string
}

// Started is one domain a start created: the VM asked for, and any netvm
// it needed that was halted (started first, as Qubes does).
type Started struct {
	Name  string
	Domid uint32
}

// maxNetVMChain bounds the netvms started for one VM.
const maxNetVMChain = 8

// Start starts a halted VM, after its netvm if that is halted too. It
// returns the domains it created, netvms first. On error nothing it
// created is left: no domain, no keys, no run files.
func (m *Manager) Start(ctx context.Context, name string, opt StartOptions) ([]Started, error) {
	var started []Started
	err := m.Store.Locked(ctx, m.Host, func(sys *vm.System) error {
		if err := m.withRuntime(ctx, sys); err != nil {
			return err
		}
		live := map[string]uint32{}
		base := sys.Runtime
		sys.Runtime = func(n string) (vm.Runtime, bool) {
			if id, ok := live[n]; ok {
				return vm.Runtime{State: "Running", XID: int(id), StubdomXID: -1}, true
			}
			return base(n)
		}
		err := m.start(ctx, sys, name, opt, 0, func(s Started) {
			started = append(started, s)
			live[s.Name] = s.Domid
		})
		if err != nil {
			// Undo the netvms this call started for the VM.
			for i := len(started) - 1; i >= 0; i-- {
				m.kill(ctx, sys, started[i].Name, started[i].Domid)
			}
			started = nil
		}
		return err
	})
	return started, err
}

func (m *Manager) start(ctx context.Context, sys *vm.System, name string, opt StartOptions, depth int, done func(Started)) error {
	v, err := sys.View(name)
	if err != nil {
		return err
	}
	if v.Class() == vm.AdminVM {
		return fmt.Errorf("dom0 is always running")
	}
	if rt := v.Runtime(); rt.State != "Halted" {
		return fmt.Errorf("%s is already %s (domain %d)", name, lower(rt.State), rt.XID)
	}
	if n := v.NetVM(); n != nil && n.Class() != vm.AdminVM && n.Runtime().State == "Halted" {
		if depth >= maxNetVMChain {
			return fmt.Errorf("%s: netvm chain longer than %d", name, maxNetVMChain)
		}
		m.log().Info("starting netvm first", "vm", name, "netvm", n.Name())
		if err := m.start(ctx, sys, n.Name(), StartOptions{}, depth+1, done); err != nil {
			return fmt.Errorf("start %s's netvm %s: %w", name, n.Name(), err)
		}
	}
	for t := v.Template(); t != nil; t = t.Template() {
		if t.Runtime().State != "Halted" {
			return fmt.Errorf("cannot start %s while its template %s runs: its root image would be copied mid-change; shut %s down first", name, t.Name(), t.Name())
		}
	}
	if err := pciFree(sys, v); err != nil {
		return err
	}
	pi, err := m.Hyp.PhysInfo(ctx)
	if err != nil {
		return err
	}
	if err := pi.CheckType(xl.DomainType(v.Str("virt_mode"))); err != nil {
		return fmt.Errorf("cannot start %s: %w", name, err)
	}
	if need := uint64(v.Int("memory")); pi.FreeMemKiB > 0 && need*1024 > pi.FreeMemKiB {
		return fmt.Errorf("cannot start %s: not enough free memory: it needs %d MiB, the host has %d MiB free; lower its memory (qvm-prefs %s memory N) or stop other VMs",
			name, need, pi.FreeMemKiB/1024, name)
	}

	if k := v.Str("kernel"); k != "" && v.Str("virt_mode") != "hvm" {
		// Unpack the kernel once (the first start of each kernel pays
		// for it); without it the domain still boots, more slowly.
		path := filepath.Join(m.Store.KernelsDir(), k, domconfig.KernelFile)
		if _, err := vmkernel.Ensure(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			m.log().Warn("cannot unpack the VM kernel; Xen will decompress it at each start", "vm", name, "kernel", path, "err", err)
		}
	}
	in, cleanup, err := m.prepareFiles(ctx, v, opt)
	if err != nil {
		return fmt.Errorf("start %s: %w", name, err)
	}
	cfg, err := domconfig.Build(v, in)
	if err != nil {
		cleanup()
		return err
	}
	release, err := attachDisks(ctx, cfg)
	if err != nil {
		cleanup()
		return fmt.Errorf("start %s: %w", name, err)
	}
	domid, err := m.Hyp.CreatePaused(ctx, cfg)
	// The backend holds the loop devices now (or, on failure, nobody):
	// dropping ours lets the kernel detach them when the domain goes.
	release()
	if err != nil {
		cleanup()
		return fmt.Errorf("start %s: %w", name, err)
	}
	fail := func(err error) error {
		if derr := m.Hyp.Destroy(context.WithoutCancel(ctx), domid); derr != nil {
			err = errors.Join(err, fmt.Errorf("destroy domain %d: %w", domid, derr))
		}
		cleanup()
		return fmt.Errorf("start %s: %w", name, err)
	}
	keys, err := qubesdb.Keys(QubesDBInfo(v))
	if err != nil {
		return fail(err)
	}
	if err := qubesdb.Publish(ctx, m.XS, domid, keys); err != nil {
		return fail(err)
	}
	if err := m.Hyp.Unpause(ctx, domid); err != nil {
		return fail(err)
	}
	m.log().Info("started", "vm", name, "domid", domid)
	done(Started{Name: name, Domid: domid})
	return nil
}

// Config is the domain configuration a start of name would use
// (qvm-start --dry-run). It changes nothing.
func (m *Manager) Config(name string, opt StartOptions) (*xl.DomainConfig, error) {
	sys, err := m.Store.Load()
	if err != nil {
		return nil, err
	}
	sys.Host = m.Host
	v, err := sys.View(name)
	if err != nil {
		return nil, err
	}
	return domconfig.Build(v, m.inputs(v, opt))
}

// inputs names the files a run of v uses.
func (m *Manager) inputs(v *vm.View, opt StartOptions) domconfig.Inputs {
	dir := m.Store.VMDir(v.Name(), v.Class())
	in := domconfig.Inputs{
		Root:           volume.ImagePath(dir, volume.Root),
		Private:        volume.ImagePath(dir, volume.Private),
		Volatile:       volume.ImagePath(dir, volume.Volatile),
		KernelsDir:     m.Store.KernelsDir(),
		StubdomKernel:  m.StubdomKernel,
		StubdomRamdisk: m.StubdomRamdisk,
		CDROM:          opt.CDROM,
	}
	if !v.Class().HasOwnRoot() {
		in.Root = filepath.Join(dir, rootSnapshot)
	}
	if v.Class() == vm.DispVM {
		in.Private = filepath.Join(dir, privateSnapshot)
	}
	return in
}

// prepareFiles makes the files a run needs: snapshots of the template's
// root (and for a DispVM of its AppVM's private), and an empty volatile
// image. cleanup removes the snapshots again.
func (m *Manager) prepareFiles(ctx context.Context, v *vm.View, opt StartOptions) (domconfig.Inputs, func(), error) {
	in := m.inputs(v, opt)
	var made []string
	cleanup := func() {
		for _, p := range made {
			removeIfExists(p)
		}
	}
	snap := func(srcVM *vm.View, vol, dst string) error {
		src := volume.ImagePath(m.Store.VMDir(srcVM.Name(), srcVM.Class()), vol)
		if err := removeIfExists(dst); err != nil {
			return err
		}
		if _, err := volume.Copy(ctx, src, dst); err != nil {
			return fmt.Errorf("snapshot %s's %s image: %w", srcVM.Name(), vol, err)
		}
		made = append(made, dst)
		return nil
	}
	if !v.Class().HasOwnRoot() {
		t := v.Template()
		for t != nil && !t.Class().HasOwnRoot() {
			t = t.Template()
		}
		if t == nil {
			return in, cleanup, fmt.Errorf("%s has no template with a root image", v.Name())
		}
		if err := snap(t, volume.Root, in.Root); err != nil {
			cleanup()
			return in, cleanup, err
		}
	}
	if v.Class() == vm.DispVM {
		if err := snap(v.Template(), volume.Private, in.Private); err != nil {
			cleanup()
			return in, cleanup, err
		}
	}
	// The volatile image starts empty at every run, keeping its size.
	size := volume.DefaultVolatileSize
	if v.Class() == vm.DispVM {
		size = volume.DispVMVolatileSize
	}
	if u, err := volume.Stat(in.Volatile); err == nil {
		size = u.Size
	}
	if err := removeIfExists(in.Volatile); err != nil {
		cleanup()
		return in, cleanup, err
	}
	if err := volume.Create(in.Volatile, size); err != nil {
		cleanup()
		return in, cleanup, err
	}
	return in, cleanup, nil
}

// attachDisks puts each file image of cfg on a loop device (autoclear),
// for dom0's block backend, and points the disk at it. release drops this
// process's hold; call it once the domain exists (or failed to).
// CD-ROMs stay files: QEMU serves them.
func attachDisks(ctx context.Context, cfg *xl.DomainConfig) (release func(), err error) {
	var devs []*loopdev.Device
	release = func() {
		for _, d := range devs {
			d.Close()
		}
	}
	for i := range cfg.Disks {
		d := &cfg.Disks[i]
		if d.CDROM || d.Target == "" {
			continue
		}
		fi, err := os.Stat(d.Target)
		if err != nil {
			release()
			return nil, fmt.Errorf("disk %s: %w", d.Vdev, err)
		}
		if !fi.Mode().IsRegular() {
			continue
		}
		dev, err := loopdev.Attach(ctx, d.Target, !d.ReadWrite)
		if err != nil {
			release()
			return nil, fmt.Errorf("disk %s: %w", d.Vdev, err)
		}
		devs = append(devs, dev)
		d.Target, d.Backend, d.Script = dev.Path, xl.BackendPhy, domconfig.BlockScript
	}
	return release, nil
}

// removeRunFiles deletes what only a running VM needs.
func (m *Manager) removeRunFiles(v *vm.View) {
	dir := m.Store.VMDir(v.Name(), v.Class())
	for _, f := range []string{rootSnapshot, privateSnapshot} {
		if err := removeIfExists(filepath.Join(dir, f)); err != nil {
			m.log().Warn("cannot remove run file", "vm", v.Name(), "file", f, "err", err)
		}
	}
}

func lower(s string) string {
	if s == "" {
		return s
	}
	b := []byte(s)
	if b[0] >= 'A' && b[0] <= 'Z' {
		b[0] += 'a' - 'A'
	}
	return string(b)
}

// pciFree refuses to start a VM whose PCI device another running VM has.
func pciFree(sys *vm.System, v *vm.View) error {
	for _, p := range v.Def().PCI {
		for _, name := range sys.Names() {
			if name == v.Name() || !sys.IsRunning(name) {
				continue
			}
			other, _ := sys.Lookup(name)
			for _, q := range other.PCI {
				if q.BDF == p.BDF {
					return fmt.Errorf("cannot start %s: its PCI device %s is in use by running VM %s; shut %s down first", v.Name(), p.BDF, name, name)
				}
			}
		}
	}
	return nil
}
