//go:build cgo

package xl

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/qvm-project/qvm/e2e/xenvm"
	"github.com/qvm-project/qvm/internal/testenv"
)

// The lifecycle tests need a real Xen dom0: TestXen boots the nested-Xen
// test bed (package e2e/xenvm) once, with Xen's device model in dom0 for
// the HVM test, and runs them there, in dom0, as its subtests. Their guests
// are the bed's: the Debian kernel (PV and PVH entry points) with the tiny
// guest image, whose init (cmd/guestinit) powers the guest off at once or,
// with qvm.after=wait, waits to be shut down.

// xenEnv is what the tests in dom0 boot their guests from.
type xenEnv struct {
	kernel, ramdisk, cmdline string
	iso                      string // a disc image for the CD-ROM test
}

// The CD-ROM test's disc: its name in the host share, and its label.
const (
	xlISO      = "xl-cd.iso"
	xlISOLabel = "QVMXLTEST"
)

// TestXen boots the test bed and, in its dom0, runs the lifecycle tests
// against real Xen through libxl.
func TestXen(t *testing.T) {
	if !xenvm.Inside() {
		p := xenvm.RequireParts(t)
		files := p.GuestFiles()
		files[xlISO] = buildISO(t)
		xenvm.RunTest(context.Background(), t, xenvm.Config{
			Parts:        p,
			ExtraInitrds: []string{xenvm.RequireDom0QEMU(t, p)},
			Files:        files,
			// Xen scrubs free memory in the background after boot by
			// default, which under emulation slows the first HVM guest
			// for minutes.
			XenArgs: []string{"bootscrub=0"},
			Timeout: 30 * time.Minute,
		})
		return
	}
	e := insideEnv(t)
	t.Run("Host", func(t *testing.T) { testXenHost(t) })
	t.Run("PVLifecycle", func(t *testing.T) { testXenPVLifecycle(t, e) })
	t.Run("WaitDeathRecheck", func(t *testing.T) { testXenWaitDeathRecheck(t, e) })
	t.Run("DestroyWakesWaiters", func(t *testing.T) { testXenDestroyWakesWaiters(t, e) })
	t.Run("ShutdownTimeout", func(t *testing.T) { testXenShutdownTimeout(t, e) })
	t.Run("CleanShutdown", func(t *testing.T) { testXenCleanShutdown(t, e) })
	t.Run("CreateCancel", func(t *testing.T) { testXenCreateCancel(t, e) })
	t.Run("CreateFailureLeavesNothing", func(t *testing.T) { testXenCreateFailureLeavesNothing(t, e) })
	t.Run("HVMCDROM", func(t *testing.T) { testXenHVMCDROM(t, e) })
	requireOnlyDom0(t)
}

