package crashdisk

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/qvm-project/qvm/internal/testenv"
)

// liveOpts mounts the logged file system so that only fsync makes data
// durable: no replace-by-rename heuristic, no periodic journal commit
// within a test's run.
const liveOpts = "noauto_da_alloc,commit=3600"

// TestReplay: a file written and fsynced (file and directory) before a
// mark is there at every flush from the mark on; one written without
// fsync before a mark is missing at some flush after its mark; and the
// file system is consistent (fsck finds nothing to repair) at every flush.
func TestReplay(t *testing.T) {
	testenv.RequireRoot(t)
	testenv.LookPath(t, "mkfs.ext4")
	testenv.LookPath(t, "e2fsck")
	ctx := context.Background()
	dir := t.TempDir()
	base := filepath.Join(dir, "fresh.img")
	if err := Ext4(ctx, base, 64<<20); err != nil {
		t.Fatal(err)
	}
	d, err := New(ctx, t.TempDir(), base)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	mnt := t.TempDir()
	if err := unixMount(d.Device, mnt, liveOpts); err != nil {
		t.Fatal(err)
	}
	synced := bytes.Repeat([]byte("synced "), 10000)
	f, err := os.Create(filepath.Join(mnt, "synced"))
	if err != nil {
		t.Fatal(err)
	}
	f.Write(synced)
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	f.Close()
	dirf, _ := os.Open(mnt)
	if err := dirf.Sync(); err != nil {
		t.Fatal(err)
	}
	dirf.Close()
	if err := d.Mark("synced"); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(mnt, "unsynced"), []byte("lost?"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := d.Mark("unsynced"); err != nil {
		t.Fatal(err)
	}
	if err := unixUnmount(mnt); err != nil {
		t.Fatal(err)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	st := d.Stats()
	t.Logf("log: %+v", st)
	if st.Flushes == 0 || st.Marks != 2 {
		t.Fatalf("log: %+v", st)
	}
	lost := 0
	check := t.TempDir()
	err = d.Replay(ctx, func(p Point, image string) error {
		unmount, err := MountImage(ctx, image, check, "ext4", "")
		if err != nil {
			t.Errorf("%v: %v", p, err)
			return nil
		}
		got, serr := os.ReadFile(filepath.Join(check, "synced"))
		_, uerr := os.Stat(filepath.Join(check, "unsynced"))
		if err := unmount(); err != nil {
			t.Fatal(err)
		}
		if out, err := exec.Command("e2fsck", "-fn", image).CombinedOutput(); err != nil {
			t.Errorf("%v: e2fsck: %v\n%s", p, err, out)
		}
		if len(p.Marks) >= 1 && (serr != nil || !bytes.Equal(got, synced)) {
			t.Errorf("%v: the fsynced file: %d bytes, %v", p, len(got), serr)
		}
		if len(p.Marks) == 2 && uerr != nil {
			lost++
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if lost == 0 {
		t.Error("the file written without fsync was durable at every flush after it: the log misses crash states")
	}
}

func unixMount(dev, dir, opts string) error { return unix.Mount(dev, dir, "ext4", 0, opts) }

func unixUnmount(dir string) error { return unix.Unmount(dir, 0) }
