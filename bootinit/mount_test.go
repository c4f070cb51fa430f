package bootinit

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/qvm-project/qvm/internal/testenv"
)

func TestMountTmpfs(t *testing.T) {
	testenv.RequireRoot(t)
	dir := filepath.Join(t.TempDir(), "a", "b")
	m := Mount{Source: "tmpfs", Target: dir, FSType: "tmpfs", Data: "size=1m"}
	if err := m.Do(); err != nil {
		t.Fatal(err)
	}
	defer unix.Unmount(dir, unix.MNT_DETACH)
	if !mountedAs(dir, "tmpfs") {
		t.Fatalf("%s is not a tmpfs after Do", dir)
	}
	// Mounting the same type again over it is fine (stacked tmpfs or EBUSY).
	if err := m.Do(); err != nil {
		t.Fatalf("second Do: %v", err)
	}
	unix.Unmount(dir, unix.MNT_DETACH)
}

func TestMountErrorNamesTarget(t *testing.T) {
	dir := t.TempDir()
	err := Mount{Source: "x", Target: filepath.Join(dir, "t"), FSType: "no-such-fs"}.Do()
	if err == nil {
		t.Fatal("mount of an unknown file system type succeeded")
	}
	if want := filepath.Join(dir, "t"); !strings.Contains(err.Error(), want) {
		t.Fatalf("error %q does not name %s", err, want)
	}
	if _, statErr := os.Stat(filepath.Join(dir, "t")); statErr != nil {
		t.Fatalf("mount point not created: %v", statErr)
	}
}

func TestBaseMountsOrder(t *testing.T) {
	ms := BaseMounts()
	seen := map[string]bool{}
	for _, m := range ms {
		// Each mount's parent must already be mounted (or be /).
		if parent := filepath.Dir(m.Target); parent != "/" && !seen[parent] {
			t.Errorf("%s is mounted before its parent %s", m.Target, parent)
		}
		seen[m.Target] = true
	}
	for _, want := range []string{"/proc", "/sys", "/dev", "/run"} {
		if !seen[want] {
			t.Errorf("BaseMounts lacks %s", want)
		}
	}
}
