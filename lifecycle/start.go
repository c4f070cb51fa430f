package lifecycle

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"

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
	// an HVM as its CD-ROM for this run; with CDROMVM, a path in that VM.
	CDROM string
	// CDROMVM is the running VM that holds CDROM and serves it
	// (--cdrom=VM:/path); empty for a dom0 disc.
	CDROMVM string
}

// ErrAlreadyRunning matches the error Start returns for a VM that has a
// domain already (an *AlreadyRunningError).
var ErrAlreadyRunning = errors.New("VM is already running")

// AlreadyRunningError says which domain a VM to start already has.
type AlreadyRunningError struct {
	Name  string
	State vm.PowerState
	Domid int
}

func (e *AlreadyRunningError) Error() string {
	if e.Domid < 0 {
		return fmt.Sprintf("%s is already being started by another qvm command", e.Name)
	}
	return fmt.Sprintf("%s is already %s (domain %d)", e.Name, e.State.Lower(), e.Domid)
}

// Is makes the error match ErrAlreadyRunning.
func (e *AlreadyRunningError) Is(target error) bool { return target == ErrAlreadyRunning }

// Started is one domain a start created: the VM asked for, and any netvm
// it needed that was halted (started first, as Qubes does).
type Started struct {
	Name  string
	Domid uint32
}

// maxNetVMChain bounds the netvms started for one VM.
const maxNetVMChain = 8

// Start starts a halted VM, after its netvm if that is halted too, and
// leaves a monitor behind for each domain it created (when m.QVM is set;
// see monitor.go).
// It returns the domains it created, netvms first. On error nothing it
// created is left: no domain, no keys, no run files, no monitor.
//
// The store's writer lock is held only while the start is planned (the
// definitions read, every check made, the run lock of each VM to start
// taken); the domains are built without it, so starts of different VMs
// run in parallel and changes of other VMs go on. The run locks keep what
// a start uses from changing meanwhile: a VM being started counts as
// running (Transient) for every other command (see WithStarts).
func (m *Manager) Start(ctx context.Context, name string, opt StartOptions) ([]Started, error) {
	hyp, err := m.hypervisor()
	if err != nil {
		return nil, err
	}
	var plan []*planned
	err = m.Store.Locked(ctx, m.Host, func(sys *vm.System) error {
		if err := m.withRuntime(ctx, sys); err != nil {
			return err
		}
		sys.Runtime = WithStarts(m.Store, sys.Runtime)
		plan, err = m.plan(ctx, hyp, sys, name, opt)
		return err
	})
	if err != nil {
		return nil, err
	}
	var started []Started
	for i, p := range plan {
		if p.lock == nil {
			err = m.waitStarted(ctx, hyp, p.name)
		} else {
			var domid uint32
			if domid, err = m.start(ctx, hyp, p); err == nil {
				started = append(started, Started{Name: p.name, Domid: domid})
			}
		}
		if err != nil {
			for _, rest := range plan[i+1:] {
				rest.release()
			}
			if p.v.Name() != name {
				err = fmt.Errorf("start %s's netvm %s: %w", name, p.name, err)
			}
			break
		}
	}
	if err != nil {
		// Undo what this call started: the netvms it started for the VM.
		for i := len(started) - 1; i >= 0; i-- {
			if kerr := m.kill(ctx, hyp, nil, started[i].Name, started[i].Domid); kerr != nil {
				err = errors.Join(err, fmt.Errorf("undo the start of %s: %w", started[i].Name, kerr))
			}
		}
		return nil, err
	}
	return started, nil
}

// planned is one VM a start will start (lock set: this command holds its
// run lock) or wait for (lock nil: another command is starting it).
type planned struct {
	name string
	v    *vm.View
	opt  StartOptions
	lock *os.File
	// discWait is the qrexec_timeout of the VM serving the CD-ROM.
	discWait time.Duration
}

