package store

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/qvm-project/qvm/vm"
	"github.com/qvm-project/qvm/volume"
)

func TestUpdateCommitsOrLeavesNothing(t *testing.T) {
	st, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	create := func(tx *Tx, name string) error {
		d, err := tx.Sys.Create(vm.CreateSpec{Name: name, Class: vm.StandaloneVM, Label: "red", UUID: fmt.Sprintf("00000000-0000-4000-8000-%012x", len(tx.Sys.VMs))})
		if err != nil {
			return err
		}
		_, err = tx.NewVMDir(d.Name, d.Class)
		return err
	}
	if err := st.Update(ctx, vm.Host{}, func(tx *Tx) error { return create(tx, "a") }); err != nil {
		t.Fatal(err)
	}
	boom := errors.New("boom")
	if err := st.Update(ctx, vm.Host{}, func(tx *Tx) error {
		if err := create(tx, "b"); err != nil {
			return err
		}
		return boom
	}); !errors.Is(err, boom) {
		t.Fatalf("err = %v", err)
	}
	sys, err := st.Load()
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := sys.Lookup("a"); !ok {
		t.Error("committed VM a missing")
	}
	if _, ok := sys.Lookup("b"); ok {
		t.Error("aborted VM b stored")
	}
	if _, err := os.Stat(st.VMDir("b", vm.StandaloneVM)); !os.IsNotExist(err) {
		t.Errorf("aborted VM b's directory remains: %v", err)
	}
	if _, err := os.Stat(filepath.Join(st.VMDir("a", vm.StandaloneVM), pendingMarker)); !os.IsNotExist(err) {
		t.Errorf("committed VM a still pending: %v", err)
	}
}

func TestLoadRejectsCorruptStore(t *testing.T) {
	st, _ := Open(t.TempDir())
	for content, want := range map[string]string{
		`{"version":1,"vms":[{"name":"a","qid":1},{"name":"a","qid":2}]}`: "two VMs named",
		`{"version":1,"vms":[{"name":"a","qid":1},{"name":"b","qid":1}]}`: "same qid",
		`{"version":7,"vms":[]}`: "format version 7",
		`{"version":1,"vms":[`:   "corrupt",
	} {
		os.WriteFile(st.Path(), []byte(content), 0o644)
		if _, err := st.Load(); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("load %s: %v, want %q", content, err, want)
		}
	}
}

func TestLockWaitEndsWithContext(t *testing.T) {
	st, _ := Open(t.TempDir())
	held := make(chan struct{})
	release := make(chan struct{})
	go st.Update(context.Background(), vm.Host{}, func(tx *Tx) error {
		close(held)
		<-release
		return nil
	})
	<-held
	ctx, cancel := context.WithCancel(context.Background())
	go func() { time.Sleep(50 * time.Millisecond); cancel() }()
	err := st.Update(ctx, vm.Host{}, func(tx *Tx) error { t.Error("ran without the lock"); return nil })
	if !errors.Is(err, context.Canceled) || !strings.Contains(err.Error(), "store lock") {
		t.Errorf("err = %v", err)
	}
	close(release)
	// The lock is usable again afterwards.
	if err := st.Update(context.Background(), vm.Host{}, func(tx *Tx) error { return nil }); err != nil {
		t.Fatal(err)
	}
}

