package e2e

import (
	"os/exec"
	"strings"
	"testing"
)

// expectRun runs a command that must exit with code and print exactly want.
func (q *qvm) expectRun(code int, want string, argv ...string) {
	q.t.Helper()
	out, err := q.run(argv...)
	got := 0
	if ee, ok := err.(*exec.ExitError); ok {
		got = ee.ExitCode()
	} else if err != nil {
		q.t.Fatalf("%s: %v", strings.Join(argv, " "), err)
	}
	if got != code || out != want {
		q.t.Errorf("%s: exit %d, output %q; want exit %d, %q", strings.Join(argv, " "), got, out, code, want)
	}
}

// pauseCheckInside: qvm-pause and qvm-unpause act on the domain through
// libxl, and qvm-check --running/--paused and qvm-ls report libxl's state,
// before, during and after. The VM is PV: pausing is the same for every
// virtualisation mode, and a PV guest's boot has none of the PIT reads that
// now and then triple-fault PVH guests under nested emulation (see
// xenvm.TripleFaultMsg); Workflows covers PVH.
func pauseCheckInside(t *testing.T) {
	q := newQvm(t)
	installKernel(t)
	q.ok("qvm-create", "--class", "TemplateVM", "debian-12", "-l", "black")
	q.ok("qvm-prefs", "debian-12", "kernelopts", "quiet qvm.keys=1 qvm.after=wait")
	q.ok("qvm-prefs", "debian-12", "vcpus", "1")
	q.ok("qvm-create", "--template", "debian-12", "--label", "blue", "--prop", "netvm=", "--prop", "virt_mode=pv", "pz")

	q.expectRun(0, "qvm-check: pz: exists\n", "qvm-check", "pz")
	q.expectRun(1, "qvm-check: None of qubes: running\n", "qvm-check", "--running", "pz")
	q.expectRun(1, "qvm-pause: error: Failed to pause: pz: pz is not running (it is halted): start it first\n", "qvm-pause", "pz")

	q.ok("qvm-start", "pz")
	id := strings.TrimSpace(q.ok("xl", "domid", "pz"))
	q.expectRun(0, "qvm-check: pz: running\n", "qvm-check", "--running", "pz")
	q.expectRun(1, "qvm-check: None of qubes: paused\n", "qvm-check", "--paused", "pz")
	q.expectRun(1, "qvm-unpause: error: Failed to unpause/resume: pz: pz is not paused (it is running)\n", "qvm-unpause", "pz")

	q.expectRun(0, "", "qvm-pause", "pz")
	if out := q.ok("xl", "list", id); !strings.Contains(out, "--p---") {
		t.Errorf("xl list after qvm-pause:\n%s", out)
	}
	q.expectRun(0, "pz|Paused\n", "qvm-ls", "--raw-data", "-O", "name,state", "pz")
	q.expectRun(0, "qvm-check: pz: paused\n", "qvm-check", "--paused", "pz")
	// Qubes' is_running: a paused VM is started.
	q.expectRun(0, "qvm-check: pz: running\n", "qvm-check", "--running", "pz")
	q.expectRun(1, "qvm-pause: error: Failed to pause: pz: pz is not running (it is paused): only a running VM can be paused\n", "qvm-pause", "pz")

	q.expectRun(0, "", "qvm-unpause", "pz")
	if out := q.ok("xl", "list", id); strings.Contains(out, "--p---") {
		t.Errorf("xl list after qvm-unpause:\n%s", out)
	}
	q.expectRun(0, "pz|Running\n", "qvm-ls", "--raw-data", "-O", "name,state", "pz")
	q.expectRun(1, "qvm-check: None of qubes: paused\n", "qvm-check", "--paused", "pz")

	q.ok("qvm-kill", "pz")
	q.expectRun(1, "qvm-check: None of qubes: running\n", "qvm-check", "--running", "pz")
	requireOnlyDom0(t)
}
