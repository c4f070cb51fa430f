package lifecycle

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
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
	if _, err := m.Start(ctx, "work", StartOptions{}); err == nil || !strings.Contains(err.Error(), "already running") {
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
