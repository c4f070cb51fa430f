package e2e

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/qvm-project/qvm/e2e/xenvm"
)

// The end-to-end checks share few bed boots: beds run one at a time (a boot
// costs a minute or more under emulation) and make test must stay well under
// an hour. Each suite below boots one bed and runs its checks inside as
// subtests, in order; each qvm check gets a state directory of its own
// (QVM_DIR), so what one leaves cannot touch the next, and ends with dom0
// alone.

// check is one end-to-end check run inside a bed.
type check struct {
	name string
	run  func(t *testing.T)
}

// runChecks runs checks inside dom0, each on its own state directory.
func runChecks(t *testing.T, checks []check) {
	for _, c := range checks {
		t.Run(c.name, func(t *testing.T) {
			freshState(t)
			noteFaultsBeforeCheck()
			// A check that stops half-way (t.Fatal) leaves its VMs
			// running: they go with it, so the next check starts with
			// dom0 alone all the same.
			t.Cleanup(func() { destroyLeftovers(t) })
			c.run(t)
			requireOnlyDom0(t)
		})
	}
}

// TestQvm boots the bed once (HVM-capable, guest kernel and image shared)
// and runs qvm's checks with PV and PVH guests.
func TestQvm(t *testing.T) {
	if xenvm.Inside() {
		runChecks(t, []check{
			{"Workflows", qvmInside},
			{"FailuresAfterCreate", failuresInside},
			{"PauseCheck", pauseCheckInside},
			{"Dom0Firewall", firewallInside},
			{"Vchan", vchanInside},
		})
		return
	}
	p := bedParts(t)
	// Generous: hundreds of qvm commands, each seconds long under
	// emulation on a loaded machine; this bounds a hang, not the speed.
	xenvm.RunTest(context.Background(), t, xenvm.Config{Parts: p, Files: p.GuestFiles(), Timeout: 50 * time.Minute,
		XenArgs: []string{"bootscrub=0"}})
}

// TestNoHVM boots the machine without SVM and nested paging: Xen then
// offers no HVM; xl create of an HVM guest fails and leaves no domain, and
// qvm-start of an HVM fails with the clear VT-x/AMD-V message and changes
// nothing.
func TestNoHVM(t *testing.T) {
	if xenvm.Inside() {
		runChecks(t, []check{
			{"Xl", bedNoHVMInside},
			{"Qvm", qvmNoHVMInside},
		})
		return
	}
	p := bedParts(t)
	xenvm.RunTest(context.Background(), t, xenvm.Config{Parts: p, NoHVM: true})
}

func qvmNoHVMInside(t *testing.T) {
	q := newQvm(t)
	q.ok("qvm-create", "--hvm", "--label", "red", "win10")
	before := q.ok("qvm-ls", "--format", "json")
	out, err := q.run("qvm-start", "win10")
	if err == nil || !strings.Contains(out, "enable hardware virtualisation (VT-x/AMD-V) in the firmware") {
		t.Errorf("qvm-start of an HVM without HVM support: %v\n%s", err, out)
	}
	requireOnlyDom0(t)
	if after := q.ok("qvm-ls", "--format", "json"); after != before {
		t.Errorf("qvm-ls changed:\n%s\n%s", before, after)
	}
}

// stateDirs holds the checks' state directories in dom0.
const stateDirs = "/var/lib/qvm-e2e"

// freshState gives the check a state directory of its own: every qvm
// command it runs (and the monitors and hotplug steps they start, which
// inherit the environment) uses it.
func freshState(t *testing.T) {
	dir := filepath.Join(stateDirs, strings.ReplaceAll(t.Name(), "/", "_"))
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("QVM_DIR", dir)
}

// stateDir is the running check's state directory.
func stateDir() string {
	if d := os.Getenv("QVM_DIR"); d != "" {
		return d
	}
	return "/var/lib/qvm"
}
