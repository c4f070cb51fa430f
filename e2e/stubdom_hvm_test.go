package e2e

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/qvm-project/qvm/consback"
	"github.com/qvm-project/qvm/e2e/xenvm"
	"github.com/qvm-project/qvm/internal/testenv"
	"github.com/qvm-project/qvm/stubdom/testiso"
	"github.com/qvm-project/qvm/xenstore"
)

// The test guest's discs: it boots from the first and powers off when the
// second is put in its drive.
const (
	bootLabel = "QVMBOOT"
	bootISO   = "qvmboot.iso"
	offISO    = "qvmoff.iso"
)

// stubdomParts returns the dom0 archives an HVM with qvm's stubdomain
// needs (Xen's device model and firmware; the stubdomain's kernel and
// ramdisk) and builds the guest's two discs, as Files for the bed.
func stubdomParts(t *testing.T, p xenvm.Parts) (extra []string, files map[string]string) {
	t.Helper()
	root := filepath.Dir(filepath.Dir(p.Kernel))
	sd := filepath.Join(root, "stubdom", "stubdom-dom0.cpio.gz")
	if _, err := os.Stat(sd); err != nil {
		testenv.Missing(t, "stubdomain not built (run `make stubdom-image`): %v", err)
	}
	testenv.LookPath(t, "xorriso")
	for _, f := range []string{testiso.IsolinuxBin, testiso.LdlinuxC32, testiso.Busybox} {
		testenv.RequireFile(t, f)
	}
	s, err := testiso.FromDom0Dir(filepath.Dir(p.Kernel))
	if err != nil {
		testenv.Missing(t, "%v", err)
	}
	s.WorkDir = t.TempDir()
	files = map[string]string{}
	for name, label := range map[string]string{bootISO: bootLabel, offISO: testiso.PowerOffLabel} {
		s.Label, s.Out = label, filepath.Join(s.WorkDir, name)
		if err := testiso.Build(context.Background(), s); err != nil {
			t.Fatal(err)
		}
		files[name] = s.Out
	}
	return []string{qemuPart(t, p), sd}, files
}

// TestStubdomHVM boots the bed once and checks qvm's HVM path with its
// Linux stubdomain end to end, with the real qvm commands in dom0:
//
//   - qvm-start --cdrom boots a networked HVM from a disc through qvm's
//     stubdomain (QEMU in it, stubdom_xid in qvm-ls); the guest's udhcpc,
//     on its emulated NIC, gets exactly the address, gateway, netmask and
//     DNS qvm shows, from the DHCP server in the stubdomain;
//   - its netvm cannot be changed while it runs;
//   - an HVM with netvm none starts too, and its guest finds no NIC;
//   - qvm-block lists the disc, ejects it (the guest sees an empty drive)
//     and puts another disc in (the guest sees it, and powers off);
//   - no QEMU runs in dom0 for the stubdomain: qvm-stubdom-dm serves its
//     consoles as the stubdomain's own unprivileged user (the guest's
//     lines in its log prove it) and its disc is on blkback;
//   - a guest powering off leaves no domain, no stubdomain, no device
//     model or relay process and nothing in xenstore;
//   - the dom0-QEMU debug mode warns that it is less isolated;
//   - its serial console reaches dom0 through the stubdomain: qvm-console
//     --log shows what the guest said, and an attached qvm-console sees it
//     live; keys sent with qvm-sendkey reach the guest's keyboard;
//   - qvm-start --cdrom=VM:/path boots it from a disc in another VM,
//     served by that VM's blkback (cdromFromVM);
//   - the seeds' first HVM command makes a VM that boots the dom0 kernel
//     through its stubdomain (hvmDom0Kernel).
func TestStubdomHVM(t *testing.T) {
	if xenvm.Inside() {
		stubdomInside(t)
		return
	}
	p := bedParts(t)
	extra, files := stubdomParts(t, p)
	maps.Copy(files, p.GuestFiles())
	xenvm.RunTest(context.Background(), t, xenvm.Config{
		Parts:        p,
		ExtraInitrds: extra,
		Files:        files,
		// The guests' lines reach dom0 through Xen's console ring. Xen
		// scrubs free memory in the background after boot by default,
		// which under emulation slows the first HVM guest for minutes.
		XenArgs: []string{"conring_size=1M", "bootscrub=0"},
		Timeout: 40 * time.Minute,
	})
}