// TestLoadValidates: a document naming a VM "../../victim" (or with any
// value a create refuses) does not load, so nothing acts on it; the error
// says how to recover from the previous document.
func TestLoadValidates(t *testing.T) {
	dir := t.TempDir()
	st, err := Open(filepath.Join(dir, "state"))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	err = st.Update(ctx, vm.Host{}, func(tx *Tx) error {
		_, err := tx.Sys.Create(vm.CreateSpec{Name: "good", Class: vm.StandaloneVM, Label: "red", UUID: "00000000-0000-4000-8000-000000000001"})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	// A second change: the first document becomes the previous one.
	if err := st.Update(ctx, vm.Host{}, func(tx *Tx) error { return tx.Sys.SetProp("good", "memory", "500") }); err != nil {
		t.Fatal(err)
	}
	prev, err := os.ReadFile(st.PrevPath())
	if err != nil || !strings.Contains(string(prev), `"good"`) || strings.Contains(string(prev), `"500"`) {
		t.Fatalf("previous document: %v\n%s", err, prev)
	}
	good, _ := os.ReadFile(st.Path())
	for _, bad := range []struct{ from, to, want string }{
		{`"name": "good"`, `"name": "../../victim"`, "invalid VM name"},
		{`"uuid": "00000000-0000-4000-8000-000000000001"`, `"uuid": "x"`, "not a lower-case UUID"},
		{`"label": "red"`, `"label": "pink"`, "unknown label"},
		{`"memory": "500"`, `"memory": "500", "qid": "3"`, "read-only"},
		{`"memory": "500"`, `"memory": "5\u001b[2J"`, "control"},
		{`"memory": "500"`, `"kernel": "../../etc"`, "not a kernel name"},
		{`"class": "StandaloneVM"`, `"class": "AdminVM"`, "AdminVM"},
	} {
		doc := strings.Replace(string(good), bad.from, bad.to, 1)
		if doc == string(good) {
			t.Fatalf("fixture: %q not in the document:\n%s", bad.from, good)
		}
		if err := os.WriteFile(st.Path(), []byte(doc), 0o644); err != nil {
			t.Fatal(err)
		}
		_, err := st.Load()
		if err == nil || !strings.Contains(err.Error(), bad.want) || !strings.Contains(err.Error(), "mv "+st.PrevPath()) {
			t.Errorf("%s: load error %v, want one saying %q and how to restore the previous store", bad.to, err, bad.want)
		}
		// A writer refuses too: nothing is changed on a damaged store.
		if err := st.Update(ctx, vm.Host{}, func(tx *Tx) error { return nil }); err == nil {
			t.Errorf("%s: a change was made on a damaged store", bad.to)
		}
	}
}

// TestCreateNeverWipesADirectory: a directory under a new VM's name that
// no change of qvm's left is refused, not wiped.
func TestCreateNeverWipesADirectory(t *testing.T) {
	st, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	dir := st.VMDir("work", vm.StandaloneVM)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	keep := filepath.Join(dir, "private.img")
	if err := os.WriteFile(keep, []byte("user data"), 0o600); err != nil {
		t.Fatal(err)
	}
	err = st.Update(context.Background(), vm.Host{}, func(tx *Tx) error {
		d, err := tx.Sys.Create(vm.CreateSpec{Name: "work", Class: vm.StandaloneVM, Label: "red", UUID: "00000000-0000-4000-8000-000000000001"})
		if err != nil {
			return err
		}
		_, err = tx.NewVMDir(d.Name, d.Class)
		return err
	})
	if err == nil || !strings.Contains(err.Error(), "already exists and belongs to no VM") {
		t.Errorf("create over a foreign directory: %v", err)
	}
	if b, err := os.ReadFile(keep); err != nil || string(b) != "user data" {
		t.Errorf("the directory's file: %q, %v", b, err)
	}
}

// TestRootMoveIsCrashSafe: the user's image is untouched until the VM
// exists; a change that does not commit leaves it as it was, and a writer
// killed after the commit (the marker still recording the move) has the
// move finished by the next writer's sweep.
func TestRootMoveIsCrashSafe(t *testing.T) {
	dir := t.TempDir()
	st, err := Open(filepath.Join(dir, "state"))
	if err != nil {
		t.Fatal(err)
	}
	img := filepath.Join(dir, "win10-root.img")
	if err := os.WriteFile(img, make([]byte, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	spec := vm.CreateSpec{Name: "win10", Class: vm.StandaloneVM, Label: "red", UUID: "00000000-0000-4000-8000-000000000001"}
	create := func(fail bool) error {
		im, err := st.OpenRootImport("--root-move-from", img, true)
		if err != nil {
			return err
		}
		defer im.Close()
		return st.Update(ctx, vm.Host{}, func(tx *Tx) error {
			if _, err := tx.CreateVM(ctx, spec, im); err != nil {
				return err
			}
			if fail {
				return errors.New("the change fails after the images were made")
			}
			return nil
		})
	}
	if err := create(true); err == nil {
		t.Fatal("the failing change committed")
	}
	if fi, err := os.Stat(img); err != nil || fi.Mode().Perm() != 0o644 || fi.Size() != 1<<20 {
		t.Fatalf("after an uncommitted move the user's image is %v, %v", fi, err)
	}
	if _, err := os.Stat(st.VMDir("win10", vm.StandaloneVM)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the uncommitted VM's directory is left: %v", err)
	}
	if err := create(false); err != nil {
		t.Fatal(err)
	}
	root := volume.ImagePath(st.VMDir("win10", vm.StandaloneVM), volume.Root)
	if _, err := os.Stat(img); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("after the move the user's name is still there: %v", err)
	}
	if fi, err := os.Stat(root); err != nil || fi.Mode().Perm() != 0o600 || fi.Size() != 1<<20 {
		t.Errorf("the VM's root: %v, %v", fi, err)
	}

	// A writer killed after its commit: the marker still records the move.
	if err := os.Link(root, img); err != nil {
		t.Fatal(err)
	}
	var sti unix.Stat_t
	unix.Stat(img, &sti)
	if err := writeMarker(filepath.Dir(root), marker{Image: "root.img", MovedFrom: volume.MovedFrom{Path: img, Dev: sti.Dev, Ino: sti.Ino}}); err != nil {
		t.Fatal(err)
	}
	if err := st.Update(ctx, vm.Host{}, func(tx *Tx) error { return nil }); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(img); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the sweep did not finish the move: %v", err)
	}
	if _, err := os.Stat(filepath.Join(filepath.Dir(root), pendingMarker)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("marker left after the sweep: %v", err)
	}
}