// buildISO makes a small ISO 9660 disc (one file) for the CD-ROM test.
func buildISO(t *testing.T) string {
	t.Helper()
	xorriso := testenv.LookPath(t, "xorriso")
	dir := t.TempDir()
	root := filepath.Join(dir, "root")
	if err := os.MkdirAll(root, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "README"), []byte("package xl's CD-ROM test disc\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	iso := filepath.Join(dir, xlISO)
	if out, err := exec.Command(xorriso, "-as", "mkisofs", "-quiet", "-V", xlISOLabel, "-o", iso, root).CombinedOutput(); err != nil {
		t.Fatalf("xorriso: %v\n%s", err, out)
	}
	return iso
}

// insideEnv checks that this is the bed's dom0 and copies the guest
// kernel, image and disc from the host share into dom0's memory: guests
// boot from there, not over 9p.
func insideEnv(t *testing.T) xenEnv {
	t.Helper()
	testenv.RequireRoot(t)
	testenv.RequireFile(t, "/proc/xen/capabilities")
	dir := t.TempDir()
	e := xenEnv{
		kernel:  filepath.Join(dir, "vmlinuz"),
		ramdisk: filepath.Join(dir, "guest.cpio.gz"),
		cmdline: "console=hvc0 quiet",
		iso:     filepath.Join(dir, xlISO),
	}
	for src, dst := range map[string]string{
		xenvm.GuestKernel:                      e.kernel,
		xenvm.GuestImage:                       e.ramdisk,
		filepath.Join(xenvm.ShareMount, xlISO): e.iso,
	} {
		b, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(dst, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return e
}

// requireOnlyDom0 fails unless Domain-0 is the only domain left.
func requireOnlyDom0(t *testing.T) {
	t.Helper()
	c, _ := openXen(t)
	doms, err := c.List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(doms) != 1 || doms[0].ID != 0 {
		t.Fatalf("domains left after the tests: %+v", doms)
	}
}

// waitConsole waits until the console log of the guest called name (as
// dom0's xenconsoled writes it) holds want: the guest is then up.
func waitConsole(t *testing.T, ctx context.Context, name, want string) {
	t.Helper()
	path := filepath.Join("/var/log/xen/console", "guest-"+name+".log")
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	for {
		if b, err := os.ReadFile(path); err == nil && bytes.Contains(b, []byte(want)) {
			return
		}
		select {
		case <-ctx.Done():
			b, _ := os.ReadFile(path)
			t.Fatalf("guest %s: no %q on its console: %v; console log:\n%s", name, want, ctx.Err(), xenvm.Tail(b, 30))
		case <-tick.C:
		}
	}
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
		if t.Failed() || os.Getenv("QVM_DEBUG") != "" {
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
		t.Skip("this machine runs Xen; TestXen/Host covers Open")
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

func testXenHost(t *testing.T) {
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

// testXenPVLifecycle: create (unpaused), list, pause, unpause, then a
// guest-initiated poweroff seen by WaitDeath, which destroys the domain.
func testXenPVLifecycle(t *testing.T, e xenEnv) {
	for _, ty := range []DomainType{PV, PVH} {
		t.Run(string(ty), func(t *testing.T) {
			c, lb := openXen(t)
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
			defer cancel()
			if ty == PVH {
				// The bed offers HVM (SVM with nested paging): a
				// host that cannot run PVH is a broken bed.
				if err := c.CheckType(ctx, PVH); err != nil {
					t.Fatalf("host cannot run PVH: %v", err)
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
			if n := strings.Count(lb.String(), "domain shut down, destroying it"); n != 1 {
				t.Fatalf("WaitDeath handled the shutdown %d times, want once", n)
			}
		})
	}
}

// testXenWaitDeathRecheck: WaitDeath also asks for the domain's state
// itself (every 2 s; here every 10 ms, so that it sees the guest's
// poweroff before libxl's event comes): the shutdown is still handled
// once, the domain destroyed once, and WaitDeath ends with poweroff.
func testXenWaitDeathRecheck(t *testing.T, e xenEnv) {
	c, lb := openXen(t)
	c.recheck = 10 * time.Millisecond
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cfg := testDomain(e, PV, "qvm-test-recheck")
	cleanupDomain(t, c, cfg.Name)
	id, err := c.Create(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	reason, err := c.WaitDeath(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if reason != ReasonPoweroff {
		t.Fatalf("WaitDeath reason = %s, want poweroff (the test ramdisk powers off)", reason)
	}
	if _, err := c.DomainInfo(ctx, id); !errors.Is(err, ErrNoDomain) {
		t.Fatalf("domain %d still there after WaitDeath: %v", id, err)
	}
	if n := strings.Count(lb.String(), "domain shut down, destroying it"); n != 1 {
		t.Fatalf("WaitDeath handled the shutdown %d times, want once (libxl's event and its own recheck are one shutdown)", n)
	}
}

// testXenDestroyWakesWaiters: Destroy ends WaitDeath with ReasonDestroyed;
// a cancelled WaitDeath returns at once and leaves the domain alone.
func testXenDestroyWakesWaiters(t *testing.T, e xenEnv) {
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

// testXenShutdownTimeout: a guest that ignores the shutdown request is
// destroyed after the timeout.
func testXenShutdownTimeout(t *testing.T, e xenEnv) {
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

// testXenCleanShutdown: a running guest asked to shut down does so before
// the timeout, and is gone afterwards.
func testXenCleanShutdown(t *testing.T, e xenEnv) {
	c, _ := openXen(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cfg := testDomain(e, PV, "qvm-test-clean")
	cfg.Cmdline = e.cmdline + " qvm.after=wait"
	cleanupDomain(t, c, cfg.Name)
	id, err := c.Create(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	// A request that comes while the guest still boots finds no
	// /sbin/poweroff to run: ask once its init waits for it.
	waitConsole(t, ctx, cfg.Name, "guestinit: waiting for shutdown")
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

// testXenCreateCancel: cancelling Create part way aborts it and leaves no
// domain behind.
func testXenCreateCancel(t *testing.T, e xenEnv) {
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

// testXenCreateFailureLeavesNothing: a config libxl cannot build leaves
// no domain behind.
func testXenCreateFailureLeavesNothing(t *testing.T, e xenEnv) {
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

// testXenHVMCDROM: an HVM domain (device model in dom0) started with a
// medium in its CD-ROM drive; eject and insert through libxl. (A drive
// that starts empty cannot take a medium with Xen 4.17 and QEMU 7.2: see
// Disk.CDROM.)
func testXenHVMCDROM(t *testing.T, e xenEnv) {
	c, _ := openXen(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if err := c.CheckType(ctx, HVM); err != nil {
		t.Fatal(err)
	}
	iso := e.iso
	cfg := &DomainConfig{
		Name: "qvm-test-hvm", UUID: NewUUID(), Type: HVM, VCPUs: 1, MemoryMiB: 256,
		Kernel: e.kernel, Ramdisk: e.ramdisk, Cmdline: e.cmdline + " qvm.after=wait",
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
