package e2e

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/qvm-project/qvm/e2e/xenvm"
)

// bedParts returns the test bed's parts, or fails/skips the test if they
// have not been built (see xenvm.RequireParts).
func bedParts(t *testing.T) xenvm.Parts {
	t.Helper()
	return xenvm.RequireParts(t)
}

// TestXenBed proves the test bed before any qvm code is involved: Xen's own
// xl, inside our dom0, reports HVM with HAP and runs a PV and a PVH guest
// (the Debian kernel with the tiny guest image), each of which prints its
// marker on its console and powers off, after which xl list shows it gone;
// then an HVM guest with its device model in dom0 (see hvmInside).
func TestXenBed(t *testing.T) {
	if xenvm.Inside() {
		runChecks(t, []check{
			{"PVPVH", bedInside},
			{"HVM", hvmInside},
		})
		return
	}
	p := bedParts(t)
	xenvm.RunTest(context.Background(), t, xenvm.Config{
		// Under TCG the HVM guest takes about 2 minutes to its first line
		// on an idle 2-core host, and over 6 when the host is busy.
		Timeout:      30 * time.Minute,
		Parts:        p,
		ExtraInitrds: []string{qemuPart(t, p)},
		Files:        p.GuestFiles(),
	})
}

// bedNoHVMInside: on a CPU without SVM and nested paging Xen offers no
// HVM, and xl create of an HVM guest fails and leaves no domain.
func bedNoHVMInside(t *testing.T) {
	caps := virtCaps(t)
	if caps["hvm"] || caps["hap"] {
		t.Fatalf("virt_caps %v: want no hvm and no hap on a CPU without SVM/NPT", caps)
	}
	cfg := writeCfg(t, "bed-hvm", `type="hvm"`, "")
	out, err := exec.Command("xl", "create", cfg).CombinedOutput()
	if err == nil {
		t.Fatalf("xl create of an HVM guest succeeded without HVM support:\n%s", out)
	}
	t.Logf("xl create hvm without HVM support fails as it should:\n%s", out)
	requireOnlyDom0(t)
}

func bedInside(t *testing.T) {
	caps := virtCaps(t)
	if !caps["hvm"] || !caps["hap"] {
		t.Errorf("virt_caps %v: want hvm and hap (QEMU -cpu qemu64,+svm,+npt)", caps)
	}
	// Guests boot from dom0's memory, not over the 9p share.
	dir := t.TempDir()
	start := time.Now()
	copyTo(t, xenvm.GuestKernel, filepath.Join(dir, "vmlinuz"))
	copyTo(t, xenvm.GuestImage, filepath.Join(dir, "guest.cpio.gz"))
	t.Logf("copied the guest kernel and image from the host share in %.2f s", time.Since(start).Seconds())

	for _, typ := range []string{"pv", "pvh"} {
		t.Run(typ, func(t *testing.T) {
			name := "bed-" + typ
			start := time.Now()
			startGuest(t, dir, name, typ, "poweroff")
			marked := time.Since(start)
			waitGone(t, name)
			t.Logf("%s guest: marker on console %.2f s, domain gone %.2f s after xl create started", typ, marked.Seconds(), time.Since(start).Seconds())
		})
	}
	t.Run("shutdown", func(t *testing.T) {
		// A guest that waits is shut down by the toolstack, as qvm-shutdown will.
		// PV: the request goes through xenstore whatever the mode, and a PV
		// boot has none of the PIT reads that now and then triple-fault a
		// PVH guest under nested emulation (xenvm.TripleFaultMsg).
		name := "bed-wait"
		startGuest(t, dir, name, "pv", "wait")
		logPath := consoleLog(name)
		if err := waitFor(time.Minute, func() bool { return fileHasLine(logPath, "guestinit: waiting for shutdown") }); err != nil {
			t.Fatalf("guest %s never said it waits: %v", name, err)
		}
		start := time.Now()
		if out, err := exec.Command("xl", "shutdown", "-w", name).CombinedOutput(); err != nil {
			t.Fatalf("xl shutdown -w %s: %v\n%s", name, err, out)
		}
		waitGone(t, name)
		t.Logf("xl shutdown -w took %.2f s", time.Since(start).Seconds())
	})
	requireOnlyDom0(t)
}

