package lifecycle

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/qvm-project/qvm/loopdev"
	"github.com/qvm-project/qvm/store"
	"github.com/qvm-project/qvm/vm"
	"github.com/qvm-project/qvm/volume"
	"github.com/qvm-project/qvm/xenstore"
	"github.com/qvm-project/qvm/xenstore/xenstoretest"
	"github.com/qvm-project/qvm/xl"
)

// fakeXen stands in for the hypervisor, the one part this machine lacks.
// Like libxl it removes a domain's xenstore home when it destroys it.
// Everything else in these tests is real: the store, the images, the
// xenstored holding the keys.
type fakeXen struct {
	mu      sync.Mutex
	xs      *xenstore.Client
	next    uint32
	doms    map[uint32]*fakeDom
	noHVM   bool
	failOn  string // "create" or "unpause"
	created []*xl.DomainConfig
	// loopsAtCreate are the loop devices the configs named, with the
	// image each served when the domain was created.
	loopsAtCreate []string
	// keysAtUnpause records, per domain, the qubes keys present when it
	// was unpaused.
	keysAtUnpause map[string][]string
	// gate, if set, holds the first CreatePaused of each named domain: it
	// says it arrived on the channel, then waits for it to be closed.
	gate map[string]chan chan struct{}
	// afterList, if set, runs once after a List has made its answer: what
	// another command did just after this one read the domains.
	afterList func()
}

type fakeDom struct {
	name     string
	paused   bool
	shutdown bool // the guest halted; the domain awaits destruction
}

func newFakeXen(xs *xenstore.Client) *fakeXen {
	return &fakeXen{xs: xs, next: 1, doms: map[uint32]*fakeDom{}, keysAtUnpause: map[string][]string{}}
}

func (f *fakeXen) CreatePaused(ctx context.Context, cfg *xl.DomainConfig) (uint32, error) {
	if err := cfg.Validate(); err != nil {
		return 0, err
	}
	f.mu.Lock()
	g := f.gate[cfg.Name]
	delete(f.gate, cfg.Name) // once: a second build fails the test, not hangs it
	f.mu.Unlock()
	if g != nil {
		release := make(chan struct{})
		g <- release
		<-release
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.failOn == "create" {
		return 0, errors.New("libxl_domain_create_new failed: not enough memory")
	}
	for _, d := range cfg.Disks {
		if d.Target != "" {
			if _, err := os.Stat(d.Target); err != nil {
				return 0, fmt.Errorf("disk %s: %w", d.Vdev, err)
			}
		}
	}
	f.loopsAtCreate = append(f.loopsAtCreate, loopsOf(cfg)...)
	id := f.next
	f.next++
	f.doms[id] = &fakeDom{name: cfg.Name, paused: true}
	f.created = append(f.created, cfg)
	return id, nil
}

func (f *fakeXen) Unpause(ctx context.Context, id uint32) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.failOn == "unpause" {
		return errors.New("libxl_domain_unpause failed")
	}
	d := f.doms[id]
	keys, _ := f.xs.Directory(ctx, fmt.Sprintf("/local/domain/%d/qubes", id))
	f.keysAtUnpause[d.name] = keys
	d.paused = false
	return nil
}

func (f *fakeXen) Pause(ctx context.Context, id uint32) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	d, ok := f.doms[id]
	if !ok {
		return xl.ErrNoDomain
	}
	d.paused = true
	return nil
}

func (f *fakeXen) Destroy(ctx context.Context, id uint32) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.doms[id]; !ok {
		return xl.ErrNoDomain
	}
	delete(f.doms, id)
	return f.xs.Rm(ctx, fmt.Sprintf("/local/domain/%d", id))
}

func (f *fakeXen) List(ctx context.Context) ([]xl.DomainInfo, error) {
	f.mu.Lock()
	hook := f.afterList
	f.afterList = nil
	defer func() {
		if hook != nil {
			hook()
		}
	}()
	defer f.mu.Unlock()
	out := []xl.DomainInfo{{ID: 0, Name: "Domain-0", State: xl.StateRunning}}
	for id, d := range f.doms {
		st := xl.StateRunning
		switch {
		case d.shutdown:
			st = xl.StateShutdown
		case d.paused:
			st = xl.StatePaused
		}
		out = append(out, xl.DomainInfo{ID: id, Name: d.name, State: st})
	}
	return out, nil
}

