package main

import (
	"context"
	"fmt"
	"os"
	"strings"

	"github.com/qvm-project/qvm/lifecycle"
	"github.com/qvm-project/qvm/store"
	"github.com/qvm-project/qvm/vm"
	"github.com/qvm-project/qvm/xenstore"
	"github.com/qvm-project/qvm/xl"
)

// Default locations of the HVM stubdomain's kernel and root filesystem;
// $QVM_STUBDOM_KERNEL and $QVM_STUBDOM_RAMDISK override them.
const (
	defaultStubdomKernel  = "/usr/lib/qvm/stubdom/vmlinux"
	defaultStubdomRamdisk = "/usr/lib/qvm/stubdom/initramfs"
)

// underXen reports whether this machine runs as a Xen domain with xenfs
// mounted, i.e. whether a hypervisor is there to ask.
func underXen() bool {
	if b, err := os.ReadFile("/sys/hypervisor/type"); err == nil && strings.TrimSpace(string(b)) == "xen" {
		return true
	}
	_, err := os.Stat("/proc/xen/capabilities")
	return err == nil
}

// runtime reports the live state of the VMs from libxl. Without a
// hypervisor nothing runs, so every VM is Halted (a nil lookup says so);
// with one, any failure to ask it is an error, never a guess.
func (a *app) runtime(ctx context.Context) (func(string) (vm.Runtime, bool), error) {
	if !underXen() {
		return nil, nil
	}
	x, err := xl.Open(ctx, a.log)
	if err != nil {
		return nil, fmt.Errorf("ask the hypervisor for the VMs' state: %w", err)
	}
	defer x.Close()
	if a.memMiB == 0 {
		if pi, err := x.PhysInfo(ctx); err == nil && pi.TotalMemKiB > 0 {
			a.memMiB = int(pi.TotalMemKiB / 1024)
		}
	}
	return lifecycle.RuntimeOf(ctx, x)
}

// hostMemoryMiB is the machine's total memory: the hypervisor's count
// under Xen, /proc/meminfo otherwise. Asked once per command.
func (a *app) hostMemoryMiB(ctx context.Context) int {
	if a.memMiB > 0 {
		return a.memMiB
	}
	a.memMiB = meminfoMiB()
	if underXen() {
		if x, err := xl.Open(ctx, a.log); err == nil {
			if pi, err := x.PhysInfo(ctx); err == nil && pi.TotalMemKiB > 0 {
				a.memMiB = int(pi.TotalMemKiB / 1024)
			}
			x.Close()
		}
	}
	return a.memMiB
}

// manager opens what starting and stopping VMs needs: the store, libxl
// and dom0's xenstore connection. close releases them.
func (c *cmdline) manager(ctx context.Context) (m *lifecycle.Manager, close func(), err error) {
	st, err := c.openStore()
	if err != nil {
		return nil, nil, err
	}
	if !underXen() {
		return nil, nil, fmt.Errorf("this machine is not the dom0 of a running Xen (no /proc/xen/capabilities): %s needs the hypervisor; definitions can be managed here, VMs can only run under Xen", c.a.prog)
	}
	x, err := xl.Open(ctx, c.a.log)
	if err != nil {
		return nil, nil, err
	}
	if pi, err := x.PhysInfo(ctx); err == nil && pi.TotalMemKiB > 0 {
		c.a.memMiB = int(pi.TotalMemKiB / 1024) // spares hostInfo a context of its own
	}
	xs, err := xenstore.Dial(ctx)
	if err != nil {
		x.Close()
		return nil, nil, fmt.Errorf("connect to xenstored: %w", err)
	}
	m = &lifecycle.Manager{Store: st, Hyp: x, XS: xs, Log: c.a.log, Host: c.hostInfo(st),
		StubdomKernel: envOr("QVM_STUBDOM_KERNEL", defaultStubdomKernel), StubdomRamdisk: envOr("QVM_STUBDOM_RAMDISK", defaultStubdomRamdisk)}
	return m, func() { xs.Close(); x.Close() }, nil
}

// dryManager is a manager for dry runs: no hypervisor needed.
func (c *cmdline) dryManager() (*lifecycle.Manager, *store.Store, error) {
	st, err := c.openStore()
	if err != nil {
		return nil, nil, err
	}
	return &lifecycle.Manager{Store: st, Log: c.a.log, Host: c.hostInfo(st),
		StubdomKernel: envOr("QVM_STUBDOM_KERNEL", defaultStubdomKernel), StubdomRamdisk: envOr("QVM_STUBDOM_RAMDISK", defaultStubdomRamdisk)}, st, nil
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

// setRuntime attaches the live state to a system about to be changed.
func setRuntime(ctx context.Context, a *app, sys *vm.System) error {
	rt, err := a.runtime(ctx)
	if err != nil {
		return err
	}
	sys.Runtime = rt
	return nil
}

func readSysfs(path string) (string, error) {
	b, err := os.ReadFile(path)
	return strings.TrimSpace(string(b)), err
}
