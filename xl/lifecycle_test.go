//go:build cgo

package xl

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/qvm-project/qvm/internal/testenv"
)

// The lifecycle tests need a real Xen dom0. They run only when the
// nested-Xen test bed sets QVM_TEST_XEN=1; a hypervisor is not something
// `make deps` can install, so without it they are skipped, not counted as
// a missing prerequisite (strict mode does not fail them).
//
// The test bed provides:
//
//	QVM_TEST_XEN=1             run these tests (as root, in dom0)
//	QVM_TEST_XEN_KERNEL=PATH   a guest kernel with PV and PVH entry points (required)
//	QVM_TEST_XEN_RAMDISK=PATH  an initramfs whose /init powers the guest off at once,
//	                           or, with qvm.stay=1 on the kernel command line, keeps
//	                           running until asked to shut down (its /sbin/poweroff
//	                           must power off) (required)
//	QVM_TEST_XEN_CMDLINE=TEXT  the guest kernel command line (default "console=hvc0")
//	QVM_TEST_XEN_HVM=1         also run the HVM tests (device model in dom0)
//	QVM_TEST_XEN_ISO=PATH      an image for the CD-ROM test (default: a temp file)

type xenEnv struct {
	kernel, ramdisk, cmdline string
	hvm                      bool
	iso                      string
}

func requireXen(t *testing.T) xenEnv {
	t.Helper()
	if os.Getenv("QVM_TEST_XEN") != "1" {
		t.Skip("needs a real Xen dom0: set QVM_TEST_XEN=1 (the nested-Xen test bed does)")
	}
	testenv.RequireRoot(t)
	testenv.RequireFile(t, "/proc/xen/capabilities")
	e := xenEnv{
		kernel:  os.Getenv("QVM_TEST_XEN_KERNEL"),
		ramdisk: os.Getenv("QVM_TEST_XEN_RAMDISK"),
		cmdline: os.Getenv("QVM_TEST_XEN_CMDLINE"),
		hvm:     os.Getenv("QVM_TEST_XEN_HVM") == "1",
		iso:     os.Getenv("QVM_TEST_XEN_ISO"),
	}
	if e.kernel == "" || e.ramdisk == "" {
		t.Fatal("QVM_TEST_XEN=1 needs QVM_TEST_XEN_KERNEL and QVM_TEST_XEN_RAMDISK")
	}
	testenv.RequireFile(t, e.kernel)
	testenv.RequireFile(t, e.ramdisk)
	if e.cmdline == "" {
		e.cmdline = "console=hvc0"
	}
	return e
}

// logBuffer collects slog output for assertions.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func openXen(t *testing.T) (*Context, *logBuffer) {
	t.Helper()
	lb := &logBuffer{}
	c, err := Open(context.Background(), slog.New(slog.NewTextHandler(lb, &slog.HandlerOptions{Level: slog.LevelDebug})))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		c.Close()
		if t.Failed() {
			t.Logf("libxl log:\n%s", lb.String())
		}
	})
	return c, lb
}

func testDomain(e xenEnv, t DomainType, name string) *DomainConfig {
	return &DomainConfig{
		Name: name, UUID: NewUUID(), Type: t, VCPUs: 1, MemoryMiB: 128,
		Kernel: e.kernel, Ramdisk: e.ramdisk, Cmdline: e.cmdline,
	}
}

// cleanupDomain destroys the named domain if a failed test left it.
func cleanupDomain(t *testing.T, c *Context, name string) {
	t.Cleanup(func() {
		ctx := context.Background()
		if id, err := c.DomainID(ctx, name); err == nil {
			_ = c.Destroy(ctx, id)
		}
	})
}