// startGuest creates a guest of the given type from the Debian kernel and
// the guest image in dir, waits for its marker on its console and returns
// the marker. The guest is destroyed when the test ends.
func startGuest(t *testing.T, dir, name, typ, after string) string {
	t.Helper()
	marker := name + "-" + nonce(t)
	cfg := writeCfg(t, name, fmt.Sprintf("type=%q", typ), fmt.Sprintf(`kernel="%s/vmlinuz"
ramdisk="%s/guest.cpio.gz"
extra="console=hvc0 quiet qvm.marker=%s qvm.after=%s"`, dir, dir, marker, after))
	t.Cleanup(func() { _ = exec.Command("xl", "destroy", name).Run() })
	start := time.Now()
	if out, err := exec.Command("xl", "create", cfg).CombinedOutput(); err != nil {
		t.Fatalf("xl create %s: %v\n%s", name, err, out)
	}
	t.Logf("xl create %s (%s): %.2f s", name, typ, time.Since(start).Seconds())
	logPath := consoleLog(name)
	want := "guestinit: marker " + marker
	if err := waitFor(3*time.Minute, func() bool { return fileHasLine(logPath, want) }); err != nil {
		b, _ := os.ReadFile(logPath)
		t.Fatalf("guest %s: no %q on its console: %v; console log:\n%s", name, want, err, xenvm.Tail(b, 30))
	}
	if want := "guestinit: xenbus: /dev/xen/xenbus ok"; !fileHasLine(logPath, want) {
		b, _ := os.ReadFile(logPath)
		t.Errorf("guest %s: no %q on its console (the guest cannot reach xenstore); console log:\n%s", name, want, xenvm.Tail(b, 30))
	}
	return marker
}

// consoleLog is where xenconsoled (--log=guest) writes a guest's console.
func consoleLog(name string) string {
	return filepath.Join("/var/log/xen/console", "guest-"+name+".log")
}

// waitGone waits until xl no longer knows the domain.
func waitGone(t *testing.T, name string) {
	t.Helper()
	if err := waitFor(2*time.Minute, func() bool { return exec.Command("xl", "domid", name).Run() != nil }); err != nil {
		out, _ := exec.Command("xl", "list").CombinedOutput()
		t.Fatalf("guest %s still exists: %v\n%s", name, err, out)
	}
}