// release gives the run lock back when the VM will not be started.
func (p *planned) release() {
	if p.lock != nil {
		unix.Flock(int(p.lock.Fd()), unix.LOCK_UN)
		p.lock.Close()
		p.lock = nil
	}
}

// plan checks everything a start of name needs, under the store lock:
// the VM and each halted netvm up its chain, in the order to start them
// (netvms first), each with its run lock taken, or marked to be waited for
// when another command is starting it. On error no run lock stays taken.
func (m *Manager) plan(ctx context.Context, hyp Hypervisor, sys *vm.System, name string, opt StartOptions) (plan []*planned, err error) {
	defer func() {
		if err != nil {
			for _, p := range plan {
				p.release()
			}
			plan = nil
		}
	}()
	for depth, cur := 0, name; ; depth++ {
		v, err := sys.View(cur)
		if err != nil {
			return plan, err
		}
		if v.Class() == vm.AdminVM {
			return plan, fmt.Errorf("dom0 is always running")
		}
		o := StartOptions{}
		if cur == name {
			o = opt
		}
		p := &planned{name: cur, v: v, opt: o}
		if rt := v.Runtime(); rt.State != vm.Halted {
			switch {
			case cur == name:
				return plan, &AlreadyRunningError{Name: name, State: rt.State, Domid: rt.XID}
			case rt.State == vm.Transient:
				// A netvm another command is starting: wait for it.
				plan = append([]*planned{p}, plan...)
			}
			break // a netvm that runs, or will
		}
		if err := startable(ctx, hyp, sys, v); err != nil {
			return plan, err
		}
		if o.CDROMVM != "" {
			if p.discWait, err = discServer(sys, name, o); err != nil {
				return plan, err
			}
		}
		if p.lock, err = m.lockRun(cur); err != nil {
			if cur != name && errors.Is(err, ErrStarting) && Starting(m.Store)(cur) {
				// A netvm another command began to start after the
				// runtime was read: wait for it.
				plan = append([]*planned{p}, plan...)
				break
			}
			return plan, err
		}
		// The runtime was read before the lock was taken: a start of cur
		// that ended in between (its starter let go of the lock) left a
		// domain, which the lock now held shows for sure.
		if d, up, err := domainNamed(ctx, hyp, cur); err != nil || up {
			p.release()
			if err != nil || cur != name {
				return plan, err // a netvm that runs
			}
			return plan, &AlreadyRunningError{Name: name, State: PowerState(d.State), Domid: int(d.ID)}
		}
		plan = append([]*planned{p}, plan...)
		n := v.NetVM()
		if n == nil || n.Class() == vm.AdminVM {
			break
		}
		if depth+1 >= maxNetVMChain {
			return plan, fmt.Errorf("%s: netvm chain longer than %d", name, maxNetVMChain)
		}
		m.log().Info("starting netvm first", "vm", cur, "netvm", n.Name())
		cur = n.Name()
	}
	return plan, nil
}

// domainNamed returns the hypervisor's domain named name, if it has one
// (dom0 never counts).
func domainNamed(ctx context.Context, hyp Hypervisor, name string) (xl.DomainInfo, bool, error) {
	doms, err := hyp.List(ctx)
	if err != nil {
		return xl.DomainInfo{}, false, err
	}
	for _, d := range doms {
		if d.Name == name && d.ID != 0 {
			return d, true, nil
		}
	}
	return xl.DomainInfo{}, false, nil
}

// waitStarted waits until another command's start of a netvm is done:
// its domain runs (and its run lock is its monitor's). A start that
// fails is an error here too.
func (m *Manager) waitStarted(ctx context.Context, hyp Hypervisor, name string) error {
	starting := Starting(m.Store)
	for {
		doms, err := hyp.List(ctx)
		if err != nil {
			return err
		}
		for _, d := range doms {
			if d.Name == name && PowerState(d.State) == vm.Running {
				return nil
			}
		}
		if !starting(name) {
			// Its starter let go without a running domain.
			for _, d := range doms {
				if d.Name == name {
					return nil
				}
			}
			return fmt.Errorf("%s did not start (another qvm-start was starting it)", name)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for %s to start: %w", name, ctx.Err())
		case <-time.After(pollInterval):
		}
	}
}