func (f *fakeXen) PhysInfo(ctx context.Context) (xl.PhysInfo, error) {
	return xl.PhysInfo{CapPV: true, CapHVM: !f.noHVM, CapHAP: !f.noHVM, FreeMemKiB: 2 << 20}, nil
}

// RequestShutdown: the guest halts at once, as a quick guest would.
func (f *fakeXen) RequestShutdown(ctx context.Context, id uint32) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	d, ok := f.doms[id]
	if !ok {
		return xl.ErrNoDomain
	}
	d.shutdown = true
	return nil
}

func (f *fakeXen) WaitDeath(ctx context.Context, id uint32) (xl.ShutdownReason, error) {
	for {
		f.mu.Lock()
		_, alive := f.doms[id]
		f.mu.Unlock()
		if !alive {
			return xl.ReasonDestroyed, nil
		}
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-time.After(5 * time.Millisecond):
		}
	}
}

func setup(t *testing.T) (*Manager, *fakeXen) {
	t.Helper()
	d := xenstoretest.Start(t)
	xs := d.Client()
	st, err := store.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	kdir := filepath.Join(st.KernelsDir(), "6.1.0")
	os.MkdirAll(kdir, 0o755)
	os.WriteFile(filepath.Join(kdir, "vmlinuz"), []byte("kernel"), 0o644)
	host := vm.Host{MemoryMiB: 4096, Kernels: st.Kernels()}
	ctx := context.Background()
	err = st.Update(ctx, host, func(tx *store.Tx) error {
		for i, spec := range []vm.CreateSpec{
			{Name: "debian-12", Class: vm.TemplateVM, Label: "black"},
			{Name: "sys-net", Class: vm.AppVM, Label: "red", Template: "debian-12", Props: []vm.Prop{{Name: "provides_network", Value: "True"}}},
			{Name: "work", Class: vm.AppVM, Label: "blue", Template: "debian-12", Props: []vm.Prop{{Name: "netvm", Value: "sys-net"}}},
			{Name: "direct", Class: vm.StandaloneVM, Label: "green"},
			{Name: "win", Class: vm.StandaloneVM, Label: "green", Props: []vm.Prop{{Name: "virt_mode", Value: "hvm"}, {Name: "kernel", Value: ""}}},
		} {
			spec.UUID = fmt.Sprintf("00000000-0000-4000-8000-00000000000%d", i)
			d, err := tx.Sys.Create(spec)
			if err != nil {
				return err
			}
			dir, err := tx.NewVMDir(d.Name, d.Class)
			if err != nil {
				return err
			}
			if err := volume.Provision(ctx, dir, string(d.Class), nil); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	f := newFakeXen(xs)
	return &Manager{Store: st, Hyp: f, XS: xs, Host: host}, f
}

func TestStartPublishesKeysBeforeUnpause(t *testing.T) {
	m, f := setup(t)
	ctx := context.Background()
	started, err := m.Start(ctx, "work", StartOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// The netvm came up first.
	if len(started) != 2 || started[0].Name != "sys-net" || started[1].Name != "work" {
		t.Fatalf("started %+v", started)
	}
	for _, s := range started {
		keys := strings.Join(f.keysAtUnpause[s.Name], " ")
		for _, k := range []string{"name", "qubes-ip", "qubes-gateway", "qubes-primary-dns", "qubes-vm-persistence"} {
			if !strings.Contains(" "+keys+" ", " "+k+" ") {
				t.Errorf("%s unpaused before key %s was published (had: %s)", s.Name, k, keys)
			}
		}
	}
	id := started[1].Domid
	base := fmt.Sprintf("/local/domain/%d/qubes/", id)
	for key, want := range map[string]string{"name": "work", "qubes-ip": "10.137.0.3", "qubes-gateway": "10.137.0.2",
		"qubes-netmask": "255.255.255.255", "qubes-mac": "00:16:3e:5e:6c:03", "qubes-base-template": "debian-12", "type": "AppVM"} {
		got, err := m.XS.ReadString(ctx, base+key)
		if err != nil || got != want {
			t.Errorf("%s = %q, %v; want %q", key, got, err, want)
		}
	}
	perms, err := m.XS.GetPerms(ctx, base+"qubes-ip")
	if err != nil || perms.String() != fmt.Sprintf("n0,r%d", id) {
		t.Errorf("perms %v %v", perms, err)
	}
	// The AppVM runs on a snapshot of its template's root.
	snap := filepath.Join(m.Store.VMDir("work", vm.AppVM), rootSnapshot)
	if _, err := os.Stat(snap); err != nil {
		t.Errorf("root snapshot: %v", err)
	}
	if cfg := f.created[1]; !strings.HasPrefix(cfg.Disks[0].Target, "/dev/loop") || cfg.NICs[0].BackendDomain != "sys-net" {
		t.Errorf("config %+v", cfg)
	}
	// The live state shows up, and a second start is refused.
	if _, err := m.Start(ctx, "work", StartOptions{}); err == nil || !strings.Contains(err.Error(), "already running") || !errors.Is(err, ErrAlreadyRunning) {
		t.Errorf("second start: %v", err)
	}
	// Kill: no domain, no keys, no snapshot.
	if err := m.Kill(ctx, "work"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(snap); !os.IsNotExist(err) {
		t.Errorf("snapshot after kill: %v", err)
	}
	if _, err := m.XS.Directory(ctx, fmt.Sprintf("/local/domain/%d", id)); !errors.Is(err, syscall.ENOENT) {
		t.Errorf("keys after kill: %v", err)
	}
}

func TestFailedStartLeavesNothing(t *testing.T) {
	for _, failOn := range []string{"create", "unpause"} {
		t.Run(failOn, func(t *testing.T) {
			m, f := setup(t)
			f.failOn = failOn
			ctx := context.Background()
			_, err := m.Start(ctx, "work", StartOptions{})
			if err == nil {
				t.Fatal("start succeeded")
			}
			doms, _ := f.List(ctx)
			if len(doms) != 1 {
				t.Errorf("domains left: %+v", doms)
			}
			if _, err := os.Stat(filepath.Join(m.Store.VMDir("work", vm.AppVM), rootSnapshot)); !os.IsNotExist(err) {
				t.Errorf("snapshot left: %v", err)
			}
			if names, err := m.XS.Directory(ctx, "/local/domain"); err == nil && len(names) > 0 {
				t.Errorf("xenstore entries left: %v", names)
			}
		})
	}
}

func TestNoHVMSupportIsAClearError(t *testing.T) {
	m, f := setup(t)
	f.noHVM = true
	_, err := m.Start(context.Background(), "win", StartOptions{})
	if !errors.Is(err, xl.ErrNoHVM) || !strings.Contains(err.Error(), "VT-x/AMD-V") {
		t.Errorf("err = %v", err)
	}
	if len(f.created) != 0 {
		t.Errorf("created %d domains", len(f.created))
	}
}

func TestTemplateRunningRefused(t *testing.T) {
	m, _ := setup(t)
	ctx := context.Background()
	if _, err := m.Start(ctx, "debian-12", StartOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Start(ctx, "work", StartOptions{}); err == nil || !strings.Contains(err.Error(), "template debian-12 runs") {
		t.Errorf("err = %v", err)
	}
}

func TestWaitCleansUp(t *testing.T) {
	m, f := setup(t)
	ctx := context.Background()
	started, err := m.Start(ctx, "work", StartOptions{})
	if err != nil {
		t.Fatal(err)
	}
	id := started[1].Domid
	done := make(chan error, 1)
	go func() { _, err := m.Wait(ctx, "work", id); done <- err }()
	f.Destroy(ctx, id) // the guest powered off and the domain went
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(m.Store.VMDir("work", vm.AppVM), rootSnapshot)); !os.IsNotExist(err) {
		t.Errorf("snapshot after death: %v", err)
	}
}

// loopsOf lists "device=backing file" for a config's loop-backed disks.
func loopsOf(cfg *xl.DomainConfig) []string {
	var out []string
	for _, d := range cfg.Disks {
		if strings.HasPrefix(d.Target, "/dev/loop") {
			b, _ := loopdev.BackingFile(d.Target)
			out = append(out, d.Target+"="+b)
		}
	}
	return out
}

// TestDisksAreLoopDevicesThatDoNotLeak: file images reach the backend as
// loop devices serving them; once the domain does not hold them (here the
// stand-in hypervisor never opens them), they are gone.
func TestDisksAreLoopDevicesThatDoNotLeak(t *testing.T) {
	m, f := setup(t)
	if _, err := m.Start(context.Background(), "direct", StartOptions{}); err != nil {
		t.Fatal(err)
	}
	cfg := f.created[0]
	if len(f.loopsAtCreate) != 3 || cfg.Disks[0].Backend != xl.BackendPhy {
		t.Fatalf("disks %+v, loops %v", cfg.Disks, f.loopsAtCreate)
	}
	for _, l := range f.loopsAtCreate {
		dev, backing, _ := strings.Cut(l, "=")
		if !strings.Contains(backing, "/appvms/") { // (the kernel keeps 63 bytes of the name)
			t.Errorf("%s served %q at create", dev, backing)
		}
		if now, _ := loopdev.BackingFile(dev); now != "" {
			t.Errorf("%s still attached to %s", dev, now)
		}
	}
}

func TestNotEnoughMemoryIsAClearError(t *testing.T) {
	m, f := setup(t)
	ctx := context.Background()
	err := m.Store.Update(ctx, m.Host, func(tx *store.Tx) error { return tx.Sys.SetProp("direct", "memory", "100000") })
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.Start(ctx, "direct", StartOptions{}); err == nil || !strings.Contains(err.Error(), "not enough free memory: it needs 100000 MiB, the host has 2048 MiB free") {
		t.Errorf("err = %v", err)
	}
	if len(f.created) != 0 {
		t.Errorf("created %d domains", len(f.created))
	}
}

// TestShutdownWithoutMonitor: the guest halts, nobody else destroys the
// domain, and Shutdown does after its grace; the VM ends Halted.
func TestShutdownWithoutMonitor(t *testing.T) {
	m, f := setup(t)
	ctx := context.Background()
	if _, err := m.Start(ctx, "direct", StartOptions{}); err != nil {
		t.Fatal(err)
	}
	forced, err := m.Shutdown(ctx, "direct", time.Minute)
	if err != nil || forced {
		t.Fatalf("shutdown: forced %v, %v", forced, err)
	}
	if doms, _ := f.List(ctx); len(doms) != 1 {
		t.Errorf("domains left: %+v", doms)
	}
}

// TestFailedUndoIsReported: when a start fails and its undo fails too,
// both are in the error, nothing is silently dropped.
func TestFailedUndoIsReported(t *testing.T) {
	m, f := setup(t)
	ctx := context.Background()
	f.failOn = "unpause"
	// The destroy of the undo fails as well.
	m.Hyp = &failingDestroy{fakeXen: f}
	_, err := m.Start(ctx, "direct", StartOptions{})
	if err == nil || !strings.Contains(err.Error(), "libxl_domain_unpause failed") || !strings.Contains(err.Error(), "destroy domain") ||
		!strings.Contains(err.Error(), "libxl_domain_destroy failed") {
		t.Errorf("err = %v, want the unpause failure and the failed destroy", err)
	}
}

// failingDestroy is the stand-in hypervisor whose destroys fail.
type failingDestroy struct{ *fakeXen }

func (f *failingDestroy) Destroy(ctx context.Context, id uint32) error {
	return errors.New("libxl_domain_destroy failed")
}

// TestNoHypervisor: a manager for dry runs computes configurations and
// refuses, without panicking, whatever needs the hypervisor.
func TestNoHypervisor(t *testing.T) {
	m, _ := setup(t)
	m.Hyp = nil
	ctx := context.Background()
	if _, err := m.Config("work", StartOptions{}); err != nil {
		t.Errorf("Config without a hypervisor: %v", err)
	}
	if _, err := m.Start(ctx, "work", StartOptions{}); !errors.Is(err, ErrNoHypervisor) {
		t.Errorf("Start: %v", err)
	}
	if err := m.Kill(ctx, "work"); !errors.Is(err, ErrNoHypervisor) {
		t.Errorf("Kill: %v", err)
	}
	if _, err := m.Shutdown(ctx, "work", time.Second); !errors.Is(err, ErrNoHypervisor) {
		t.Errorf("Shutdown: %v", err)
	}
	if _, err := m.Wait(ctx, "work", 3); !errors.Is(err, ErrNoHypervisor) {
		t.Errorf("Wait: %v", err)
	}
}

// TestBackendDHCP: dom0 serves DHCP to the PV/PVH VMs it is the backend
// of, with exactly the VM's addresses; not to HVMs (their stubdomain
// does), nor to VMs behind another netvm or with no network.
func TestBackendDHCP(t *testing.T) {
	m, _ := setup(t)
	sys, err := m.Store.Load()
	if err != nil {
		t.Fatal(err)
	}
	sys.Host = m.Host
	view := func(name string) *vm.View {
		v, err := sys.View(name)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	cfg, ok, err := BackendDHCP(view("direct"), 7)
	if err != nil || !ok {
		t.Fatalf("direct: ok %v, %v", ok, err)
	}
	l := cfg.Lease
	if cfg.Interface != "vif7.0" || l.MAC.String() != view("direct").Str("mac") || l.IP.String() != view("direct").Str("visible_ip") ||
		l.Gateway.String() != vm.Dom0Gateway || len(l.DNS) != 2 || l.DNS[0].String() != vm.PrimaryDNS || l.Hostname != "direct" {
		t.Errorf("direct's lease %+v on %s", l, cfg.Interface)
	}
	for _, name := range []string{"work", "win"} {
		if _, ok, err := BackendDHCP(view(name), 8); ok || err != nil {
			t.Errorf("%s: dom0 would serve it DHCP (ok %v, %v)", name, ok, err)
		}
	}
}

// TestKillWithDamagedStore: a VM that runs can be killed and shut down
// when the store cannot be read.
func TestKillWithDamagedStore(t *testing.T) {
	m, f := setup(t)
	ctx := context.Background()
	for _, name := range []string{"direct", "win"} {
		if _, err := m.Start(ctx, name, StartOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(m.Store.Path(), []byte("{not json"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := m.Kill(ctx, "direct"); err != nil {
		t.Fatalf("kill with a damaged store: %v", err)
	}
	if forced, err := m.Shutdown(ctx, "win", time.Minute); err != nil || forced {
		t.Fatalf("shutdown with a damaged store: forced %v, %v", forced, err)
	}
	if doms, _ := f.List(ctx); len(doms) != 1 {
		t.Errorf("domains left: %+v", doms)
	}
	if err := m.Kill(ctx, "direct"); !errors.Is(err, ErrNotRunning) || !strings.Contains(err.Error(), "corrupt") {
		t.Errorf("kill of a VM that is gone, with a damaged store: %v", err)
	}
}

// startHandoff plays qvm-start up to the handoff of VM direct: its run
// lock taken, its domain built (paused), its monitor started on a pipe.
// What qvm-start says goes to w; done gets the monitor's end.
func startHandoff(t *testing.T, m *Manager, f *fakeXen) (id uint32, w *os.File, done <-chan error) {
	t.Helper()
	ctx := context.Background()
	lock, err := m.lockRun("direct")
	if err != nil {
		t.Fatal(err)
	}
	id, err = f.CreatePaused(ctx, &xl.DomainConfig{Name: "direct", UUID: xl.UUID{1}, Type: xl.PVH, MemoryMiB: 400, VCPUs: 1, Kernel: "/dev/null"})
	if err != nil {
		t.Fatal(err)
	}
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	c := make(chan error, 1)
	go func() { c <- m.RunHandoffMonitor(ctx, "direct", lock, r, nil) }()
	return id, w, c
}

// TestHandoffMonitor plays qvm-start's side of the handoff: a start that
// ends before "running" (killed before it knew the domain's id, or after)
// has its domain destroyed by the monitor; one that hands over is watched
// until the domain goes, and the monitor holds the run lock meanwhile.
func TestHandoffMonitor(t *testing.T) {
	ctx := context.Background()
	for _, c := range []struct {
		name     string
		send     func(w *os.File, id uint32)
		running  bool
		wantGone bool
	}{
		{"killed before the domain's id", func(w *os.File, id uint32) {}, false, true},
		{"killed after the domain's id", func(w *os.File, id uint32) { fmt.Fprintf(w, "domid %d\n", id) }, false, true},
		{"garbage", func(w *os.File, id uint32) { fmt.Fprintf(w, "domid %d\nrunning now\n", id) }, false, true},
		{"handed over", func(w *os.File, id uint32) { fmt.Fprintf(w, "domid %d\nrunning\n", id) }, true, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			m, f := setup(t)
			id, w, done := startHandoff(t, m, f)
			c.send(w, id)
			w.Close()
			if c.running {
				// The monitor holds the run lock: no second start.
				if l, err := m.lockRun("direct"); !errors.Is(err, ErrStarting) {
					if l != nil {
						l.Close()
					}
					t.Errorf("run lock while the monitor watches: %v", err)
				}
				f.RequestShutdown(ctx, id)
				f.Destroy(ctx, id) // the guest halted
			}
			if err := <-done; err != nil {
				t.Fatalf("monitor: %v", err)
			}
			if _, alive, _ := domainState(ctx, f, id); alive {
				t.Errorf("domain %d left", id)
			}
			l, err := m.lockRun("direct")
			if err != nil {
				t.Errorf("run lock after the monitor: %v", err)
			} else {
				l.Close()
			}
		})
	}
}

// TestParallelStarts: while one start is inside libxl, the store is not
// locked: another VM starts, other VMs' definitions change, and listing
// works; the VM being built counts as running (Transient) for every other
// command, so its definitions cannot change under it and a second start of
// it is refused; a netvm both need is started once, the other start
// waiting for it.
func TestParallelStarts(t *testing.T) {
	m, f := setup(t)
	ctx := context.Background()
	directGate, netGate := make(chan chan struct{}), make(chan chan struct{})
	f.gate = map[string]chan chan struct{}{"direct": directGate, "sys-net": netGate}

	type result struct {
		started []Started
		err     error
	}
	startAsync := func(name string) chan result {
		c := make(chan result, 1)
		go func() {
			s, err := m.Start(ctx, name, StartOptions{})
			c <- result{s, err}
		}()
		return c
	}
	direct := startAsync("direct")
	releaseDirect := <-directGate // direct is inside libxl

	// The store is free: another VM's definition changes.
	err := m.Store.Update(ctx, m.Host, func(tx *store.Tx) error {
		tx.Sys.Runtime = WithStarts(m.Store, nil)
		return tx.Sys.SetProp("win", "memory", "512")
	})
	if err != nil {
		t.Errorf("change of another VM during a start: %v", err)
	}
	// The VM being built is Transient: it cannot be changed or started.
	err = m.Store.Update(ctx, m.Host, func(tx *store.Tx) error {
		tx.Sys.Runtime = WithStarts(m.Store, nil)
		if st := tx.Sys.RuntimeOf("direct").State; st != vm.Transient {
			t.Errorf("direct while it is built: %s, want Transient", st)
		}
		return tx.Sys.SetProp("direct", "netvm", "none")
	})
	if err == nil || !strings.Contains(err.Error(), "while it runs") {
		t.Errorf("change of the VM being started: %v", err)
	}
	if _, err := m.Start(ctx, "direct", StartOptions{}); !errors.Is(err, ErrAlreadyRunning) || !strings.Contains(err.Error(), "being started") {
		t.Errorf("second start of a VM being started: %v", err)
	}

	// Two VMs behind the same halted netvm: it starts once.
	work := startAsync("work")
	releaseNet := <-netGate
	// A second client of sys-net, started now, waits for it.
	err = m.Store.Update(ctx, m.Host, func(tx *store.Tx) error {
		_, err := tx.Sys.Create(vm.CreateSpec{Name: "work2", Class: vm.AppVM, Label: "blue", Template: "debian-12",
			Props: []vm.Prop{{Name: "netvm", Value: "sys-net"}}, UUID: "00000000-0000-4000-8000-0000000000f2"})
		if err != nil {
			return err
		}
		dir, err := tx.NewVMDir("work2", vm.AppVM)
		if err != nil {
			return err
		}
		return volume.Provision(ctx, dir, string(vm.AppVM), nil)
	})
	if err != nil {
		t.Fatal(err)
	}
	work2 := startAsync("work2")
	close(releaseNet)
	close(releaseDirect)
	for name, c := range map[string]chan result{"direct": direct, "work": work, "work2": work2} {
		r := <-c
		if r.err != nil {
			t.Errorf("start %s: %v", name, r.err)
		}
		if got := len(r.started); name == "work" && got != 2 || name != "work" && got != 1 {
			t.Errorf("start %s started %+v", name, r.started)
		}
	}
	nets := 0
	for _, c := range f.created {
		if c.Name == "sys-net" {
			nets++
		}
	}
	if nets != 1 {
		t.Errorf("sys-net built %d times", nets)
	}
}

// TestNetVMStartedMeanwhile: a netvm whose start by another command ends
// between this start's read of the domains and its taking the netvm's run
// lock is running, not halted: it is not built a second time.
func TestNetVMStartedMeanwhile(t *testing.T) {
	m, f := setup(t)
	f.afterList = func() {
		f.mu.Lock()
		f.doms[f.next] = &fakeDom{name: "sys-net"}
		f.next++
		f.mu.Unlock()
	}
	s, err := m.Start(context.Background(), "work", StartOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(s) != 1 || s[0].Name != "work" {
		t.Errorf("started %+v, want work alone", s)
	}
	for _, c := range f.created {
		if c.Name == "sys-net" {
			t.Errorf("sys-net built again")
		}
	}
	// The same for the VM asked for: already running, with its domain.
	f.afterList = func() {
		f.mu.Lock()
		f.doms[41] = &fakeDom{name: "direct"}
		f.mu.Unlock()
	}
	if _, err := m.Start(context.Background(), "direct", StartOptions{}); !errors.Is(err, ErrAlreadyRunning) || !strings.Contains(err.Error(), "domain 41") {
		t.Errorf("start of a VM started meanwhile: %v", err)
	}
}

// TestTemplateHeldWhileCopied: a template cannot start while an AppVM's
// start copies its root (the copy holds the template's run lock shared).
func TestTemplateHeldWhileCopied(t *testing.T) {
	m, _ := setup(t)
	hold, err := m.shareRun("debian-12")
	if err != nil {
		t.Fatal(err)
	}
	_, err = m.Start(context.Background(), "debian-12", StartOptions{})
	hold.Close()
	if !errors.Is(err, ErrStarting) {
		t.Errorf("start of a template whose root is being copied: %v", err)
	}
	if _, err := m.Start(context.Background(), "debian-12", StartOptions{}); err != nil {
		t.Errorf("start once the copy is done: %v", err)
	}
}

// TestStopWaitsForMonitor: qvm-kill and qvm-shutdown return only once the
// VM's monitor (here, a holder of its run lock that lets go a while after
// the domain is gone) has finished, so that the VM is Halted, not
// Transient, when they do.
func TestStopWaitsForMonitor(t *testing.T) {
	ctx := context.Background()
	for _, stop := range []string{"kill", "shutdown"} {
		t.Run(stop, func(t *testing.T) {
			m, f := setup(t)
			if _, err := m.Start(ctx, "direct", StartOptions{}); err != nil {
				t.Fatal(err)
			}
			monitor, err := m.lockRun("direct")
			if err != nil {
				t.Fatal(err)
			}
			var released atomic.Bool
			go func() {
				// The monitor destroys the domain once it has halted,
				// then cleans up.
				for {
					doms, _ := f.List(ctx)
					if len(doms) == 1 {
						break
					}
					for _, d := range doms {
						if d.ID != 0 && d.State == xl.StateShutdown {
							f.Destroy(ctx, d.ID)
						}
					}
					time.Sleep(10 * time.Millisecond)
				}
				time.Sleep(300 * time.Millisecond) // the monitor cleaning up
				released.Store(true)
				monitor.Close()
			}()
			if stop == "kill" {
				err = m.Kill(ctx, "direct")
			} else {
				_, err = m.Shutdown(ctx, "direct", time.Minute)
			}
			if err != nil {
				t.Fatal(err)
			}
			if !released.Load() {
				t.Errorf("%s returned while the monitor still held the run lock", stop)
			}
			rt, _ := WithStarts(m.Store, nil)("direct")
			if rt.State == vm.Transient {
				t.Errorf("after %s the VM is %s", stop, rt.State)
			}
		})
	}
}

// TestDiscSourceChecks: a start from a disc in a VM (--cdrom=VM:/path)
// is refused, before any domain is made, for a source that does not
// exist, is the VM itself, is dom0 or is halted; each error says what to
// do.
func TestDiscSourceChecks(t *testing.T) {
	m, f := setup(t)
	ctx := context.Background()
	for _, c := range []struct{ src, want string }{
		{"nosuch", "nosuch"},
		{"win", "cannot boot from a disc of its own"},
		{"dom0", "--cdrom=dom0:PATH"},
		{"direct", "the VM where the media is located must be running, and direct is halted: qvm-start direct first"},
	} {
		_, err := m.Start(ctx, "win", StartOptions{CDROM: "/home/user/installcd.iso", CDROMVM: c.src})
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("source %s: %v, want %q", c.src, err, c.want)
		}
		if len(f.created) != 0 {
			t.Fatalf("source %s: created %d domains", c.src, len(f.created))
		}
	}
}