func stubdomInside(t *testing.T) {
	q := newQvm(t)
	dir := t.TempDir()
	boot, off := filepath.Join(dir, bootISO), filepath.Join(dir, offISO)
	copyTo(t, filepath.Join(xenvm.ShareMount, bootISO), boot)
	copyTo(t, filepath.Join(xenvm.ShareMount, offISO), off)

	q.ok("qvm-create", "--hvm", "--label", "red", "--property", "memory=256", "--property", "vcpus=1", "inst")
	q.ok("qvm-create", "--hvm", "--label", "gray", "--property", "memory=256", "--property", "vcpus=1", "--property", "netvm=none", "alone")
	if got := q.pref("alone", "netvm"); got != "" && got != "-" && got != "None" && got != "none" {
		t.Fatalf("alone's netvm is %q, want none", got)
	}

	// The debug mode warns, and configures QEMU in dom0.
	q.ok("qvm-create", "--hvm", "--label", "red", "dbg")
	q.ok("qvm-features", "dbg", "qvm-dom0-qemu", "1")
	out := q.ok("qvm-start", "--dry-run", "--cdrom=dom0:"+boot, "dbg")
	if !strings.Contains(out, "warning: dbg runs its device model (QEMU) in dom0, not in a stubdomain") || !strings.Contains(out, "device_model_stubdomain_override = 0") {
		t.Errorf("dom0-QEMU mode: no warning or still a stubdomain:\n%s", out)
	}
	out = q.ok("qvm-start", "--dry-run", "--cdrom=dom0:"+boot, "inst")
	if strings.Contains(out, "warning:") || !strings.Contains(out, "device_model_stubdomain_override = 1") {
		t.Errorf("inst should start with a stubdomain and no warning:\n%s", out)
	}
	q.ok("qvm-remove", "-f", "dbg")

	start := time.Now()
	startHVM(t, q, "inst", "dom0:"+boot)
	t.Logf("qvm-start inst: %.1f s", time.Since(start).Seconds())
	instID := strings.TrimSpace(q.ok("xl", "domid", "inst"))
	instDM := strings.TrimSpace(q.ok("xl", "domid", "inst-dm"))
	if got := q.pref("inst", "stubdom_xid"); got != instDM {
		t.Errorf("inst stubdom_xid %s, xl says inst-dm is %s", got, instDM)
	}
	if e := q.ls()["inst"]; e.State != "Running" || fmt.Sprint(e.Properties["xid"]) != instID {
		t.Errorf("qvm-ls inst: %+v, xl domid %s", e, instID)
	}

	// Changing the netvm of a running HVM is refused, clearly.
	if out, err := q.run("qvm-prefs", "inst", "netvm", "none"); err == nil || !strings.Contains(out, "cannot change netvm of inst while it runs") {
		t.Errorf("netvm change of a running HVM: %v\n%s", err, out)
	}

	// The guest's DHCP answer is what qvm shows, served in the stubdomain.
	ip, gw := q.pref("inst", "visible_ip"), q.pref("inst", "visible_gateway")
	dns := strings.Fields(q.pref("inst", "dns"))
	ls := q.ok("qvm-ls", "-n")
	if !regexp.MustCompile(`(?m)^inst\s+Running\s+\S+\s+` + regexp.QuoteMeta(ip) + `\s+\S+\s+` + regexp.QuoteMeta(gw) + `\s*$`).MatchString(ls) {
		t.Errorf("qvm-ls -n does not show inst with %s via %s:\n%s", ip, gw, ls)
	}
	want := fmt.Sprintf("dhcp ip=%s subnet=%s router=%s dns=%s", ip, q.pref("inst", "visible_netmask"), gw, strings.Join(dns, " "))
	if got := guestLine(t, instID, "dhcp "); got != want {
		t.Errorf("inst's guest: %q, want %q (what qvm shows)", got, want)
	}
	// The guest's serial port reaches dom0 through its stubdomain: its
	// console log has what the guest reported.
	if err := waitFor(2*time.Minute, func() bool { return consoleLogHas("inst", testiso.LinePrefix+want) }); err != nil {
		out, _ := q.run("qvm-console", "--log", "inst")
		d, _ := os.ReadFile("/var/log/xen/qemu-dm-inst-dm.log")
		t.Errorf("inst's serial console log lacks %q: %v\n%s\nits device model's log:\n%s", want, err, xenvm.Tail([]byte(out), 30), xenvm.Tail(d, 30))
	}
	dmLog := "/var/log/xen/qemu-dm-inst.log"
	served := regexp.MustCompile(`msg="lease given" prog=stubdominit-dhcpd .*client=` + regexp.QuoteMeta(q.pref("inst", "mac")) + ` outcome=\S+ ip=` + regexp.QuoteMeta(ip) + ` `)
	if b, _ := os.ReadFile(dmLog); !served.Match(b) {
		d, _ := os.ReadFile("/var/log/xen/qemu-dm-inst-dm.log")
		t.Errorf("the stubdomain's DHCP server did not serve %s; its log:\n%s\nits device model's log:\n%s", ip, b, d)
	}
	if b, _ := os.ReadFile(dmLog); !regexp.MustCompile(`level=INFO msg="device model running"`).Match(b) {
		t.Errorf("the stubdomain log lacks its running line:\n%s", b)
	}
	requireNoDom0QEMU(t, instDM)

	// A second HVM, with a stubdomain of its own, beside the first. It is
	// started once the first guest has booted: libxl gives a stubdomain
	// 30 s (LIBXL_STUBDOM_START_TIMEOUT, fixed) from its unpause to its
	// QEMU running, and a stubdomain booting beside a guest that boots too,
	// on a 2-core machine with another process busy, took longer.
	startHVM(t, q, "alone", "dom0:"+off)
	aloneID := strings.TrimSpace(q.ok("xl", "domid", "alone"))
	aloneDM := strings.TrimSpace(q.ok("xl", "domid", "alone-dm"))

	// The guest without a netvm found no NIC, read its disc and powered
	// off; nothing of it is left.
	if got := guestLine(t, aloneID, "dhcp "); got != "dhcp none" {
		t.Errorf("alone's guest: %q, want \"dhcp none\"", got)
	}
	guestLine(t, aloneID, "poweroff")
	waitHalted(t, q, "alone")
	requireHVMClean(t, "alone", aloneID, aloneDM)

	// Media: the disc is listed, ejected, and another one goes in.
	if got := guestLine(t, instID, "cdrom "); got != "cdrom "+bootLabel {
		t.Errorf("inst's guest reads %q, want cdrom %s", got, bootLabel)
	}
	if out := q.ok("qvm-block", "ls"); !regexp.MustCompile(`(?m)^dom0:` + regexp.QuoteMeta(boot) + `\s+cdrom.*stubdomain.*\s+inst \((?:attached: devtype=cdrom, read-only=yes, frontend-dev=)?xvdd\)$`).MatchString(out) {
		t.Errorf("qvm-block ls does not show %s in inst:\n%s", boot, out)
	}
	if out, err := q.run("qvm-block", "attach", "--ro", "--devtype=cdrom", "inst", "dom0:"+off); err == nil || !strings.Contains(out, "holds another disc") {
		t.Errorf("attaching to a full drive: %v\n%s", err, out)
	}
	if out, err := q.run("qvm-block", "detach", "inst", "dom0:"+off); err == nil || !strings.Contains(out, "not dom0:"+off) {
		t.Errorf("detaching a disc that is not in the drive: %v\n%s", err, out)
	}
	// Attached to the serial console, what the guest says now is seen.
	serial := attachConsole(t, "inst")
	// Keys pressed with qvm-sendkey reach its keyboard: it reports the
	// line they typed.
	q.ok("qvm-sendkey", "inst", "h", "shift-i", "ret")
	waitGuestLine(t, instID, "key hI")
	serial.waitOutput(testiso.LinePrefix+"key hI", nil)
	q.ok("qvm-block", "detach", "inst", "dom0:"+boot)
	waitGuestLine(t, instID, "cdrom empty")
	serial.waitOutput(testiso.LinePrefix+"cdrom empty", nil)
	serial.leave()
	if out := q.ok("qvm-block", "ls"); !regexp.MustCompile(`(?m)^-\s+empty CD-ROM drive.*inst \((?:attached: devtype=cdrom, frontend-dev=)?xvdd\)$`).MatchString(out) {
		t.Errorf("qvm-block ls after the eject:\n%s", out)
	}
	q.ok("qvm-block", "attach", "--ro", "--devtype=cdrom", "inst", "dom0:"+off)
	waitGuestLine(t, instID, "cdrom "+testiso.PowerOffLabel)
	waitGuestLine(t, instID, "poweroff")
	waitHalted(t, q, "inst")
	requireHVMClean(t, "inst", instID, instDM)
	requireOnlyDom0(t)

	cdromFromVM(t, q, boot)
	hvmDom0Kernel(t, q)
}