// undoList is the cleanups of a start so far, run in reverse order if the
// start fails (like the store's OnAbort): each step that makes something
// registers its undo right after, so no exit path can forget one.
type undoList []func() error

func (u *undoList) add(f func() error) { *u = append(*u, f) }

// run undoes everything, last step first, and reports what could not be
// undone.
func (u undoList) run() error {
	var errs []error
	for i := len(u) - 1; i >= 0; i-- {
		errs = append(errs, u[i]())
	}
	return errors.Join(errs...)
}

// start starts one planned VM, whose run lock this command holds: files,
// monitor, domain, keys, unpause. It returns the domain.
func (m *Manager) start(ctx context.Context, hyp Hypervisor, p *planned) (domid uint32, err error) {
	v, name, opt := p.v, p.name, p.opt
	m.unpackKernel(ctx, v)

	var undo undoList
	defer func() {
		if err != nil {
			if uerr := undo.run(); uerr != nil {
				err = errors.Join(err, uerr)
			}
			err = fmt.Errorf("start %s: %w", name, err)
		}
	}()
	// The monitor first: from here on, whatever happens to this process,
	// the monitor takes down what it leaves (see monitor.go). It gets the
	// run lock; without a monitor, this command gives it back at the end.
	var mon *handoff
	if m.QVM != "" {
		mon, err = m.spawnMonitor(name, p.lock)
		p.lock = nil
		if err != nil {
			return 0, err
		}
		undo.add(mon.abort)
	} else {
		defer p.release()
	}
	in, err := m.prepareFiles(ctx, v, opt, &undo)
	if err != nil {
		return 0, err
	}
	if in.BootKernel, in.BootInitramfs, err = m.bootDiscs(ctx, v); err != nil {
		return 0, err
	}
	if opt.CDROMVM != "" {
		dd, err := m.serveDisc(ctx, opt.CDROMVM, opt.CDROM, p.discWait)
		if err != nil {
			return 0, err
		}
		disc := servedDisc{VM: opt.CDROMVM, Domid: dd.Backend, Dev: dd.Dev}
		// The monitor detaches the disc when the run ends (or the start
		// fails); without one, this command does on failure.
		if mon == nil {
			undo.add(func() error { m.detachDisc(ctx, disc, p.discWait); return nil })
		} else if err := mon.disc(disc); err != nil {
			m.detachDisc(ctx, disc, p.discWait)
			return 0, err
		}
		in.CDROMServed = dd
	}
	cfg, err := domconfig.Build(v, in)
	if err != nil {
		return 0, err
	}
	if dm := cfg.DeviceModel; dm.Stubdomain && dm.Override != "" {
		if err := unix.Access(dm.Override, unix.X_OK); err != nil {
			return 0, fmt.Errorf("the stubdomain's device model in dom0, %s: %w (make install puts qvm-stubdom-dm beside qvm; QVM_STUBDOM_DM names another)", dm.Override, err)
		}
	}
	release, err := attachDisks(ctx, cfg)
	if err != nil {
		return 0, err
	}
	domid, err = hyp.CreatePaused(ctx, cfg)
	// The backend holds the loop devices now (or, on failure, nobody):
	// dropping ours lets the kernel detach them when the domain goes.
	release()
	if err != nil {
		return 0, err
	}
	id := domid // the result is zeroed by an error return
	undo.add(func() error {
		if err := hyp.Destroy(context.WithoutCancel(ctx), id); err != nil {
			return fmt.Errorf("destroy domain %d: %w", id, err)
		}
		return nil
	})
	if mon != nil {
		if err := mon.domid(domid); err != nil {
			return 0, err
		}
	}
	// The console's pseudo-terminal is read while the guest has not run
	// (see console.go), beside the keys.
	ttyc := make(chan string, 1)
	if mon != nil && v.VirtMode() != vm.HVM {
		go func() {
			tty, err := consoleTTY(ctx, m.XS, domid)
			if err != nil {
				m.log().Warn("no console for the VM", "vm", name, "err", err)
			}
			ttyc <- tty
		}()
	} else {
		ttyc <- ""
	}
	keys, err := qubesdb.Keys(QubesDBInfo(v))
	if err != nil {
		return 0, err
	}
	if err := qubesdb.Publish(ctx, m.XS, domid, keys); err != nil {
		return 0, err
	}
	if tty := <-ttyc; tty != "" {
		if err := mon.console(tty); err != nil {
			return 0, err
		}
	}
	if m.Failpoint == FailBeforeUnpause {
		m.log().Warn("failpoint reached: waiting to be killed", "failpoint", m.Failpoint, "vm", name, "domid", domid)
		<-ctx.Done()
		return 0, ctx.Err()
	}
	if err := hyp.Unpause(ctx, domid); err != nil {
		return 0, err
	}
	if mon != nil {
		if err := mon.running(); err != nil {
			return 0, err
		}
	}
	m.log().Info("started", "vm", name, "domid", domid)
	return domid, nil
}