// TestOpenWithoutXen runs on machines without Xen (like CI): Open must
// fail, saying why, and not crash.
func TestOpenWithoutXen(t *testing.T) {
	if _, err := os.Stat("/proc/xen/capabilities"); err == nil {
		t.Skip("this machine runs Xen; TestXenHost covers Open")
	}
	lb := &logBuffer{}
	c, err := Open(context.Background(), slog.New(slog.NewTextHandler(lb, nil)))
	if err == nil {
		c.Close()
		t.Fatal("Open succeeded without a hypervisor")
	}
	var le *Error
	if !errors.As(err, &le) || le.Op != "libxl_ctx_alloc" || !strings.Contains(err.Error(), "not running under Xen") {
		t.Fatalf("Open error = %v, want a libxl_ctx_alloc error saying Xen is not running", err)
	}
	if !strings.Contains(lb.String(), "cannot open libxc handle") {
		t.Fatalf("libxl's own message did not reach slog; log:\n%s", lb.String())
	}
}

func TestXenHost(t *testing.T) {
	requireXen(t)
	c, lb := openXen(t)
	ctx := context.Background()
	pi, err := c.PhysInfo(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if pi.CPUs < 1 || pi.TotalMemKiB == 0 || !pi.CapPV {
		t.Fatalf("PhysInfo = %+v", pi)
	}
	err = c.CheckType(ctx, HVM)
	if pi.CapHVM && (pi.CapHAP || pi.CapShadow) {
		if err != nil {
			t.Fatalf("HVM host, CheckType(HVM) = %v", err)
		}
	} else if !errors.Is(err, ErrNoHVM) && !strings.Contains(fmt.Sprint(err), "EPT/NPT") {
		t.Fatalf("host without HVM (%+v), CheckType(HVM) = %v", pi, err)
	}
	doms, err := c.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(doms) == 0 || doms[0].ID != 0 || doms[0].Name != "Domain-0" {
		t.Fatalf("List = %+v, want Domain-0 first", doms)
	}
	d0, err := c.DomainInfo(ctx, 0)
	if err != nil || d0.Name != "Domain-0" || d0.State == StateShutdown || d0.State == StateDying {
		t.Fatalf("DomainInfo(0) = %+v, %v", d0, err)
	}
	if _, err := c.DomainInfo(ctx, 31000); !errors.Is(err, ErrNoDomain) {
		t.Fatalf("DomainInfo(31000) = %v, want ErrNoDomain", err)
	}
	if _, err := c.DomainID(ctx, "no-such-domain-qvm"); !errors.Is(err, ErrNoDomain) {
		t.Fatalf("DomainID(no-such) = %v, want ErrNoDomain", err)
	}
	_ = lb
}

// TestXenPVLifecycle: create (unpaused), list, pause, unpause, then a
// guest-initiated poweroff seen by WaitDeath, which destroys the domain.
func TestXenPVLifecycle(t *testing.T) {
	for _, ty := range []DomainType{PV, PVH} {
		t.Run(string(ty), func(t *testing.T) {
			e := requireXen(t)
			c, _ := openXen(t)
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
			defer cancel()
			if ty == PVH {
				if err := c.CheckType(ctx, PVH); err != nil {
					t.Skipf("host cannot run PVH: %v", err)
				}
			}
			cfg := testDomain(e, ty, "qvm-test-"+string(ty))
			cleanupDomain(t, c, cfg.Name)
			// Watch from the start so the poweroff cannot be missed.
			type result struct {
				reason ShutdownReason
				err    error
			}
			id, err := c.Create(ctx, cfg)
			if err != nil {
				t.Fatal(err)
			}
			done := make(chan result, 1)
			go func() {
				r, err := c.WaitDeath(ctx, id)
				done <- result{r, err}
			}()
			wantType := ty
			if ty == PVH {
				wantType = HVM // Xen reports PVH domains as HVM
			}
			if d, err := c.DomainInfo(ctx, id); err != nil || d.Name != cfg.Name || d.UUID != cfg.UUID || d.Type != wantType {
				t.Fatalf("DomainInfo(%d) = %+v, %v", id, d, err)
			}
			if err := c.Pause(ctx, id); err != nil {
				t.Fatal(err)
			}
			if d, err := c.DomainInfo(ctx, id); err == nil && d.State != StatePaused && d.State != StateShutdown {
				t.Fatalf("after Pause: state %s", d.State)
			}
			if err := c.Unpause(ctx, id); err != nil {
				t.Fatal(err)
			}
			r := <-done
			if r.err != nil {
				t.Fatal(r.err)
			}
			if r.reason != ReasonPoweroff {
				t.Fatalf("WaitDeath reason = %s, want poweroff (the test ramdisk powers off)", r.reason)
			}
			if _, err := c.DomainInfo(ctx, id); !errors.Is(err, ErrNoDomain) {
				t.Fatalf("domain %d still there after WaitDeath: %v", id, err)
			}
		})
	}
}

// TestXenDestroyWakesWaiters: Destroy ends WaitDeath with ReasonDestroyed;
// a cancelled WaitDeath returns at once and leaves the domain alone.
func TestXenDestroyWakesWaiters(t *testing.T) {
	e := requireXen(t)
	c, _ := openXen(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cfg := testDomain(e, PV, "qvm-test-destroy")
	cfg.Ramdisk = "" // no init: the kernel panics and waits, it does not power off
	cfg.Cmdline = e.cmdline + " panic=0"
	cleanupDomain(t, c, cfg.Name)
	id, err := c.Create(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	short, cancelShort := context.WithTimeout(ctx, 200*time.Millisecond)
	if _, err := c.WaitDeath(short, id); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("cancelled WaitDeath = %v, want DeadlineExceeded", err)
	}
	cancelShort()
	if _, err := c.DomainInfo(ctx, id); err != nil {
		t.Fatalf("domain gone after a cancelled wait: %v", err)
	}
	done := make(chan error, 1)
	var reason ShutdownReason
	go func() {
		var err error
		reason, err = c.WaitDeath(ctx, id)
		done <- err
	}()
	if err := c.Destroy(ctx, id); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if reason != ReasonDestroyed && reason != ReasonCrash {
		t.Fatalf("WaitDeath after Destroy = %s, want destroyed", reason)
	}
	if err := c.Destroy(ctx, id); !errors.Is(err, ErrNoDomain) {
		t.Fatalf("second Destroy = %v, want ErrNoDomain", err)
	}
}

// TestXenShutdownTimeout: a guest that ignores the shutdown request is
// destroyed after the timeout.
func TestXenShutdownTimeout(t *testing.T) {
	e := requireXen(t)
	c, _ := openXen(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cfg := testDomain(e, PV, "qvm-test-shutdown")
	cfg.Ramdisk = ""
	cfg.Cmdline = e.cmdline + " panic=0"
	cleanupDomain(t, c, cfg.Name)
	id, err := c.Create(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Pause(ctx, id); err != nil { // a paused guest cannot answer
		t.Fatal(err)
	}
	forced, err := c.Shutdown(ctx, id, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if !forced {
		t.Fatal("a paused guest shut down by itself")
	}
	if _, err := c.DomainInfo(ctx, id); !errors.Is(err, ErrNoDomain) {
		t.Fatalf("domain %d still there after Shutdown: %v", id, err)
	}
}

// TestXenCleanShutdown: a running guest asked to shut down does so before
// the timeout, and is gone afterwards.
func TestXenCleanShutdown(t *testing.T) {
	e := requireXen(t)
	c, _ := openXen(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cfg := testDomain(e, PV, "qvm-test-clean")
	cfg.Cmdline = e.cmdline + " qvm.stay=1"
	cleanupDomain(t, c, cfg.Name)
	id, err := c.Create(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	forced, err := c.Shutdown(ctx, id, 2*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if forced {
		t.Fatal("the guest had to be destroyed: it did not act on the shutdown request")
	}
	if _, err := c.DomainInfo(ctx, id); !errors.Is(err, ErrNoDomain) {
		t.Fatalf("domain %d still there after Shutdown: %v", id, err)
	}
}

// TestXenCreateCancel: cancelling Create part way aborts it and leaves no
// domain behind.
func TestXenCreateCancel(t *testing.T) {
	e := requireXen(t)
	c, _ := openXen(t)
	cfg := testDomain(e, PV, "qvm-test-cancel")
	cleanupDomain(t, c, cfg.Name)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	id, err := c.Create(ctx, cfg)
	if err == nil {
		// The host was quicker than the deadline: nothing to abort.
		t.Logf("Create finished within 50ms (domain %d); destroying it", id)
		if err := c.Destroy(context.Background(), id); err != nil {
			t.Fatal(err)
		}
		return
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Create = %v, want DeadlineExceeded", err)
	}
	if _, err := c.DomainID(context.Background(), cfg.Name); !errors.Is(err, ErrNoDomain) {
		t.Fatalf("a cancelled Create left domain %s behind (%v)", cfg.Name, err)
	}
}

// TestXenCreateFailureLeavesNothing: a config libxl cannot build leaves
// no domain behind.
func TestXenCreateFailureLeavesNothing(t *testing.T) {
	e := requireXen(t)
	c, lb := openXen(t)
	ctx := context.Background()
	cfg := testDomain(e, PV, "qvm-test-broken")
	cfg.Kernel = filepath.Join(t.TempDir(), "no-such-kernel")
	cleanupDomain(t, c, cfg.Name)
	if _, err := c.Create(ctx, cfg); err == nil {
		t.Fatal("Create with a missing kernel succeeded")
	}
	if _, err := c.DomainID(ctx, cfg.Name); !errors.Is(err, ErrNoDomain) {
		t.Fatalf("a failed Create left domain %s behind (%v)", cfg.Name, err)
	}
	if !strings.Contains(lb.String(), "level=ERROR") {
		t.Fatalf("libxl's errors did not reach the log:\n%s", lb.String())
	}
}

// TestXenHVMCDROM: an HVM domain (device model in dom0) started with a
// medium in its CD-ROM drive; eject and insert through libxl. (A drive
// that starts empty cannot take a medium with Xen 4.17 and QEMU 7.2: see
// Disk.CDROM.)
func TestXenHVMCDROM(t *testing.T) {
	e := requireXen(t)
	if !e.hvm {
		t.Skip("set QVM_TEST_XEN_HVM=1 to run the HVM tests")
	}
	c, _ := openXen(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if err := c.CheckType(ctx, HVM); err != nil {
		t.Fatal(err)
	}
	iso := e.iso
	if iso == "" {
		iso = filepath.Join(t.TempDir(), "cd.iso")
		if err := os.WriteFile(iso, make([]byte, 1<<20), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	cfg := &DomainConfig{
		Name: "qvm-test-hvm", UUID: NewUUID(), Type: HVM, VCPUs: 1, MemoryMiB: 256,
		Kernel: e.kernel, Ramdisk: e.ramdisk, Cmdline: e.cmdline + " qvm.stay=1",
		HVM:   HVMConfig{ACPI: true, APIC: true, PAE: true, VGA: VGANone, Keymap: "en-us", Boot: "dc"},
		Disks: []Disk{{Vdev: "hdc", CDROM: true, Target: iso}},
	}
	cleanupDomain(t, c, cfg.Name)
	id, err := c.Create(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if d, err := c.DomainInfo(ctx, id); err != nil || d.Type != HVM {
		t.Fatalf("DomainInfo(%d) = %+v, %v", id, d, err)
	}
	if err := c.CDROMEject(ctx, id, "hdc"); err != nil {
		t.Fatal(err)
	}
	if err := c.CDROMInsert(ctx, id, "hdc", iso); err != nil {
		t.Fatal(err)
	}
	if err := c.CDROMInsert(ctx, id, "hdc", filepath.Join(t.TempDir(), "missing.iso")); err == nil {
		t.Fatal("inserting a missing image succeeded")
	}
	if err := c.CDROMEject(ctx, id, "hdc"); err != nil {
		t.Fatal(err)
	}
	if err := c.Pause(ctx, id); err != nil {
		t.Fatal(err)
	}
	if d, err := c.DomainInfo(ctx, id); err != nil || d.State != StatePaused {
		t.Fatalf("after Pause: %+v, %v", d, err)
	}
	forced, err := c.Shutdown(ctx, id, 3*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if !forced {
		t.Fatal("a paused HVM guest shut down by itself")
	}
}