// hvmDom0Kernel runs the seeds' first HVM command as written: the VM it
// makes keeps the default kernel (dom0's), and qvm-start boots that
// kernel in it through the stubdomain, which gets the kernel and
// initramfs as read-only discs. The guest says so on its serial console,
// which the stubdomain relays (qvm-console --log). Slow under emulation:
// SeaBIOS loads the kernel and initramfs through fw_cfg without DMA
// (xenfv has none), which took 5 minutes in the bed.
func hvmDom0Kernel(t *testing.T, q *qvm) {
	installKernel(t)
	q.ok("qvm-create", "--class", "StandaloneVM", "--label", "green", "--property", "virt_mode=hvm", "my-hvm")
	if k := q.pref("my-hvm", "kernel"); k == "" {
		t.Fatalf("my-hvm has no kernel: the seeds' command keeps the default one")
	}
	q.ok("qvm-prefs", "my-hvm", "memory", "256")
	q.ok("qvm-prefs", "my-hvm", "kernelopts", "console=ttyS0 qvm.marker=hvm-dom0-kernel qvm.after=wait")
	if out, err := q.run("qvm-start", "my-hvm"); err != nil {
		b, _ := os.ReadFile("/var/log/xen/qemu-dm-my-hvm.log")
		t.Fatalf("qvm-start my-hvm: %v\n%s\nstubdomain log:\n%s", err, out, xenvm.Tail(b, 40))
	}
	if err := waitFor(15*time.Minute, func() bool { return consoleLogHas("my-hvm", "guestinit: marker hvm-dom0-kernel") }); err != nil {
		out, _ := q.run("qvm-console", "--log", "my-hvm")
		b, _ := os.ReadFile("/var/log/xen/qemu-dm-my-hvm.log")
		t.Errorf("my-hvm's guest never said its marker: %v\nits console:\n%s\nstubdomain log:\n%s", err, xenvm.Tail([]byte(out), 30), xenvm.Tail(b, 40))
	}
	q.ok("qvm-kill", "my-hvm")
	requireOnlyDom0(t)
}