// bootDiscs makes the disc copies (vmkernel.Padded) of the kernel and
// initramfs of an HVM that boots a dom0 kernel in qvm's stubdomain; for
// any other VM it returns "".
func (m *Manager) bootDiscs(ctx context.Context, v *vm.View) (kernel, initramfs string, err error) {
	k := v.Str("kernel")
	if k == "" || v.VirtMode() != vm.HVM || m.StubdomDM == "" {
		return "", "", nil
	}
	dir := filepath.Join(m.Store.KernelsDir(), k)
	if kernel, err = vmkernel.Padded(ctx, filepath.Join(dir, domconfig.KernelFile)); err != nil {
		return "", "", err
	}
	// As domconfig.Build decides the guest has an initramfs.
	p := filepath.Join(dir, domconfig.InitramfsFile)
	if _, serr := os.Stat(p); serr == nil {
		if initramfs, err = vmkernel.Padded(ctx, p); err != nil {
			return "", "", err
		}
	}
	return kernel, initramfs, nil
}

// startable refuses a start that cannot work, before anything is made:
// a template that runs, a PCI device in use, a virtualisation mode or an
// amount of memory the host does not have.
func startable(ctx context.Context, hyp Hypervisor, sys *vm.System, v *vm.View) error {
	name := v.Name()
	for t := v.Template(); t != nil; t = t.Template() {
		if t.Runtime().State != vm.Halted {
			return fmt.Errorf("cannot start %s while its template %s runs: its root image would be copied mid-change; shut %s down first", name, t.Name(), t.Name())
		}
	}
	if err := pciFree(sys, v); err != nil {
		return err
	}
	pi, err := hyp.PhysInfo(ctx)
	if err != nil {
		return err
	}
	if err := pi.CheckType(domconfig.DomainType(v.VirtMode())); err != nil {
		return fmt.Errorf("cannot start %s: %w", name, err)
	}
	if need := uint64(v.Int("memory")); pi.FreeMemKiB > 0 && need*1024 > pi.FreeMemKiB {
		return fmt.Errorf("cannot start %s: not enough free memory: it needs %d MiB, the host has %d MiB free; lower its memory (qvm-prefs %s memory N) or stop other VMs",
			name, need, pi.FreeMemKiB/1024, name)
	}
	return nil
}

// discServer checks the VM that holds the CD-ROM of a start of name and
// returns its qrexec_timeout: it exists, is not the VM itself nor dom0,
// and runs (Qubes: "the VM where the media is located must be running").
func discServer(sys *vm.System, name string, opt StartOptions) (time.Duration, error) {
	sv, err := discSource(sys, name, opt)
	if err != nil {
		return 0, err
	}
	switch src := opt.CDROMVM; {
	case sv.Runtime().State != vm.Running:
		return 0, fmt.Errorf("--cdrom=%s:%s: the VM where the media is located must be running, and %s is %s: qvm-start %s first",
			src, opt.CDROM, src, sv.Runtime().State.Lower(), src)
	}
	return time.Duration(sv.Int("qrexec_timeout")) * time.Second, nil
}

