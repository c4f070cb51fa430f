package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/qvm-project/qvm/e2e/xenvm"
	"github.com/qvm-project/qvm/xenstore"
)

// qvm runs qvm commands in dom0.
type qvm struct{ t *testing.T }

func newQvm(t *testing.T) *qvm { return &qvm{t} }

func (q *qvm) run(argv ...string) (string, error) {
	start := time.Now()
	out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput()
	q.t.Logf("$ %s  (%.2f s)\n%s", strings.Join(argv, " "), time.Since(start).Seconds(), out)
	return string(out), err
}

func (q *qvm) ok(argv ...string) string {
	q.t.Helper()
	out, err := q.run(argv...)
	if err != nil {
		q.t.Fatalf("%s: %v\n%s", strings.Join(argv, " "), err, out)
	}
	return out
}

func (q *qvm) pref(vm, prop string) string {
	q.t.Helper()
	return strings.TrimSpace(q.ok("qvm-prefs", vm, prop))
}

// installKernel makes the bed's Debian kernel, with the tiny guest image as
// its initramfs, a VM kernel of qvm's.
func installKernel(t *testing.T) {
	dir := filepath.Join(stateDir(), "vm-kernels", "6.1-bed")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	copyTo(t, xenvm.GuestKernel, filepath.Join(dir, "vmlinuz"))
	copyTo(t, xenvm.GuestImage, filepath.Join(dir, "initramfs"))
}

// consoleValue waits for "guestinit: PREFIX..." on a VM's console and
// returns the rest of the line.
func consoleValue(t *testing.T, vm, prefix string) string {
	t.Helper()
	path := consoleLog(vm)
	want := "guestinit: " + prefix
	var got string
	// Generous: under TCG on a loaded 2-core machine a guest can take
	// minutes to get this far.
	err := waitFor(6*time.Minute, func() bool {
		b, _ := os.ReadFile(path)
		for _, line := range strings.Split(string(b), "\n") {
			if i := strings.Index(line, want); i >= 0 {
				got = strings.TrimRight(line[i+len(want):], "\r")
				return true
			}
		}
		return false
	})
	if err != nil {
		b, _ := os.ReadFile(path)
		t.Fatalf("%s: no %q on its console: %v\n%s", vm, want, err, xenvm.Tail(b, 40))
	}
	return got
}

// lsEntry is one VM of qvm-ls --format json.
type lsEntry struct {
	Name       string         `json:"name"`
	State      string         `json:"state"`
	Properties map[string]any `json:"properties"`
}

func (q *qvm) ls() map[string]lsEntry {
	q.t.Helper()
	out, err := exec.Command("qvm-ls", "--format", "json").Output()
	if err != nil {
		q.t.Fatalf("qvm-ls --format json: %v", err)
	}
	var list []lsEntry
	if err := json.Unmarshal(out, &list); err != nil {
		q.t.Fatal(err)
	}
	m := map[string]lsEntry{}
	for _, e := range list {
		m[e.Name] = e
	}
	return m
}

