package testiso

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/qvm-project/qvm/e2e/xenvm"
	"github.com/qvm-project/qvm/internal/testenv"
)

// spec returns a Spec for the test bed's kernel, or skips/fails when the
// parts are not built.
func spec(t *testing.T) Spec {
	t.Helper()
	p, err := xenvm.DefaultParts()
	if err != nil {
		testenv.Missing(t, "%v", err)
	}
	s, err := FromDom0Dir(filepath.Dir(p.Kernel))
	if err != nil {
		testenv.Missing(t, "%v", err)
	}
	for _, f := range []string{IsolinuxBin, LdlinuxC32, Busybox} {
		testenv.RequireFile(t, f)
	}
	testenv.LookPath(t, "xorriso")
	s.WorkDir = t.TempDir()
	return s
}

// TestGuestBootsBare boots the ISO in plain QEMU (no Xen, no NIC): the
// guest's init runs, finds no NIC, reads its CD-ROM's label and, the label
// being PowerOffLabel, powers the machine off.
func TestGuestBootsBare(t *testing.T) {
	s := spec(t)
	testenv.LookPath(t, "qemu-system-x86_64")
	s.Label = PowerOffLabel
	s.Cmdline = BareCmdline
	s.Out = filepath.Join(s.WorkDir, "guest.iso")
	if err := Build(context.Background(), s); err != nil {
		t.Fatal(err)
	}
	serial := filepath.Join(s.WorkDir, "serial.log")
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "qemu-system-x86_64", "-m", "256", "-nographic", "-no-reboot", "-nic", "none",
		"-cdrom", s.Out, "-boot", "d", "-serial", "file:"+serial, "-monitor", "none", "-display", "none").CombinedOutput()
	log, _ := os.ReadFile(serial)
	if err != nil {
		t.Fatalf("qemu: %v\n%s\nserial:\n%s", err, out, log)
	}
	got := Lines(string(log), "")
	want := []string{"start", "dhcp none", "cdrom " + PowerOffLabel, "poweroff"}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Fatalf("guest lines %q, want %q; serial:\n%s", got, want, log)
	}
}

func TestBuildRefusesBadLabel(t *testing.T) {
	for _, l := range []string{"", "lower", "A-B", strings.Repeat("A", 33)} {
		if err := Build(context.Background(), Spec{Label: l}); err == nil || !strings.Contains(err.Error(), "label") {
			t.Errorf("label %q: got %v, want a label error", l, err)
		}
	}
}