// discSource is the VM that holds the CD-ROM of a start of name, when it
// can hold one: it exists and is neither the VM itself nor dom0.
func discSource(sys *vm.System, name string, opt StartOptions) (*vm.View, error) {
	src := opt.CDROMVM
	sv, err := sys.View(src)
	switch {
	case err != nil:
		return nil, fmt.Errorf("--cdrom=%s:%s: %w", src, opt.CDROM, err)
	case src == name:
		return nil, fmt.Errorf("--cdrom=%s:%s: %s cannot boot from a disc of its own: give a disc in another VM or in dom0", src, opt.CDROM, name)
	case sv.Class() == vm.AdminVM:
		return nil, fmt.Errorf("--cdrom=%s:%s: a dom0 disc is given as --cdrom=dom0:PATH", src, opt.CDROM)
	}
	return sv, nil
}

// unpackKernel unpacks a PV/PVH VM's kernel once (the first start of each
// kernel pays for it); without it the domain still boots, more slowly.
func (m *Manager) unpackKernel(ctx context.Context, v *vm.View) {
	k := v.Str("kernel")
	if k == "" || v.VirtMode() == vm.HVM {
		return
	}
	path := filepath.Join(m.Store.KernelsDir(), k, domconfig.KernelFile)
	if _, err := vmkernel.Ensure(ctx, path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		m.log().Warn("cannot unpack the VM kernel; Xen will decompress it at each start", "vm", v.Name(), "kernel", path, "err", err)
	}
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
	if opt.CDROMVM != "" {
		if _, err := discSource(sys, name, opt); err != nil {
			return nil, err
		}
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
		StubdomDM:      m.StubdomDM,
		CDROM:          opt.CDROM,
		ConsoleLog:     ConsoleLogPath(m.Store, v.Name()),
		ConsoleSocket:  ConsoleSocketPath(m.Store, v.Name()),
	}
	if opt.CDROMVM != "" {
		in.CDROM, in.CDROMServer, in.CDROMSource = "", opt.CDROMVM, opt.CDROM
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
// image. Each file made registers its removal in undo.
func (m *Manager) prepareFiles(ctx context.Context, v *vm.View, opt StartOptions, undo *undoList) (domconfig.Inputs, error) {
	in := m.inputs(v, opt)
	snap := func(srcVM *vm.View, vol, dst string) error {
		src := volume.ImagePath(m.Store.VMDir(srcVM.Name(), srcVM.Class()), vol)
		if err := removeIfExists(dst); err != nil {
			return err
		}
		if _, err := volume.Copy(ctx, src, dst); err != nil {
			return fmt.Errorf("snapshot %s's %s image: %w", srcVM.Name(), vol, err)
		}
		undo.add(func() error { return removeIfExists(dst) })
		return nil
	}
	if !v.Class().HasOwnRoot() {
		t := v.Template()
		for t != nil && !t.Class().HasOwnRoot() {
			t = t.Template()
		}
		if t == nil {
			return in, fmt.Errorf("%s has no template with a root image", v.Name())
		}
		// The template must not start while its root is copied: a
		// shared hold on its run lock keeps its start out meanwhile.
		hold, err := m.shareRun(t.Name())
		if err != nil {
			return in, fmt.Errorf("snapshot %s's root image: %w", t.Name(), err)
		}
		err = snap(t, volume.Root, in.Root)
		hold.Close()
		if err != nil {
			return in, err
		}
	}
	if v.Class() == vm.DispVM {
		if err := snap(v.Template(), volume.Private, in.Private); err != nil {
			return in, err
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
		return in, err
	}
	if err := volume.Create(in.Volatile, size); err != nil {
		return in, err
	}
	return in, nil
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