// cdromFromVM checks qvm-start --cdrom=VM:/path, the seeds' install from
// an ISO in another VM: with the source halted, and with the file missing
// in it, the start is refused and nothing is left; with the file there,
// the HVM boots from it through its stubdomain, served by the source VM's
// own blkback from a read-only loop device (no qdisk, nothing in dom0's
// backends), gets its DHCP lease, and qvm-block lists the disc as the
// VM's; once the HVM is killed its monitor has the loop device detached
// in the source VM, and nothing of the disc is left in xenstore.
func cdromFromVM(t *testing.T, q *qvm, boot string) {
	installKernel(t)
	q.ok("qvm-create", "--class", "TemplateVM", "debian-12", "-l", "black")
	q.ok("qvm-prefs", "debian-12", "kernelopts", "quiet qvm.qrexec=1 qvm.after=wait")
	q.ok("qvm-prefs", "debian-12", "vcpus", "1")
	q.ok("qvm-create", "--template", "debian-12", "--label", "orange", "--prop", "netvm=", "--prop", "virt_mode=pv", "--prop", "memory=256", "src")
	q.ok("qvm-prefs", "src", "qrexec_timeout", "300")
	const disc = "/home/user/installcd.iso"
	t.Cleanup(func() {
		if t.Failed() {
			b, _ := os.ReadFile(consoleLog("src"))
			t.Logf("src's console:\n%s", xenvm.Tail(b, 60))
			b, _ = os.ReadFile(filepath.Join(stateDir(), "log", "inst.log"))
			t.Logf("inst's monitor log:\n%s", xenvm.Tail(b, 40))
		}
	})

	if out, err := q.run("qvm-start", "--cdrom=src:"+disc, "inst"); err == nil || !strings.Contains(out, "the VM where the media is located must be running, and src is halted: qvm-start src first") {
		t.Errorf("start from a halted VM's disc: %v\n%s", err, out)
	}
	requireOnlyDom0(t)

	// The ISO goes into the source VM the way a user's file would.
	iso, err := os.ReadFile(boot)
	if err != nil {
		t.Fatal(err)
	}
	q.ok("qvm-start", "src")
	if _, errOut, code := q.runWithInput(iso, "qvm-run", "--pass-io", "src", "cat > "+disc); code != 0 {
		t.Fatalf("copying the ISO into src: exit %d: %s", code, errOut)
	}
	loops := func() string {
		out, _, code := q.runWithInput(nil, "qvm-run", "-u", "root", "-p", "src", "cat /sys/block/loop*/loop/backing_file 2>/dev/null; true")
		if code != 0 {
			t.Fatalf("listing src's loop devices: exit %d", code)
		}
		return out
	}
	srcID := strings.TrimSpace(q.ok("xl", "domid", "src"))

	if out, err := q.run("qvm-start", "--cdrom=src:/home/user/nope.iso", "inst"); err == nil || !strings.Contains(out, "/home/user/nope.iso: no such file") {
		t.Errorf("start from a missing file in src: %v\n%s", err, out)
	}
	if exec.Command("xl", "domid", "inst").Run() == nil || exec.Command("xl", "domid", "inst-dm").Run() == nil {
		t.Errorf("a refused start left inst's domains")
	}
	if got := loops(); got != "" {
		t.Errorf("a refused start left loop devices in src: %q", got)
	}

	start := time.Now()
	startHVM(t, q, "inst", "src:"+disc)
	t.Logf("qvm-start --cdrom=src:%s inst: %.1f s", disc, time.Since(start).Seconds())
	instID := strings.TrimSpace(q.ok("xl", "domid", "inst"))
	instDM := strings.TrimSpace(q.ok("xl", "domid", "inst-dm"))
	if got := loops(); got != disc+"\n" {
		t.Errorf("src's loop devices while inst runs: %q, want %s", got, disc)
	}
	ip, gw := q.pref("inst", "visible_ip"), q.pref("inst", "visible_gateway")
	want := fmt.Sprintf("dhcp ip=%s subnet=%s router=%s dns=%s", ip, q.pref("inst", "visible_netmask"), gw, strings.Join(strings.Fields(q.pref("inst", "dns")), " "))
	if got := guestLine(t, instID, "dhcp "); got != want {
		t.Errorf("inst's guest, booted from src's disc: %q, want %q", got, want)
	}
	if got := guestLine(t, instID, "cdrom "); got != "cdrom "+bootLabel {
		t.Errorf("inst's guest reads %q from src's disc, want cdrom %s", got, bootLabel)
	}
	if out := q.ok("qvm-block", "ls"); !regexp.MustCompile(`(?m)^src:` + regexp.QuoteMeta(disc) + `\s+cdrom, read-only, a loop device of its VM \(stubdomain\)\s+inst \((?:attached: devtype=cdrom, read-only=yes, frontend-dev=)?xvdd\)$`).MatchString(out) {
		t.Errorf("qvm-block ls does not show src:%s in inst:\n%s", disc, out)
	}
	// The disc is src's vbd, connected; no qdisk is left for it, and dom0
	// serves the stubdomain no disc.
	ctx := context.Background()
	xs, err := xenstore.Dial(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer xs.Close()
	served := "/local/domain/" + srcID + "/backend/vbd/" + instDM + "/51760"
	if st, err := xs.ReadString(ctx, served+"/state"); err != nil || st != "4" {
		t.Errorf("%s/state: %q, %v; want 4 (connected)", served, st, err)
	}
	for _, p := range []string{"/local/domain/" + srcID + "/backend/qdisk/" + instDM, "/local/domain/0/backend/qdisk/" + instDM + "/51760", "/local/domain/0/backend/vbd/" + instDM + "/51760"} {
		if names, err := xs.Directory(ctx, p); !errors.Is(err, syscall.ENOENT) {
			t.Errorf("xenstore has %s: %v %v", p, names, err)
		}
	}

	// qvm takes the backends in src away before libxl destroys the
	// domains: libxl would wait for src to do it, and time out.
	if out := q.ok("qvm-kill", "inst"); strings.Contains(out, "level=ERROR") {
		t.Errorf("qvm-kill of an HVM with a disc from a VM:\n%s", out)
	}
	waitHalted(t, q, "inst")
	if err := waitFor(2*time.Minute, func() bool { return loops() == "" }); err != nil {
		t.Errorf("src still has a loop device for inst's disc after inst stopped: %q", loops())
	}
	requireHVMClean(t, "inst", instID, instDM)
	if names, err := xs.Directory(ctx, "/local/domain/"+srcID+"/backend/vbd/"+instDM); !errors.Is(err, syscall.ENOENT) {
		t.Errorf("src still has a backend for inst's stubdomain: %v %v", names, err)
	}
	q.ok("qvm-kill", "src")
	waitHalted(t, q, "src")
	requireOnlyDom0(t)
}

// startHVM starts vm from disc (dom0:PATH or VM:PATH), and on failure
// shows what its stubdomain logged.
func startHVM(t *testing.T, q *qvm, vm, disc string) {
	t.Helper()
	if out, err := q.run("qvm-start", "--cdrom="+disc, vm); err != nil {
		b, _ := os.ReadFile("/var/log/xen/qemu-dm-" + vm + ".log")
		dm, _ := os.ReadFile("/var/log/xen/qemu-dm-" + vm + "-dm.log")
		d, _ := exec.Command("xl", "dmesg").Output()
		t.Fatalf("qvm-start %s: %v\n%s\nstubdomain log:\n%s\nits device model's log:\n%s\nXen console:\n%s", vm, err, out, b, dm, xenvm.Tail(d, 30))
	}
}

// guestLines returns domain domid's lines with the test guest's prefix,
// from Xen's console ring.
func guestLines(t *testing.T, domid string) []string {
	t.Helper()
	out, err := exec.Command("xl", "dmesg").Output()
	if err != nil {
		t.Fatalf("xl dmesg: %v", err)
	}
	return testiso.Lines(string(out), domid)
}

// guestLine waits for the guest's first line starting with prefix.
func guestLine(t *testing.T, domid, prefix string) string {
	t.Helper()
	var got string
	err := waitFor(15*time.Minute, func() bool {
		for _, l := range guestLines(t, domid) {
			if strings.HasPrefix(l, prefix) {
				got = l
				return true
			}
		}
		return false
	})
	if err != nil {
		t.Fatalf("guest d%s never said %q: %v; it said %q", domid, prefix, err, guestLines(t, domid))
	}
	return got
}

// waitGuestLine waits for the guest line want (exactly).
func waitGuestLine(t *testing.T, domid, want string) {
	t.Helper()
	err := waitFor(10*time.Minute, func() bool {
		for _, l := range guestLines(t, domid) {
			if l == want {
				return true
			}
		}
		return false
	})
	if err != nil {
		t.Fatalf("guest d%s never said %q: %v; it said %q", domid, want, err, guestLines(t, domid))
	}
}

func waitHalted(t *testing.T, q *qvm, vm string) {
	t.Helper()
	if err := waitFor(3*time.Minute, func() bool { return q.ls()[vm].State == "Halted" }); err != nil {
		l, _ := exec.Command("xl", "list").CombinedOutput()
		b, _ := os.ReadFile(filepath.Join(stateDir(), "log", vm+".log"))
		t.Fatalf("%s is not Halted after its guest powered off: %v\nxl list:\n%s\nmonitor log:\n%s", vm, err, l, b)
	}
}

// requireHVMClean checks that nothing of an HVM and its stubdomain is
// left: no domains, no xenstore homes, backends or device-model entries,
// no QEMU or QMP relay in dom0 serving them.
func requireHVMClean(t *testing.T, vm, domid, stubid string) {
	t.Helper()
	requireClean(t, vm, domid)
	requireClean(t, vm+"-dm", stubid)
	for _, name := range []string{vm, vm + "-dm"} {
		if exec.Command("xl", "domid", name).Run() == nil {
			t.Errorf("domain %s still exists", name)
		}
	}
	ctx := context.Background()
	xs, err := xenstore.Dial(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer xs.Close()
	var paths []string
	for _, id := range []string{domid, stubid} {
		paths = append(paths, "/local/domain/0/device-model/"+id, "/libxl/"+id)
		for _, kind := range []string{"qdisk", "vbd", "vif", "console", "vkbd", "vfb"} {
			paths = append(paths, "/local/domain/0/backend/"+kind+"/"+id)
		}
	}
	for _, p := range paths {
		if names, err := xs.Directory(ctx, p); !errors.Is(err, syscall.ENOENT) {
			t.Errorf("xenstore still has %s: %v %v", p, names, err)
		}
	}
	// Processes serving the domains: libxl's QEMU for the stubdomain's
	// consoles and disks, and the QMP relay.
	for _, re := range []string{`xen-qemu-system-i386 .*-xen-domid ` + stubid + `\b`, `qvm-stubdom-dm .*-xen-domid ` + stubid + `\b`, `vchan-socket-proxy.*/local/domain/` + stubid + `/`} {
		for _, p := range processes(re) {
			t.Errorf("still running for %s: %s", vm, p.cmdline)
		}
	}
}

// process is a dom0 process: its command line (arguments joined by
// spaces) and real user ID.
type process struct {
	cmdline string
	uid     int
}

// processes lists the dom0 processes whose command line matches re.
func processes(re string) []process {
	match := regexp.MustCompile(re)
	dirs, _ := filepath.Glob("/proc/[0-9]*")
	var out []process
	for _, d := range dirs {
		b, err := os.ReadFile(d + "/cmdline")
		cmd := strings.TrimSpace(strings.ReplaceAll(string(b), "\x00", " "))
		if err != nil || !match.MatchString(cmd) {
			continue
		}
		p := process{cmdline: cmd, uid: -1}
		st, _ := os.ReadFile(d + "/status")
		if m := regexp.MustCompile(`(?m)^Uid:\s+(\d+)`).FindSubmatch(st); m != nil {
			fmt.Sscan(string(m[1]), &p.uid)
		}
		out = append(out, p)
	}
	return out
}

// requireNoDom0QEMU checks that a running stubdomain is served in dom0
// by qvm's unprivileged device model, not by QEMU: no QEMU process for
// it, its device model runs as the stubdomain's own user, and its disc
// is on blkback, with no qdisk backend left.
func requireNoDom0QEMU(t *testing.T, stubid string) {
	t.Helper()
	for _, p := range processes(`xen-qemu-system-i386 .*-xen-domid ` + stubid + `\b`) {
		t.Errorf("a QEMU runs in dom0 for stubdomain %s: %s (uid %d)", stubid, p.cmdline, p.uid)
	}
	dm := processes(`qvm-stubdom-dm .*-xen-domid ` + stubid + `\b`)
	var id uint32
	fmt.Sscan(stubid, &id)
	if len(dm) != 1 || dm[0].uid != consback.UserFor(id) {
		t.Errorf("stubdomain %s's device model in dom0: %+v, want one qvm-stubdom-dm as user %d", stubid, dm, consback.UserFor(id))
	}
	ctx := context.Background()
	xs, err := xenstore.Dial(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer xs.Close()
	if names, err := xs.Directory(ctx, "/local/domain/0/backend/qdisk/"+stubid); !errors.Is(err, syscall.ENOENT) {
		t.Errorf("stubdomain %s still has qdisk backends %v %v", stubid, names, err)
	}
	if names, err := xs.Directory(ctx, "/local/domain/0/backend/vbd/"+stubid); err != nil || len(names) == 0 {
		t.Errorf("stubdomain %s has no blkback disks: %v %v", stubid, names, err)
	}
}