// requireClean checks that nothing of a gone VM is left: no xenstore home
// or backends of its domain, no loop device serving its images.
func requireClean(t *testing.T, vm, domid string) {
	t.Helper()
	ctx := context.Background()
	xs, err := xenstore.Dial(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer xs.Close()
	// The check must be able to see: dom0's home is there.
	if _, err := xs.Directory(ctx, "/local/domain/0"); err != nil {
		t.Fatalf("xenstore: %v", err)
	}
	if domid != "" {
		for _, p := range []string{"/local/domain/" + domid, "/local/domain/0/backend/vbd/" + domid, "/local/domain/0/backend/vif/" + domid} {
			if names, err := xs.Directory(ctx, p); !errors.Is(err, syscall.ENOENT) {
				t.Errorf("xenstore still has %s: %v %v", p, names, err)
			}
		}
	}
	loops, _ := filepath.Glob("/sys/block/loop*/loop/backing_file")
	for _, l := range loops {
		b, _ := os.ReadFile(l)
		if strings.Contains(string(b), filepath.Join(stateDir(), "appvms", vm)+"/") {
			t.Errorf("loop device still attached: %s -> %s", l, strings.TrimSpace(string(b)))
		}
	}
}

// qvmInside runs the seed workflows with the real qvm commands in dom0:
// VMs defined, started (two at once), their guests reading the keys qvm
// published, qvm-ls showing the true state, shutdown, kill, clone, remove,
// and a start that fails leaving nothing.
func qvmInside(t *testing.T) {
	q := newQvm(t)
	installKernel(t)
	q.ok("qvm-create", "--class", "TemplateVM", "debian-12", "-l", "black")
	q.ok("qvm-prefs", "debian-12", "kernelopts", "quiet qvm.keys=1 qvm.after=wait")
	// One vCPU each: the emulated machine has two CPUs for Xen, dom0 and
	// the guests, and TCG is slow enough already.
	q.ok("qvm-prefs", "debian-12", "vcpus", "1")
	// A PVH AppVM (the default mode) and a PV StandaloneVM that also asks
	// for its address by DHCP, like a guest without Qubes agents.
	q.ok("qvm-create", "--template", "debian-12", "--label", "blue", "work")
	q.ok("qvm-create", "--class", "StandaloneVM", "--property", "virt_mode=pv",
		"--property", "kernelopts=quiet qvm.keys=1 qvm.dhcp=eth0 qvm.after=wait", "--property", "vcpus=1", "--label", "red", "pvvm")
	if got := q.pref("work", "virt_mode"); got != "pvh" {
		t.Errorf("work virt_mode %s", got)
	}
	q.ok("qvm-ls", "-n")

	// Two VMs started at once both come up with their own addresses.
	var wg sync.WaitGroup
	for _, vm := range []string{"work", "pvvm"} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if out, err := q.run("qvm-start", vm); err != nil {
				t.Errorf("qvm-start %s: %v\n%s", vm, err, out)
			}
		}()
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	ls := q.ok("qvm-ls", "-n")
	for _, vm := range []string{"work", "pvvm"} {
		ip, gw := q.pref(vm, "visible_ip"), q.pref(vm, "visible_gateway")
		if !regexp.MustCompile(`(?m)^` + vm + `\s+Running\s+dom0\s+` + regexp.QuoteMeta(ip) + `\s+-\s+` + regexp.QuoteMeta(gw) + `$`).MatchString(ls) {
			t.Errorf("qvm-ls -n does not show %s running with %s via %s:\n%s", vm, ip, gw, ls)
		}
		// The guest read exactly what qvm-ls shows, from the keys qvm
		// published in xenstore...
		for key, want := range map[string]string{"qubes-ip": ip, "qubes-gateway": gw, "qubes-netmask": "255.255.255.255",
			"qubes-primary-dns": "10.139.1.1", "qubes-secondary-dns": "10.139.1.2", "name": vm, "qubes-mac": q.pref(vm, "mac")} {
			if got := consoleValue(t, vm, "key "+key+"="); got != want {
				t.Errorf("%s: guest read %s=%q, want %q", vm, key, got, want)
			}
		}
		// ...which it cannot change, and no other guest can read.
		if got := consoleValue(t, vm, "overwrite qubes-ip: "); !strings.HasPrefix(got, "EACCES") {
			t.Errorf("%s: overwriting its own key: %q, want EACCES", vm, got)
		}
		b, _ := os.ReadFile(consoleLog(vm))
		if m := regexp.MustCompile(`guestinit: peer \d+ qubes-ip: ok`).Find(b); m != nil {
			t.Errorf("%s read another VM's keys: %s", vm, m)
		}
	}
	// Each guest tried the other's keys and was refused.
	ids := map[string]string{}
	for _, vm := range []string{"work", "pvvm"} {
		ids[vm] = strings.TrimSpace(q.ok("xl", "domid", vm))
	}
	for vm, other := range map[string]string{"work": "pvvm", "pvvm": "work"} {
		if got := consoleValue(t, vm, "peer "+ids[other]+" qubes-ip: "); !strings.HasPrefix(got, "EACCES") {
			t.Errorf("%s reading %s's qubes-ip: %q, want EACCES", vm, other, got)
		}
	}
	// The agent-less PV guest got its address from qvm's DHCP responder
	// on its dom0 backend interface.
	want := fmt.Sprintf("ip=%s netmask=255.255.255.255 router=%s dns=10.139.1.1,10.139.1.2", q.pref("pvvm", "visible_ip"), q.pref("pvvm", "visible_gateway"))
	if got := consoleValue(t, "pvvm", "dhcp "); !strings.HasPrefix(got, want) {
		t.Errorf("pvvm DHCP: %q, want %q", got, want)
	}

	// qvm-ls reports libxl's state, not a guess: pause and see it.
	workID := strings.TrimSpace(q.ok("xl", "domid", "work"))
	pvID := strings.TrimSpace(q.ok("xl", "domid", "pvvm"))
	if e := q.ls()["work"]; e.State != "Running" || fmt.Sprint(e.Properties["xid"]) != workID {
		t.Errorf("work: %+v, xl domid %s", e, workID)
	}
	q.ok("xl", "pause", "pvvm")
	if e := q.ls()["pvvm"]; e.State != "Paused" {
		t.Errorf("pvvm after xl pause: %s", e.State)
	}
	q.ok("xl", "unpause", "pvvm")

	// Shutdown: gone, with its keys, backends and loop devices.
	q.ok("qvm-shutdown", "--wait", "work")
	if e := q.ls()["work"]; e.State != "Halted" {
		t.Errorf("work after qvm-shutdown --wait: %s", e.State)
	}
	requireClean(t, "work", workID)
	if _, err := os.Stat(filepath.Join(stateDir(), "appvms", "work", "root-snap.img")); !os.IsNotExist(err) {
		t.Errorf("root snapshot after shutdown: %v", err)
	}
	q.ok("qvm-kill", "pvvm")
	if err := waitFor(time.Minute, func() bool { return exec.Command("xl", "domid", "pvvm").Run() != nil }); err != nil {
		t.Errorf("pvvm after qvm-kill: %v", err)
	}
	requireOnlyDom0(t)
	requireClean(t, "pvvm", pvID)

	// A clone starts with its own address.
	q.ok("qvm-clone", "pvvm", "pvvm-copy")
	q.ok("qvm-start", "pvvm-copy")
	cloneIP := q.pref("pvvm-copy", "visible_ip")
	if cloneIP == q.pref("pvvm", "visible_ip") {
		t.Errorf("clone has its source's IP %s", cloneIP)
	}
	if got := consoleValue(t, "pvvm-copy", "key qubes-ip="); got != cloneIP {
		t.Errorf("clone read qubes-ip=%s, want %s", got, cloneIP)
	}
	// The guest powering off by itself: its monitor destroys the domain.
	copyID := strings.TrimSpace(q.ok("xl", "domid", "pvvm-copy"))
	q.ok("xl", "shutdown", "pvvm-copy")
	if err := waitFor(2*time.Minute, func() bool { return q.ls()["pvvm-copy"].State == "Halted" }); err != nil {
		// Have the monitor print its goroutines into its log.
		signalProcs(`\bmonitor\b.*\bpvvm-copy\b`, syscall.SIGQUIT)
		time.Sleep(2 * time.Second)
		b, _ := os.ReadFile(filepath.Join(stateDir(), "log", "pvvm-copy.log"))
		c, _ := os.ReadFile(consoleLog("pvvm-copy"))
		l, _ := exec.Command("xl", "list").CombinedOutput()
		t.Errorf("pvvm-copy after the guest shut down: %v\nmonitor log:\n%s\nconsole:\n%s\nxl list:\n%s", err, b, xenvm.Tail(c, 20), l)
	}
	requireClean(t, "pvvm-copy", copyID)
	q.ok("qvm-remove", "-f", "pvvm-copy")

	// A start that fails leaves no domain, no keys, no backends, no loops.
	q.ok("qvm-create", "--class", "StandaloneVM", "--property", "memory=100000", "--property", "maxmem=0", "--label", "red", "huge")
	if out, err := q.run("qvm-start", "huge"); err == nil || !strings.Contains(out, "not enough free memory") {
		t.Errorf("qvm-start of a VM bigger than the host: %v\n%s", err, out)
	}
	requireOnlyDom0(t)
	requireClean(t, "huge", "")
	if names := xenstoreList(t, "/local/domain"); strings.Join(names, " ") != "0" {
		t.Errorf("xenstore domains after a failed start: %q", names)
	}
	for _, kind := range []string{"vbd", "vif"} {
		if names := xenstoreList(t, "/local/domain/0/backend/"+kind); len(names) != 0 {
			t.Errorf("%s backends after a failed start: %q", kind, names)
		}
	}
	q.ok("qvm-ls", "-n")
}

// signalProcs sends sig to every process whose command line matches re.
func signalProcs(re string, sig syscall.Signal) {
	match := regexp.MustCompile(re)
	dirs, _ := filepath.Glob("/proc/[0-9]*")
	for _, d := range dirs {
		b, err := os.ReadFile(filepath.Join(d, "cmdline"))
		if err != nil || !match.Match(bytes.ReplaceAll(b, []byte{0}, []byte(" "))) {
			continue
		}
		if pid, err := strconv.Atoi(filepath.Base(d)); err == nil {
			syscall.Kill(pid, sig)
		}
	}
}

// xenstoreList lists a xenstore directory (nil if it does not exist).
func xenstoreList(t *testing.T, path string) []string {
	t.Helper()
	ctx := context.Background()
	xs, err := xenstore.Dial(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer xs.Close()
	names, err := xs.Directory(ctx, path)
	if errors.Is(err, syscall.ENOENT) {
		return nil
	}
	if err != nil {
		t.Fatalf("xenstore directory %s: %v", path, err)
	}
	return names
}
