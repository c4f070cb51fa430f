package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/qvm-project/qvm/blkback"
	"github.com/qvm-project/qvm/lifecycle"
	"github.com/qvm-project/qvm/qemu/cdrom"
	"github.com/qvm-project/qvm/store"
	"github.com/qvm-project/qvm/stubdom"
	"github.com/qvm-project/qvm/vm"
	"github.com/qvm-project/qvm/xenstore"
	"github.com/qvm-project/qvm/xl"
)

// session is what one command opens on the host, each part at most once
// and only when asked for: the store, libxl and dom0's xenstore
// connection. It caches the host's memory. run closes it after the verb.
type session struct {
	ctx context.Context
	a   *app
	dir string // the state directory

	st     *store.Store
	hyp    *xl.Context
	xs     *xenstore.Client
	memMiB int
}

// ErrNoXen is returned for an operation that needs the hypervisor on a
// machine that is not a Xen dom0.
var ErrNoXen = errors.New("this machine is not the dom0 of a running Xen (no /proc/xen/capabilities)")

// session returns the command's session, opening it on first use with the
// state directory the command line chose.
func (c *cmdline) session() *session { return c.a.session(c.ctx, c.stateDir()) }

// session returns the command's session on the state directory dir ("" for
// commands that use no store, such as the hotplug scripts).
func (a *app) session(ctx context.Context, dir string) *session {
	if a.sess == nil {
		a.sess = &session{ctx: ctx, a: a, dir: dir}
	}
	return a.sess
}

func (s *session) close() {
	if s.xs != nil {
		s.xs.Close()
	}
	if s.hyp != nil {
		s.hyp.Close()
	}
}

// errDescribing refuses to open anything for a verb being described.
var errDescribing = errors.New("internal error: a verb being described opens nothing")

// store opens the state directory.
func (s *session) store() (*store.Store, error) {
	if s.a.describing != nil {
		return nil, errDescribing
	}
	if s.st == nil {
		st, err := store.Open(s.dir)
		if err != nil {
			return nil, err
		}
		s.st = st
	}
	return s.st, nil
}

// underXen reports whether this machine runs as a Xen domain with xenfs
// mounted, i.e. whether a hypervisor is there to ask.
func underXen() bool {
	if b, err := os.ReadFile("/sys/hypervisor/type"); err == nil && strings.TrimSpace(string(b)) == "xen" {
		return true
	}
	_, err := os.Stat("/proc/xen/capabilities")
	return err == nil
}

// hypervisor opens libxl; without Xen it fails with ErrNoXen.
func (s *session) hypervisor() (*xl.Context, error) {
	if s.a.describing != nil {
		return nil, errDescribing
	}
	if s.hyp == nil {
		if !underXen() {
			return nil, fmt.Errorf("%s needs the hypervisor: %w; definitions can be managed here, VMs can only run under Xen", s.a.prog, ErrNoXen)
		}
		x, err := xl.Open(s.ctx, s.a.log)
		if err != nil {
			return nil, err
		}
		x.SetBeforeDestroy(s.removeDriverBackends)
		s.hyp = x
	}
	return s.hyp, nil
}

// removeDriverBackends takes away, before libxl destroys the domains,
// their disc backends in VMs (qvm-start --cdrom=VM:/path), which libxl
// would wait 10 s each for the VM to remove. It has a connection of its
// own: a domain's death is awaited beside other users of the session's.
func (s *session) removeDriverBackends(domids []uint32) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(s.ctx), 10*time.Second)
	defer cancel()
	xs, err := xenstore.Dial(ctx)
	if err != nil {
		s.a.log.Warn("cannot remove disc backends in VMs before a destroy", "domids", domids, "err", err)
		return
	}
	defer xs.Close()
	for _, id := range domids {
		if n, err := blkback.RemoveDriverBackends(ctx, xs, id); err != nil {
			s.a.log.Warn("cannot remove disc backends in VMs before a destroy", "domid", id, "err", err)
		} else if n > 0 {
			s.a.log.Debug("removed disc backends in VMs", "domid", id, "count", n)
		}
	}
}

// xenstore connects to xenstored.
func (s *session) xenstore() (*xenstore.Client, error) {
	if s.a.describing != nil {
		return nil, errDescribing
	}
	if s.xs == nil {
		xs, err := xenstore.Dial(s.ctx)
		if err != nil {
			return nil, fmt.Errorf("connect to xenstored: %w", err)
		}
		s.xs = xs
	}
	return s.xs, nil
}

// runtime reports the live state of the VMs from libxl. Without a
// hypervisor nothing runs, so every VM is Halted (a nil lookup says so);
// with one, any failure to ask it is an error, never a guess.
func (s *session) runtime() (func(string) (vm.Runtime, bool), error) {
	if !underXen() {
		return nil, nil
	}
	x, err := s.hypervisor()
	if err != nil {
		return nil, fmt.Errorf("ask the hypervisor for the VMs' state: %w", err)
	}
	rt, err := lifecycle.RuntimeOf(s.ctx, x)
	if err != nil {
		return nil, err
	}
	// A VM another command is starting counts as running (Transient).
	if st, err := s.store(); err == nil {
		rt = lifecycle.WithStarts(st, rt)
	}
	return rt, nil
}

