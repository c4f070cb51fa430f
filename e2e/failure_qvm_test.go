package e2e

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// failuresInside: failures after libxl has built the domain leave nothing
// either: a hotplug script that fails, qvm-start killed between create and
// unpause (its monitor takes the paused domain down), and a killed monitor
// (its DHCP responder dies with it).
func failuresInside(t *testing.T) {
	q := newQvm(t)
	installKernel(t)
	q.ok("qvm-create", "--class", "StandaloneVM", "--property", "virt_mode=pv", "--property", "vcpus=1",
		"--property", "kernelopts=quiet qvm.dhcp=eth0 qvm.after=wait", "--label", "red", "pvvm")

	t.Run("hotplug fails", func(t *testing.T) {
		cmd := exec.Command("qvm-start", "pvvm")
		cmd.Env = append(os.Environ(), "QVM_FAILPOINT=vif-hotplug")
		out, err := cmd.CombinedOutput()
		t.Logf("$ QVM_FAILPOINT=vif-hotplug qvm-start pvvm\n%s", out)
		if err == nil {
			t.Fatal("qvm-start succeeded with a failing hotplug script")
		}
		requireNothingLeft(t, q, "pvvm")
	})

	t.Run("qvm-start killed before unpause", func(t *testing.T) {
		cmd := exec.Command("qvm-start", "pvvm")
		cmd.Env = append(os.Environ(), "QVM_FAILPOINT=before-unpause")
		stderr, err := cmd.StderrPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		reached := make(chan struct{})
		go func() {
			sc := bufio.NewScanner(stderr)
			for sc.Scan() {
				t.Logf("qvm-start: %s", sc.Text())
				if strings.Contains(sc.Text(), "failpoint reached") {
					close(reached)
				}
			}
		}()
		select {
		case <-reached:
		case <-time.After(5 * time.Minute):
			cmd.Process.Kill()
			t.Fatal("qvm-start never reached the failpoint")
		}
		// The domain is built and paused.
		if l, _ := exec.Command("xl", "list", "pvvm").CombinedOutput(); !regexp.MustCompile(`(?m)^pvvm\s.*--p---`).Match(l) {
			t.Errorf("at the failpoint: want pvvm paused:\n%s", l)
		}
		id := strings.TrimSpace(q.ok("xl", "domid", "pvvm"))
		cmd.Process.Signal(syscall.SIGKILL)
		cmd.Wait()
		// The monitor takes the domain down: its name goes first (with
		// its xenstore directory), the domain itself once destroyed.
		if err := waitFor(2*time.Minute, func() bool { return exec.Command("xl", "list", id).Run() != nil }); err != nil {
			l, _ := exec.Command("xl", "list").CombinedOutput()
			b, _ := os.ReadFile(filepath.Join(stateDir(), "log", "pvvm.log"))
			t.Fatalf("the paused domain of a killed qvm-start stays: %v\n%s\nmonitor log:\n%s", err, l, b)
		}
		requireNothingLeft(t, q, "pvvm")
	})

	t.Run("monitor killed", func(t *testing.T) {
		q.ok("qvm-start", "pvvm")
		id := strings.TrimSpace(q.ok("xl", "domid", "pvvm"))
		vif := "vif" + id + ".0"
		responder := `\bdhcpd\b.*--interface ` + regexp.QuoteMeta(vif) + `\b`
		if err := waitFor(time.Minute, func() bool { return len(procs(responder)) > 0 }); err != nil {
			t.Fatalf("no DHCP responder on %s: %v", vif, err)
		}
		monitors := procs(`\bmonitor\b.*\bpvvm\b`)
		if len(monitors) != 1 {
			t.Fatalf("monitors of pvvm: %v", monitors)
		}
		syscall.Kill(monitors[0], syscall.SIGKILL)
		if err := waitFor(time.Minute, func() bool { return len(procs(responder)) == 0 }); err != nil {
			t.Errorf("the responder outlived its killed monitor: %v (%v)", procs(responder), err)
		}
		q.ok("qvm-kill", "pvvm")
		if err := waitFor(time.Minute, func() bool { return exec.Command("xl", "domid", "pvvm").Run() != nil }); err != nil {
			t.Fatalf("pvvm after qvm-kill: %v", err)
		}
		requireNothingLeft(t, q, "pvvm")
	})
}

// requireNothingLeft: no domain but dom0, nothing of the VM in xenstore,
// no loop device, no qvm process for it, no run files, and the VM halted.
func requireNothingLeft(t *testing.T, q *qvm, vm string) {
	t.Helper()
	requireOnlyDom0(t)
	requireClean(t, vm, "")
	if names := xenstoreList(t, "/local/domain"); strings.Join(names, " ") != "0" {
		t.Errorf("xenstore domains left: %q", names)
	}
	for _, kind := range []string{"vbd", "vif"} {
		if names := xenstoreList(t, "/local/domain/0/backend/"+kind); len(names) != 0 {
			t.Errorf("%s backends left: %q", kind, names)
		}
	}
	// The monitor of an abandoned start exits once it has cleaned up.
	if err := waitFor(time.Minute, func() bool { return len(procs(`\bqvm\b.*\b`+regexp.QuoteMeta(vm)+`\b`)) == 0 }); err != nil {
		t.Errorf("qvm processes for %s left: %v", vm, procs(`\bqvm\b.*\b`+regexp.QuoteMeta(vm)+`\b`))
	}
	if m, _ := filepath.Glob(filepath.Join(stateDir(), "appvms", vm, "*-snap.img")); len(m) != 0 {
		t.Errorf("run files left: %v", m)
	}
	if e := q.ls()[vm]; e.State != "Halted" {
		t.Errorf("%s: %s, want Halted", vm, e.State)
	}
}

// procs lists the pids whose command line matches re.
func procs(re string) []int {
	match := regexp.MustCompile(re)
	var out []int
	dirs, _ := filepath.Glob("/proc/[0-9]*")
	for _, d := range dirs {
		b, err := os.ReadFile(filepath.Join(d, "cmdline"))
		if err != nil || len(b) == 0 || !match.Match([]byte(strings.ReplaceAll(string(b), "\x00", " "))) {
			continue
		}
		if pid, err := strconv.Atoi(filepath.Base(d)); err == nil && pid != os.Getpid() {
			out = append(out, pid)
		}
	}
	return out
}
