package xenvm

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/qvm-project/qvm/internal/testenv"
)

// Dom0QEMUImageName is the archive with Xen's device model QEMU and its
// firmware (`make dom0-qemu-image`), next to the dom0 image; appended to
// the dom0 image (Config.ExtraInitrds) it lets dom0 run HVM guests with
// QEMU in dom0.
const Dom0QEMUImageName = "dom0-qemu.cpio.gz"

// Dom0QEMUImage is the path of the device-model archive next to p's dom0
// image.
func (p Parts) Dom0QEMUImage() string {
	return filepath.Join(filepath.Dir(p.Dom0Image), Dom0QEMUImageName)
}

// SkipShort ends a test that boots the test bed when the tests run with
// -short (`make check`): it is skipped, unless QVM_TEST_STRICT=1 (`make
// test`), where a skipped bed test would hide the tests it runs, so it
// fails instead.
func SkipShort(t testing.TB) {
	t.Helper()
	if !testing.Short() {
		return
	}
	if testenv.Strict() {
		t.Fatal("xenvm: -short skips the nested-Xen test bed, and QVM_TEST_STRICT=1 forbids skipping it: run make test without -short")
	}
	t.Skip("xenvm: -short: the nested-Xen test bed is not booted")
}

// RequireParts returns the test bed's parts for a test that boots it, after
// SkipShort; when QEMU or a part (Xen, the kernel, the dom0 and guest
// images) is missing, testenv.Missing fails or skips the test.
func RequireParts(t testing.TB) Parts {
	t.Helper()
	SkipShort(t)
	testenv.LookPath(t, "qemu-system-x86_64")
	p, err := DefaultParts()
	if err != nil {
		testenv.Missing(t, "%v", err)
	}
	if m := p.Missing(); len(m) > 0 {
		testenv.Missing(t, "test bed parts not built (run `make dom0-image guest-image`): %s", strings.Join(m, ", "))
	}
	return p
}

// RequireDom0QEMU returns p.Dom0QEMUImage(), or fails or skips the test
// (testenv.Missing) when it has not been built.
func RequireDom0QEMU(t testing.TB, p Parts) string {
	t.Helper()
	f := p.Dom0QEMUImage()
	if _, err := os.Stat(f); err != nil {
		testenv.Missing(t, "device model archive not built (run `make dom0-qemu-image`): %v", err)
	}
	return f
}