func copyTo(t *testing.T, src, dst string) {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// writeCfg writes a guest config for xl and returns its path.
func writeCfg(t *testing.T, name, typ, more string) string {
	t.Helper()
	cfg := fmt.Sprintf("name=%q\n%s\nmemory=128\nvcpus=1\non_poweroff=\"destroy\"\non_crash=\"destroy\"\n%s\n", name, typ, more)
	path := filepath.Join(t.TempDir(), name+".cfg")
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// virtCaps is the set of words on xl info's virt_caps line.
func virtCaps(t *testing.T) map[string]bool {
	t.Helper()
	out, err := exec.Command("xl", "info").CombinedOutput()
	if err != nil {
		t.Fatalf("xl info: %v\n%s", err, out)
	}
	for _, line := range strings.Split(string(out), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if ok && strings.TrimSpace(k) == "virt_caps" {
			caps := map[string]bool{}
			for _, c := range strings.Fields(v) {
				caps[c] = true
			}
			return caps
		}
	}
	t.Fatalf("xl info has no virt_caps line:\n%s", out)
	return nil
}

// requireOnlyDom0 fails unless xl list shows Domain-0 alone.
func requireOnlyDom0(t *testing.T) {
	t.Helper()
	// A domain being destroyed loses its name first (libxl removes its
	// xenstore directory), then its memory; once destroyed it stays in
	// Xen's list, dying, until dom0's daemons (xenstored, xenconsoled) have
	// let go of its pages: under emulation that takes a moment. Only a
	// named domain that is not dying, or any domain still there after a
	// minute, is left over.
	deadline := time.Now().Add(time.Minute)
	for {
		out, err := exec.Command("xl", "list").CombinedOutput()
		if err != nil {
			t.Fatalf("xl list: %v\n%s", err, out)
		}
		others := otherDomains(string(out))
		if len(others) == 0 {
			return
		}
		var names []string
		going := 0
		for _, d := range others {
			names = append(names, d.Name)
			if d.going() {
				going++
			}
		}
		if going < len(others) || time.Now().After(deadline) {
			t.Fatalf("xl list: want Domain-0 only, got Domain-0 and %q:\n%s", names, out)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// xlDomain is a line of xl list's output.
type xlDomain struct{ Name, ID, State string }

// going reports whether the domain is on its way out: dying (state flag
// d) or with no name left ("(null)").
func (d xlDomain) going() bool {
	return strings.Contains(d.State, "d") || d.Name == "(null)"
}

// otherDomains returns the domains but dom0 in xl list's output.
func otherDomains(xlList string) []xlDomain {
	var ds []xlDomain
	for _, line := range strings.Split(strings.TrimSpace(xlList), "\n")[1:] {
		f := strings.Fields(line)
		if len(f) < 5 || f[1] == "0" {
			continue
		}
		ds = append(ds, xlDomain{Name: f[0], ID: f[1], State: f[4]})
	}
	return ds
}

func fileHasLine(path, want string) bool {
	f, err := os.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if strings.Contains(sc.Text(), want) {
			return true
		}
	}
	return false
}

// faultsBeforeCheck is the number of guest triple faults in Xen's log when
// the running check began, or -1 when it could not be read (see runChecks).
// Checks run one after another, so one counter serves them all.
var faultsBeforeCheck atomic.Int64

// noteFaultsBeforeCheck records the faults before a check begins.
func noteFaultsBeforeCheck() {
	if f, err := guestTripleFaults(); err == nil {
		faultsBeforeCheck.Store(int64(len(f)))
	} else {
		faultsBeforeCheck.Store(-1)
	}
}

// waitFor polls ok until it holds or limit passes. It gives up early when
// Xen reports that a guest triple-faulted during the running check, even
// before the wait began (in the qvm-start before it, say): what the test
// waits for will then never come. A fault of an earlier check is not this
// one's.
func waitFor(limit time.Duration, ok func() bool) error {
	deadline := time.Now().Add(limit)
	var nextCheck time.Time // at once, then every 5 s
	// Without the count before the check, no fault can be told to be new.
	before := faultsBeforeCheck.Load()
	for !ok() {
		if before >= 0 && time.Now().After(nextCheck) {
			if faults, ferr := guestTripleFaults(); ferr == nil && int64(len(faults)) > before {
				return fmt.Errorf("%s (%s)", xenvm.TripleFaultMsg, faults[len(faults)-1])
			}
			nextCheck = time.Now().Add(5 * time.Second)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not after %s", limit)
		}
		time.Sleep(250 * time.Millisecond)
	}
	return nil
}

// guestTripleFaults returns Xen's console lines saying that a guest
// triple-faulted, oldest first (see xenvm.TripleFaultMsg).
func guestTripleFaults() ([]string, error) {
	out, err := exec.Command("xl", "dmesg").Output()
	if err != nil {
		return nil, err
	}
	var faults []string
	for _, l := range strings.Split(string(out), "\n") {
		if strings.Contains(l, xenvm.TripleFaultMark) {
			faults = append(faults, strings.TrimSpace(l))
		}
	}
	return faults, nil
}

// destroyLeftovers destroys every domain but dom0, saying which.
func destroyLeftovers(t *testing.T) {
	out, err := exec.Command("xl", "list").Output()
	if err != nil {
		t.Logf("xl list: %v", err)
		return
	}
	for _, d := range otherDomains(string(out)) {
		t.Logf("destroying %s (domain %s), left by the check", d.Name, d.ID)
		if out, err := exec.Command("xl", "destroy", d.ID).CombinedOutput(); err != nil {
			t.Logf("xl destroy %s: %v\n%s", d.ID, err, out)
		}
	}
}

func nonce(t *testing.T) string {
	b := make([]byte, 6)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}