// hostMemoryMiB is the machine's total memory: the hypervisor's count
// under Xen, /proc/meminfo otherwise (in dom0 that would be dom0's share
// only). Asked once per command.
func (s *session) hostMemoryMiB() int {
	if s.memMiB > 0 {
		return s.memMiB
	}
	if underXen() {
		if x, err := s.hypervisor(); err == nil {
			if pi, err := x.PhysInfo(s.ctx); err == nil && pi.TotalMemKiB > 0 {
				s.memMiB = int(pi.TotalMemKiB / 1024)
				return s.memMiB
			}
		}
	}
	s.memMiB = meminfoMiB()
	return s.memMiB
}

func meminfoMiB() int {
	f, err := os.Open("/proc/meminfo")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var kb int
		if n, _ := fmt.Sscanf(sc.Text(), "MemTotal: %d kB", &kb); n == 1 {
			return kb / 1024
		}
	}
	return 0
}

// host describes this machine for the model's defaults.
func (s *session) host(st *store.Store) vm.Host {
	return vm.Host{MemoryMiB: s.hostMemoryMiB(), Kernels: st.Kernels()}
}

// update makes one change to the store under its writer lock, with the
// hypervisor's view of which VMs run attached (asked inside the lock, so
// that it cannot go stale while the command waits for the lock).
func (s *session) update(fn func(tx *store.Tx) error) error {
	st, err := s.store()
	if err != nil {
		return err
	}
	return st.Update(s.ctx, vm.Host{}, func(tx *store.Tx) error {
		rt, err := s.runtime()
		if err != nil {
			return err
		}
		tx.Sys.Runtime = rt
		tx.Sys.Host = s.host(st)
		return fn(tx)
	})
}

// load reads the current system, with the live state, for display.
func (s *session) load() (*store.Store, *vm.System, error) {
	st, err := s.store()
	if err != nil {
		return nil, nil, err
	}
	sys, err := st.Load()
	if err != nil {
		return nil, nil, err
	}
	if sys.Runtime, err = s.runtime(); err != nil {
		return nil, nil, err
	}
	sys.Host = s.host(st)
	return st, sys, nil
}

// manager is what starting and stopping VMs needs: the store, libxl and
// xenstore. Without Xen it fails with ErrNoXen.
func (s *session) manager() (*lifecycle.Manager, error) {
	m, err := s.dryManager()
	if err != nil {
		return nil, err
	}
	if m.Hyp, err = s.hypervisor(); err != nil {
		return nil, err
	}
	if m.XS, err = s.xenstore(); err != nil {
		return nil, err
	}
	if m.QVM, err = os.Executable(); err != nil {
		return nil, fmt.Errorf("find the qvm binary for the monitors: %w", err)
	}
	// For the end-to-end tests of failures only (see lifecycle.Failpoint).
	m.Failpoint = s.a.getenv("QVM_FAILPOINT")
	return m, nil
}

// dryManager is a manager that computes configurations only (dry runs):
// it has no hypervisor, and refuses what needs one.
func (s *session) dryManager() (*lifecycle.Manager, error) {
	st, err := s.store()
	if err != nil {
		return nil, err
	}
	return &lifecycle.Manager{Store: st, Log: s.a.log, Host: s.host(st),
		StubdomKernel:  s.envOr("QVM_STUBDOM_KERNEL", filepath.Join(stubdom.Dir, stubdom.KernelName)),
		StubdomRamdisk: s.envOr("QVM_STUBDOM_RAMDISK", filepath.Join(stubdom.Dir, stubdom.RamdiskName)),
		StubdomDM:      s.envOr("QVM_STUBDOM_DM", stubdomDM())}, nil
}

// stubdomDM is where the stubdomain's dom0 device model is installed:
// beside qvm (make install and the dom0 image put it there).
func stubdomDM() string {
	const name = "qvm-stubdom-dm"
	exe, err := os.Executable()
	if err != nil {
		return filepath.Join("/usr/local/bin", name)
	}
	return filepath.Join(filepath.Dir(exe), name)
}

func (s *session) envOr(key, def string) string {
	if v := s.a.getenv(key); v != "" {
		return v
	}
	return def
}

// changer is what changes the media of running HVMs: libxl and xenstore.
func (s *session) changer() (*cdrom.Changer, error) {
	x, err := s.hypervisor()
	if err != nil {
		return nil, err
	}
	xs, err := s.xenstore()
	if err != nil {
		return nil, err
	}
	return &cdrom.Changer{XS: xs, Hyp: x, Disks: cdrom.XenstoreDisks{XS: xs}}, nil
}
